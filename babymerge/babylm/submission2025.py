"""The BabyLM 2025 submission file from lm-eval ``--log_samples`` output.

    babymerge submit --format 2025 --results results/main --fast-results results/fast --model NAME --out submission/

writes ``submission/all_full_preds_and_fast_scores_<backend>.json``, the file the 2025
pipeline's ``collate_preds.py`` writes and the leaderboard takes:

* ``results``: the lm-eval output folder(s) of the **final model** run on the full tasks
  (``babylm2025_full_zero_shot``, ``winoground_filtered``): per pipeline task and subtask,
  ``{"predictions": [{"id": "<subtask>_<n>", "pred": <chosen candidate>}, ...]}`` in data
  order (wug: plus ``prob``; reading: ``{"id": <row>, "pred": surprisal, "prev_pred": ...}``);
* ``fast_results``: one folder per checkpoint, named as the pipeline names them (``chck_1M``
  ... ``chck_1000M``), each the lm-eval output of that checkpoint on ``babylm2025_fast``:
  ``"fast_eval_results": {task: [{subtask: score}, ... one dict per checkpoint in the
  pipeline's order]}``, the scores computed from the predictions as ``collate_preds`` computes
  them (accuracy by comparing the chosen candidate with the right one, so a tie counts as
  right; Spearman's rho for wug; the reading ΔR², ``babylm.reading``);
* ``pipeline_results`` (optional): the pipeline's own ``results/<model>/main`` folder, for the
  parts this project does not produce: GLUE fine-tuning (``finetune/<task>/predictions.json``),
  AoA (``zero_shot/<backend>/AoA_word/surprisal.json``) and DevBench
  (``zero_shot/devbench/*.npy``), copied as ``collate_preds`` copies them;
* ``devbench_results`` (optional): the ``--out`` folder of ``babymerge devbench``, the same
  ``zero_shot/devbench/*.npy`` layout (``babylm.devbench``); it takes precedence over
  ``pipeline_results`` for DevBench.
* ``aoa`` (optional): ``babymerge aoa``'s output folder (or any ``surprisal.json``), the AoA part,
  in place of the pipeline's.
* ``glue_results`` (optional): a ``results/<model>/main`` folder of GLUE fine-tuning in the
  pipeline's layout (``python -m train.finetune --out results`` writes one): the GLUE part, in
  place of the pipeline's.

Before writing, every subtask's count is checked against the counts ``collate_preds`` enforces
(``babylm.sizes``: ``FULL_SIZES``, ``FAST_SIZES``; ``sizes=`` replaces them for small fixtures).
A missing task, subtask or checkpoint is refused unless ``allow_partial``, which writes what
there is and returns the list of what is missing; a missing checkpoint's place in a ``fast_eval_results``
list holds ``{}`` so that the others keep their positions.

Which lm-eval task is which pipeline task and subtask: ``babymerge.babylm.tasks.TASKS`` (plus
``winoground_filtered`` -> winoground). The pipeline's prediction for an item is built from the
sample's ``doc`` (its ``preds``: what the pipeline reports for each candidate) and ``resps``
(one log-likelihood per candidate, the right one first), with the pipeline's argmax.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import BabyMergeError
from ..publish import output_errors, write_file_atomic
from .checkpoints import fast_revisions
from .reading import READING_COLUMNS, reading_scores
from .scoring import choose, pipeline_prediction
from .sizes import AOA_SIZE, DEVBENCH_SHAPES, FAST_SIZES, FAST_TASKS, FULL_SIZES, FULL_TEXT_TASKS, TRACKS, VISION_TASKS
from .submission2024 import find_samples, loglikelihoods, read_samples
from .tasks import GLUE_2025, TASKS


# -- reading lm-eval samples ---------------------------------------------------------------------------------------
def _pipeline_task(lm_eval_task: str) -> tuple[str, str, str] | None:
    """lm-eval task name -> (pipeline task, subtask, full|fast), or None for a task the file does not take."""
    if lm_eval_task == "winoground_filtered":
        return "winoground", "winoground", "full"
    entry = TASKS.get(lm_eval_task)
    return (entry.task, entry.subtask, entry.kind) if entry else None


def _read_samples(path: Path) -> list[dict]:
    samples = read_samples(path)
    ids = [int(s["doc_id"]) for s in samples]
    if sorted(ids) != list(range(len(ids))):
        raise BabyMergeError(
            f"{path}: doc_ids are not 0..{len(ids) - 1} (duplicated, or a --limit/--samples run?): "
            "one sample per item is needed"
        )
    return sorted(samples, key=lambda s: int(s["doc_id"]))


def collect(results: str | Path, model: str, kind: str) -> dict[str, dict[str, list[dict]]]:
    """{pipeline task: {subtask: samples in data order}} of one lm-eval output folder (``kind``: full|fast)."""
    found: dict[str, dict[str, list[dict]]] = {}
    for lm_eval_task, path in sorted(find_samples(Path(results), model).items()):
        key = _pipeline_task(lm_eval_task)
        if key is None or key[2] != kind:
            continue
        task, subtask, _ = key
        if subtask in found.get(task, {}):
            raise BabyMergeError(f"{results}: two lm-eval tasks give {task}/{subtask} ({kind})")
        found.setdefault(task, {})[subtask] = _read_samples(path)
    return found


def predictions(task: str, samples: list[dict]) -> list[dict]:
    """The pipeline's prediction entries of one subtask (without ids for the reading rows' own ones)."""
    if task == "reading":
        out = []
        for s in samples:
            lls = loglikelihoods(s)
            out.append(
                {"id": int(s["doc"]["index"]), "pred": -lls[0], "prev_pred": -lls[1] if len(lls) > 1 else math.nan}
            )
        return out
    if task == "winoground":  # the existing winoground_filtered task: the pipeline reports the caption itself
        return [{"pred": [s["doc"]["caption_0"], s["doc"]["caption_1"]][choose(loglikelihoods(s))]} for s in samples]
    return [pipeline_prediction(s["doc"], loglikelihoods(s)) for s in samples]


def full_entry(task: str, subtask: str, samples: list[dict]) -> dict:
    entries = predictions(task, samples)
    if task != "reading":
        entries = [{"id": f"{subtask}_{n}", **entry} for n, entry in enumerate(entries)]
    return {"predictions": entries}


def fast_score(task: str, samples: list[dict]) -> float | dict[str, float]:
    """A subtask's fast score from its predictions, as collate_preds computes it."""
    from scipy.stats import spearmanr

    entries = predictions(task, samples)
    if task in ("wug_adj", "wug_past"):
        return spearmanr([e["prob"] for e in entries], [s["doc"]["ratio"] for s in samples])[0]
    if task == "reading":
        import pandas as pd

        frame = pd.DataFrame(
            [
                {**{c: s["doc"][c] for c in READING_COLUMNS}, "pred": e["pred"], "prev_pred": e["prev_pred"]}
                for s, e in zip(samples, entries)
            ]
        ).apply(pd.to_numeric)
        return reading_scores(frame)
    correct = 0
    for sample, entry in zip(samples, entries):
        doc = sample["doc"]
        target = {"ewok": doc.get("Target1"), "entity_tracking": (doc.get("options") or [None])[0]}.get(
            task, doc.get("sentence_good")
        )
        pred = entry["pred"].strip() if isinstance(entry["pred"], str) else entry["pred"]
        correct += pred == (target.strip() if isinstance(target, str) else target)
    return correct / len(samples)


# -- checks ----------------------------------------------------------------------------------------------------------
def _expected(sizes: dict, task: str, subtask: str):
    size = sizes[task]
    return size.get(subtask.lower()) if isinstance(size, dict) else size


def _required(sizes: dict, task: str, kind: str) -> list[str]:
    """Subtasks a task must have, spelled as the pipeline keys them: those its sizes list, else every
    subtask of the task in ``babylm.tasks.TASKS`` (fast BLiMP, supplement and EWoK have one count for all)."""
    spelled = {e.subtask.lower(): e.subtask for e in TASKS.values() if e.task == task and e.kind == kind}
    if isinstance(sizes[task], dict):
        return [spelled.get(s, s) for s in sizes[task]]
    return list(spelled.values()) or [task]


def _check_counts(where: str, task: str, subtasks: dict[str, list], sizes: dict, kind: str = "full") -> None:
    for subtask, items in subtasks.items():
        expected = _expected(sizes, task, subtask)
        if expected is None:
            raise BabyMergeError(
                f"{where}: {task} has no subtask {subtask!r} in the pipeline "
                f"(expected one of {_required(sizes, task, kind)})"
            )
        if len(items) != expected:
            raise BabyMergeError(
                f"{where}: {task}/{subtask} has {len(items)} predictions, the pipeline requires {expected} "
                "(was lm_eval run with --limit, or on other data?)"
            )


# -- the parts the pipeline produces ----------------------------------------------------------------------------------
def pipeline_parts(folder: str | Path, backend: str, track: str, sizes: dict, missing: list[str]) -> dict:
    """GLUE, AoA and DevBench from the pipeline's ``results/<model>/main`` folder, checked as collate_preds
    checks them; what is not there is added to ``missing``."""

    folder, parts = Path(folder), {}
    if glue := glue_part(folder, sizes, missing):
        parts["glue"] = glue
    aoa = folder / "zero_shot" / backend / "AoA_word" / "surprisal.json"
    if aoa.is_file():
        parts["aoa"] = aoa_part(aoa, track, sizes)
    else:
        missing.append("aoa")
    if track == "multimodal":
        parts |= devbench_part(folder, sizes, missing)
    return parts


def glue_part(folder: str | Path, sizes: dict, missing: list[str]) -> dict:
    """The GLUE predictions of a ``results/<model>/main`` folder (the pipeline's fine-tuner or
    ``python -m train.finetune --out results``: ``finetune/<task>/predictions.json``), merged
    as collate_preds merges them after its count checks; a task not there is added to ``missing``."""
    glue = {}
    for task in GLUE_2025:
        path = Path(folder) / "finetune" / task / "predictions.json"
        if not path.is_file():
            missing.append(f"glue/{task}")
            continue
        loaded = json.loads(path.read_text())
        _check_counts(str(path), task, {k: v["predictions"] for k, v in loaded.items()}, sizes)
        glue |= loaded
    return glue


def devbench_part(folder: str | Path, sizes: dict, missing: list[str]) -> dict:
    """``{"devbench": ...}`` from ``folder/zero_shot/devbench/*.npy`` (the pipeline's
    ``results/<model>/main``, or ``babymerge devbench --out``), checked and copied as collate_preds
    does (``array.tolist()``); what is not there is added to ``missing``."""
    import numpy as np

    files = {
        "lex-viz_visual": ("lex-viz_vocab", "lex-viz_vocab.npy"),
        "trog": ("trog", "gram-trog.npy"),
        "things": ("things", "sem-things_pairwise_sims.npy"),
    }
    devbench = {}
    for key, (shape_key, name) in files.items():
        path = Path(folder) / "zero_shot" / "devbench" / name
        if not path.is_file():
            missing.append(f"devbench/{key}")
            continue
        array = np.load(path)
        shape = tuple(sizes.get("devbench", DEVBENCH_SHAPES)[shape_key])
        if array.shape != shape or not str(array.dtype).startswith("float"):
            raise BabyMergeError(
                f"{path}: DevBench {key} must be a float array of shape {shape}, got {array.dtype} {array.shape}"
            )
        devbench[key] = {"predictions": array.tolist()}
    return {"devbench": devbench} if devbench else {}


def aoa_part(path, track: str, sizes: dict) -> dict:
    """The ``aoa`` part: a ``surprisal.json`` (``babymerge aoa``'s or the pipeline's, or the folder holding
    it) as collate_preds embeds it, whole, after its check (every checkpoint of the track, ``AOA_SIZE`` rows each)."""
    from .aoa import read_surprisal

    return read_surprisal(path, track, sizes.get("aoa", AOA_SIZE))


# -- the file ---------------------------------------------------------------------------------------------------------
def build(
    results,
    model: str,
    fast_results=None,
    *,
    pipeline_results=None,
    devbench_results=None,
    glue_results=None,
    backend: str = "causal",
    track: str = "multimodal",
    sizes: dict | None = None,
    allow_partial: bool = False,
    aoa=None,
) -> tuple[dict, list[str]]:
    """The submission dict (collate_preds' layout) and the list of what is missing."""
    if track not in TRACKS:
        raise BabyMergeError(f"unknown track {track!r}; one of {TRACKS}")
    full_sizes, fast_sizes = (sizes or {}).get("full", FULL_SIZES), (sizes or {}).get("fast", FAST_SIZES)
    missing: list[str] = []
    out: dict = {}
    full = {}
    for folder in [results] if isinstance(results, (str, Path)) else list(results):
        for task, subtasks in collect(folder, model, "full").items():
            full.setdefault(task, {}).update(subtasks)
    wanted = FULL_TEXT_TASKS + (VISION_TASKS if track == "multimodal" else ())
    for task in wanted:
        subtasks = full.get(task, {})
        _check_counts(f"{results} (full)", task, subtasks, full_sizes)
        missing += [f"{task}/{s}" for s in _required(full_sizes, task, "full") if s not in subtasks]
        if subtasks:
            out[task] = {s: full_entry(task, s, samples) for s, samples in subtasks.items()}
    if pipeline_results is not None:
        out |= pipeline_parts(pipeline_results, backend, track, {**full_sizes, **(sizes or {})}, missing)
    else:
        missing += ["glue", "aoa"] + (["devbench"] if track == "multimodal" and devbench_results is None else [])
    if devbench_results is not None and track == "multimodal":  # babymerge devbench's output wins
        missing[:] = [m for m in missing if not m.startswith("devbench")]
        out |= devbench_part(devbench_results, sizes or {}, missing)
    if aoa is not None:  # babymerge aoa's output: it replaces any AoA file of the pipeline's folder
        out["aoa"] = aoa_part(aoa, track, {**full_sizes, **(sizes or {})})
        missing[:] = [m for m in missing if m != "aoa"]
    if glue_results is not None:  # train.finetune's results: they replace the pipeline folder's GLUE
        if not (Path(glue_results) / "finetune").is_dir():
            raise BabyMergeError(
                f"--glue-results {glue_results}: no finetune/ folder in it; give the results/<model>/main folder"
            )
        missing[:] = [m for m in missing if m != "glue" and not m.startswith("glue/")]
        out.pop("glue", None)
        if glue := glue_part(glue_results, {**full_sizes, **(sizes or {})}, missing):
            out["glue"] = glue
    if fast_results is not None:
        fast_root = Path(fast_results)
        fast_eval = {task: [] for task in FAST_TASKS}
        for checkpoint in fast_revisions(track):
            folder = fast_root / checkpoint
            found = collect(folder, checkpoint, "fast") if folder.is_dir() else {}
            if not folder.is_dir():
                missing.append(f"fast/{checkpoint}")
            for task in FAST_TASKS:
                subtasks = found.get(task, {})
                _check_counts(f"{folder} (fast)", task, subtasks, fast_sizes, "fast")
                if folder.is_dir():
                    missing += [
                        f"fast/{checkpoint}/{task}/{s}"
                        for s in _required(fast_sizes, task, "fast")
                        if s not in subtasks
                    ]
                if task == "reading":
                    fast_eval[task].append(fast_score(task, subtasks["reading"]) if "reading" in subtasks else {})
                else:
                    fast_eval[task].append({s: fast_score(task, samples) for s, samples in subtasks.items()})
        out["fast_eval_results"] = fast_eval
    else:
        missing.append("fast_eval_results")
    if missing and not allow_partial:
        raise BabyMergeError(
            f"the 2025 submission lacks {len(missing)} parts, e.g. {missing[:6]}; produce them, or pass --allow-partial"
        )
    return out, missing


def submit(results, model: str, out, fast_results=None, **kwargs) -> tuple[Path, list[str]]:
    """Check, then write ``out/all_full_preds_and_fast_scores_<backend>.json`` atomically."""
    submission, missing = build(results, model, fast_results, **kwargs)
    path = Path(out) / f"all_full_preds_and_fast_scores_{kwargs.get('backend', 'causal')}.json"
    with output_errors(out):
        write_file_atomic(path, json.dumps(submission))
    return path, missing
