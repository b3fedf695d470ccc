"""BabyLM 2025 reading (full and fast evaluation): does the model's surprisal explain reading times?

``reading/reading_data.csv`` (1,726 words of de Varda et al., 2023) gives, per word, its left
context ``item``, the ``word``, the previous word's context and word (``prev_item``,
``prev_word``; empty for a sentence's first word), eye-tracking measures (``RTfirstfix``,
``RTfirstpass``, ``RTgopast``, ``RTrightbound``), ``self_paced_reading_time`` and the
covariates ``Subtlex_log10``, ``length``, ``context_length``, ``prev_length``.

As the official pipeline (``evaluation_pipeline/reading/run.py``, backend ``causal``):
``pred`` = -ln P(word | item) (natural log; an empty ``item`` is the string ``"None"``, as
there), ``prev_pred`` the same for the previous word, NaN for a first word. The scores are
those ``collate_preds.py`` puts in the submission (``babymerge.babylm.reading.reading_scores``,
statsmodels OLS): ``rt`` = the mean over the four eye-tracking measures of
(R²(baseline + pred) - R²(baseline)) / (1 - R²(baseline)), baseline = the three covariates
and their pairwise interactions; ``spr`` = the same for self-paced reading, with the
previous word's length and surprisal added to the baseline (spill-over). Fractions, not the
x100 of the pipeline's printed report.

The log-probability of a word split into several tokens is the sum over its tokens given
``item`` and the tokens before it. The pipeline re-tokenises ``item + decode(token)`` before
each next token; that is the same sequence whenever tokenising the concatenation gives the
concatenated tokens (a word that starts with a space, and a byte-level or sentencepiece
tokenizer), which is the case the test checks against the pipeline itself.

Data: ``$BABYMERGE_DATA/full_eval/reading/reading_data.csv`` (``babylm2025_reading_reading``)
and ``$BABYMERGE_DATA/fast_eval/reading/reading_data.csv`` (``babylm2025_fast_reading_reading``),
the pipeline's layout; the two are the same file there.
"""

from __future__ import annotations

import datasets
import pandas as pd
from lm_eval.api.instance import Instance
from lm_eval.api.task import ConfigurableTask

from babymerge.babylm.reading import READING_COLUMNS, reading_scores
from babymerge.data import DATA_ENV, evaluation_data_dir, test_split
from babymerge.errors import BabyMergeError

TEXT_COLUMNS = ("item", "word", "prev_item", "prev_word")


def load_reading(subdir: str = "full_eval/reading", **kwargs) -> datasets.DatasetDict:
    """``custom_dataset``: one document per CSV row, in file order (``index`` = row number)."""
    path = evaluation_data_dir() / subdir / "reading_data.csv"
    if not path.is_file():
        raise BabyMergeError(f"{path} not found: put the pipeline's {subdir}/reading_data.csv there or set {DATA_ENV}")
    frame = pd.read_csv(path, dtype={"item": str})
    missing = [c for c in (*TEXT_COLUMNS, *READING_COLUMNS) if c not in frame.columns]
    if missing:
        raise BabyMergeError(f"{path}: missing columns {missing}; the pipeline's reading_data.csv has them all")
    frame["item"] = frame["item"].fillna("None")  # the pipeline scores an empty context as the text "None"
    rows = []
    for index, row in enumerate(frame.to_dict("records")):
        doc = {"index": index}
        for column in TEXT_COLUMNS:
            doc[column] = row[column] if isinstance(row[column], str) else None
        for column in READING_COLUMNS:
            doc[column] = None if pd.isna(row[column]) else float(row[column])
        rows.append(doc)
    return test_split(rows)


class ReadingTask(ConfigurableTask):
    """Per row: log P(word | item), and log P(prev_word | prev_item) when there is a previous word."""

    def __init__(self, config: dict):
        super().__init__(config={k: v for k, v in config.items() if k != "class"})  # lm-eval passes `class` too

    def construct_requests(self, doc, ctx, **kwargs):
        kwargs.pop("apply_chat_template", None)
        kwargs.pop("chat_template", None)
        pairs = [(doc["item"], doc["word"])]
        if doc["prev_item"] is not None:
            pairs.append((doc["prev_item"], doc["prev_word"]))
        return [
            Instance(request_type="loglikelihood", doc=doc, idx=i, arguments=pair, **kwargs)
            for i, pair in enumerate(pairs)
        ]


def process_results(doc, results) -> dict:
    """Both metrics get the row (covariates, ``pred``, ``prev_pred``); their aggregation fits."""
    row = {
        "index": doc["index"],
        "pred": -float(results[0][0]),
        "prev_pred": -float(results[1][0]) if len(results) > 1 else None,
    }
    row.update({column: doc[column] for column in READING_COLUMNS})
    return {"rt": row, "spr": row}


def _frame(items) -> pd.DataFrame:
    frame = pd.DataFrame(sorted(items, key=lambda row: row["index"]))
    return frame.apply(pd.to_numeric)  # None -> NaN


def rt(items) -> float:
    return reading_scores(_frame(items))["rt"]


def spr(items) -> float:
    return reading_scores(_frame(items))["spr"]
