"""BLiMP minimal pairs for lm-eval, read from local JSONL files.

One loader serves the three families of tasks:
  blimp_<UID>               $BABYMERGE_DATA/blimp/<UID>.jsonl                 official BLiMP (67 paradigms)
  blimp_filtered_<UID>      $BABYMERGE_DATA/blimp_filtered/<UID>.jsonl        the BabyLM pipeline's filtered subset
  blimp_supplement_<name>   $BABYMERGE_DATA/supplement_filtered/<name>.jsonl  the BabyLM supplement
($BABYMERGE_DATA defaults to ./evaluation_data.) Every file has one JSON object per line
with ``sentence_good`` and ``sentence_bad``.

Scoring is BLiMP's: full-sentence log-probabilities, no normalisation; a pair is right (``acc``)
when log P(good) > log P(bad), so a tie counts as wrong. ``acc_pipeline`` is the BabyLM
pipelines' argmax (a tie picks the good sentence, right) and ``ties`` how often they differ: the
metrics of every choice task (``babymerge.babylm.scoring``).
"""

from __future__ import annotations

import datasets

from babymerge.babylm.scoring import choice_metrics
from babymerge.data import DATA_ENV, evaluation_data_dir, quiet_custom_dataset_warning, read_jsonl, test_split
from babymerge.errors import BabyMergeError

quiet_custom_dataset_warning()

WHERE = {
    "blimp": "the official BLiMP release (github.com/alexwarstadt/blimp, folder data/: one <UID>.jsonl per paradigm) "
    "or the hub's nyu-mll/blimp",
    "blimp_filtered": "the BabyLM evaluation data (evaluation_data/blimp_filtered/ of the BabyLM evaluation pipeline)",
    "supplement_filtered": "the BabyLM evaluation data (evaluation_data/supplement_filtered/ of the BabyLM evaluation pipeline)",
}


def read_pairs(path) -> list[dict]:
    """The file's minimal pairs; a malformed line is an error naming the file and line."""
    rows = []
    for line_no, row in read_jsonl(path):
        if not isinstance(row, dict) or not row.get("sentence_good") or not row.get("sentence_bad"):
            raise BabyMergeError(f"{path}, line {line_no}: needs non-empty 'sentence_good' and 'sentence_bad'")
        rows.append(row)
    return rows


def load_pairs(folder: str = "blimp", name: str = "", **kwargs) -> datasets.DatasetDict:
    """``custom_dataset`` of every BLiMP-style task: ``$BABYMERGE_DATA/<folder>/<name>.jsonl``."""
    directory = evaluation_data_dir() / folder
    path = directory / f"{name}.jsonl"
    if not path.is_file():
        what = f"{directory} does not exist" if not directory.is_dir() else f"{path} is missing"
        raise BabyMergeError(
            f"BLiMP data not found: {what}. Put the {name}.jsonl files in {directory} (or set {DATA_ENV} "
            f"to the folder that holds {folder}/). Get them from {WHERE.get(folder, 'the BabyLM evaluation data')}."
        )
    return test_split(read_pairs(path))


def process_results(doc, results) -> dict[str, float]:
    """``acc`` (log P(good) > log P(bad)), ``acc_pipeline``, ``ties``: ``babymerge.babylm.scoring.choice_metrics``."""
    return choice_metrics(result[0] for result in results)
