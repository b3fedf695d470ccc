"""The BabyLM 2025 text zero-shot tasks, scored exactly as the official pipeline scores them.

Every task reads one file of the pipeline's ``evaluation_data/`` under ``$BABYMERGE_DATA``
(``full_eval/blimp_filtered/<UID>.jsonl``, ``fast_eval/ewok_fast/<domain>.jsonl``, ...: the
table is ``babymerge.babylm.tasks.TASKS``) and keeps the lines of its subtask, in file order,
which is the order of the pipeline's prediction ids (``<subtask>_<n>`` = doc_id n).

``decode`` turns a line into candidates as the pipeline's ``read_files.py`` does, the right
one first. Each candidate is one loglikelihood request ``(context, continuation, {SCORING_KEY:
"causal"})`` with ``context + continuation`` the pipeline's sentence and ``continuation`` its
completion; ``--model babymerge`` scores it as the pipeline's causal backend does
(``babymerge.babylm.scoring.pipeline_tokens``: the full sentence tokenised with the tokenizer's
special tokens, the completion's tokens found by character offsets). Other lm-eval models
cannot take the extra argument: the tasks need ``--model babymerge``.

Metrics (fractions, where the pipeline prints percentages):
  acc, acc_pipeline, ties   choice tasks, as every task counts them (``babymerge.babylm.scoring``):
                 a tie is wrong in acc, right in acc_pipeline (the pipeline's accuracy)
  spearman       wug tasks: Spearman's rho, over the task's items, between the model's probability of
                 the first form (softmax over the candidates' summed log-probabilities) and the human
                 ratio, as compute_results.rank_and_evaluate_wug and collate_preds compute it
Groups average their subtasks unweighted, as the pipeline averages subtask accuracies (entity
tracking: per split, then over splits).
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
from lm_eval.api.instance import Instance
from lm_eval.api.task import ConfigurableTask
from scipy.stats import spearmanr

from babymerge.babylm.scoring import SCORING_KEY, choice_metrics, first_probability
from babymerge.babylm.tasks import COMPS_FILES
from babymerge.data import DATA_ENV, evaluation_data_dir, quiet_custom_dataset_warning, test_split
from babymerge.errors import BabyMergeError

quiet_custom_dataset_warning()


# -- reading the pipeline's files ----------------------------------------------------------------
def _candidates(contexts: list[str], completions: list[str], preds: list[str] | None = None) -> dict:
    """``contexts[i] + completions[i]`` is candidate i's sentence; ``preds[i]`` what the pipeline
    reports when it chooses it (default: the completion)."""
    return {"contexts": contexts, "continuations": completions, "preds": preds or completions}


def decode(reader: str, row: dict, stem: str) -> tuple[str, dict]:
    """(subtask, candidates) of one data line, as the pipeline's ``read_files.decode_*`` read it."""
    if reader == "blimp":  # BLiMP and the supplement: the whole sentence is the completion
        uid = row["UID"] if "field" in row else stem
        return uid, _candidates(["", ""], [row["sentence_good"], row["sentence_bad"]])
    if reader == "ewok":  # both targets after Context1 (Context2 plays no part in causal scoring)
        return row["Domain"], _candidates([row["Context1"]] * 2, [" " + row["Target1"], " " + row["Target2"]])
    if reader in ("wug_adj", "wug_past"):  # tab-separated forms, the first one is the model ratio's
        sentences = row["sentences"].split("\t")
        return reader, _candidates([""] * len(sentences), sentences)
    if reader == "entity_tracking":  # the options after the prefix; the file names the split
        options = list(row["options"])
        return f"{stem}_{row['numops']}_ops", _candidates([row["input_prefix"]] * len(options), options)
    if reader == "comps":  # the property after each prefix; the pipeline reports the whole sentence
        prefixes, phrase = [row["prefix_acceptable"], row["prefix_unacceptable"]], row["property_phrase"]
        subtask = {file: subtask for subtask, file in COMPS_FILES.items()}  # any other file: the last, as there
        return subtask.get(stem, "wugs_dist_in_between"), _candidates(
            [p + " " for p in prefixes], [phrase, phrase], [p + " " + phrase for p in prefixes]
        )
    raise BabyMergeError(f"unknown BabyLM 2025 reader {reader!r}")


def read_items(path: Path, reader: str, subtask: str) -> list[dict]:
    """The lines of ``path`` that belong to ``subtask``, each with its candidates added to its fields."""
    items = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            uid, candidates = decode(reader, row, path.stem)
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
            raise BabyMergeError(
                f"{path}, line {line_no}: not a {reader} line of the BabyLM 2025 data ({err!r})"
            ) from None
        if uid == subtask:
            items.append({**row, **candidates})
    if not items:
        raise BabyMergeError(f"{path} has no items of subtask {subtask!r}")
    return items


def load(folder: str, file: str, subtask: str, reader: str, **kwargs) -> datasets.DatasetDict:
    """``custom_dataset`` of every task: ``$BABYMERGE_DATA/<folder>/<file>.jsonl``, the subtask's lines."""
    directory = evaluation_data_dir() / folder
    path = directory / f"{file}.jsonl"
    if not path.is_file():
        what = f"{directory} does not exist" if not directory.is_dir() else f"{path} is missing"
        raise BabyMergeError(
            f"BabyLM 2025 data not found: {what}. Put the BabyLM 2025 evaluation data (the evaluation_data/ "
            f"folder of the BabyLM evaluation pipeline 2025: full_eval/, fast_eval/) in {evaluation_data_dir()}, "
            f"or set {DATA_ENV} to the folder that holds full_eval/ and fast_eval/."
        )
    return test_split(read_items(path, reader, subtask))


# -- requests and scores --------------------------------------------------------------------------
class PipelineScoredTask(ConfigurableTask):
    """One loglikelihood request per candidate, marked to be scored the pipeline's way."""

    def __init__(self, config: dict):
        # lm-eval hands a `class:` task its whole YAML, `class` key included.
        super().__init__(config={k: v for k, v in config.items() if k != "class"})

    def construct_requests(self, doc, ctx, **kwargs):
        kwargs.pop("apply_chat_template", None)
        kwargs.pop("chat_template", None)
        return [
            Instance(
                request_type="loglikelihood",
                doc=doc,
                idx=i,
                arguments=(context, continuation, {SCORING_KEY: "causal"}),
                **kwargs,
            )
            for i, (context, continuation) in enumerate(zip(doc["contexts"], doc["continuations"]))
        ]


def doc_to_choice(doc) -> list[str]:
    return list(doc["preds"])


def process_results(doc, results) -> dict[str, float]:
    """``acc``, ``acc_pipeline``, ``ties`` (``babymerge.babylm.scoring.choice_metrics``)."""
    return choice_metrics(result[0] for result in results)


def process_wug(doc, results) -> dict[str, tuple[float, float]]:
    """(model probability of the first form, human ratio): Spearman's rho is taken over the task."""
    return {"spearman": (first_probability(result[0] for result in results), float(doc["ratio"]))}


def spearman(pairs) -> float:
    """Spearman's rho between model probabilities and human ratios (scipy.stats.spearmanr, as the pipeline)."""
    model, human = zip(*pairs)
    return float(spearmanr(model, human)[0])
