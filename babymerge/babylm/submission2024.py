"""The BabyLM 2024 leaderboard prediction file from lm-eval ``--log_samples`` output.

    babymerge submit [--format 2024] --results results/ --model my-merge-a0.3 --out submission/ [--vision] [--allow-partial]

Writes ``{model}_textonly_predictions.json.gz`` (``_withvision_`` with ``--vision``) in the
BabyLM 2024 pipeline's format (its ``collate_preds.py``):
``{task: {subtask: {"predictions": [{"id": "<subtask>_<i>", "pred": <chosen continuation>}]}}}``,
where ``i`` is the example's line in the subtask's data file and ``pred`` the continuation
with the highest log-probability (the first on a tie, as the pipeline's argmax does:
``scoring.choose``), plus
``{model}_summary.json`` with the scores lm-eval reported.

Like the pipeline, it validates before writing: every required task and subtask is there
(``--allow-partial`` lists what is missing instead), each subtask has one prediction per
line of its data file (which must be there), no id is duplicated, and ``pred`` has the
right type. It also refuses results produced by another model than the one named (or whose
``results_*.json`` is missing, so that cannot be checked), a results folder with no samples,
a malformed samples line (named by file and line), and a ``model`` that is a path rather
than a name (the files are written in ``out`` and nowhere else).
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

from ..data import evaluation_data_dir
from ..errors import BabyMergeError
from ..publish import output_errors, write_files_atomic
from .scoring import choose
from .tasks import EWOK_DOMAINS, GLUE_2024, SUPPLEMENT

# lm-eval task name -> (submission task, subtask, data file relative to the evaluation data dir)
_TASK_PATTERNS = [
    (re.compile(r"blimp_filtered_(?P<sub>.+)"), "blimp", "blimp_filtered/{sub}.jsonl"),
    (re.compile(r"blimp_supplement_(?P<sub>.+)"), "blimp_supplement", "supplement_filtered/{sub}.jsonl"),
    (re.compile(r"ewok_(?P<sub>.+)_filtered"), "ewok", "ewok_filtered/{sub}.jsonl"),
    (re.compile(r"(?P<sub>winoground)_filtered"), "winoground", "winoground_filtered/winoground.jsonl"),
]
_SAMPLES = re.compile(r"samples_(?P<task>.+)_(?P<stamp>\d{4}-\d{2}-\d{2}T[\d\-.]+)\.jsonl$")


def required_subtasks(data_dir: Path, vision: bool) -> dict[str, list[str]]:
    blimp_dir = data_dir / "blimp_filtered"
    if not blimp_dir.is_dir():
        raise BabyMergeError(
            f"{blimp_dir} not found: the submission is checked against the BabyLM evaluation data (set BABYMERGE_DATA)"
        )
    # GLUE (fine-tuning) and EWoK, devbench, VQA predictions are produced by tools outside this
    # project; without them a submission is partial.
    required = {
        "glue": list(GLUE_2024),
        "blimp": sorted(p.stem for p in blimp_dir.glob("*.jsonl")),
        "blimp_supplement": list(SUPPLEMENT),
        "ewok": list(EWOK_DOMAINS),
    }
    if vision:
        required |= {
            "vqa": ["vqa"],
            "winoground": ["winoground"],
            "devbench": ["lex-viz_vocab", "gram-trog", "sem-things"],
        }
    return required


def find_samples(results: Path, model: str) -> dict[str, Path]:
    """lm-eval task -> its newest samples file; refuses results of another model."""
    found: dict[str, tuple[str, Path]] = {}
    for path in results.rglob("samples_*.jsonl"):
        m = _SAMPLES.search(path.name)
        if not m:
            continue
        _check_model(path, model)
        task = m["task"]
        if task not in found or m["stamp"] > found[task][0]:
            found[task] = (m["stamp"], path)
    if not found:
        raise BabyMergeError(
            f"no lm-eval samples (samples_*.jsonl) under {str(results)!r}: run lm_eval with --log_samples --output_path {results}"
        )
    return {task: path for task, (_, path) in found.items()}


def _check_model(samples: Path, model: str) -> None:
    """The results_*.json lm-eval writes beside a samples file names the checkpoint; it must be
    ``model``. Without it we cannot tell whose predictions these are: refused."""
    stamp = _SAMPLES.search(samples.name)["stamp"]
    results = samples.with_name(f"results_{stamp}.json")
    if not results.is_file():
        raise BabyMergeError(
            f"{samples} has no {results.name} beside it, so which model produced it cannot be checked; "
            "pass the whole lm_eval --output_path folder as --results"
        )
    try:
        config = json.loads(results.read_text()).get("config", {})
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        raise BabyMergeError(
            f"{results} is not an lm-eval results file ({err}); rerun lm_eval with --output_path"
        ) from None
    args = config.get("model_args") or ""
    if isinstance(args, str):
        args = dict(kv.split("=", 1) for kv in args.split(",") if "=" in kv)
    pretrained = str(args.get("pretrained", ""))
    name = config.get("model_name") or samples.parent.name
    candidates = {Path(pretrained).name, pretrained, name, name.split("__")[-1]}
    if model not in candidates:
        raise BabyMergeError(
            f"{samples} holds results of {pretrained or name!r}, not of model {model!r}; pass the right --model or results folder"
        )


def loglikelihoods(sample: dict) -> list[float]:
    """One log-likelihood per candidate, in the task's order (lm-eval's ``resps``: ``[[ll, is_greedy]]`` each)."""
    lls = [float(resp[0][0]) for resp in sample["resps"]]
    if not lls:
        raise ValueError("'resps' is empty")
    return lls


def read_samples(path: Path, parse: Callable[[dict], object] = lambda sample: sample) -> list:
    """``parse`` of each sample of an lm-eval ``--log_samples`` file, in file order: the one place that
    reads samples files. Each line must be a JSON object with an integer ``doc_id``, a ``doc`` object and
    ``resps`` (see ``loglikelihoods``); a line that is not, or that ``parse`` finds a field missing in, is
    named by file and line."""
    out = []
    for line_no, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            sample = json.loads(line.decode())
            int(sample["doc_id"])
            if not isinstance(sample["doc"], dict):
                raise TypeError("'doc' is not an object")
            loglikelihoods(sample)
            out.append(parse(sample))
        except UnicodeDecodeError:
            raise BabyMergeError(
                f"{path} line {line_no} is not UTF-8 text, so not lm-eval output; rerun lm_eval with --log_samples"
            ) from None
        except json.JSONDecodeError as err:
            raise BabyMergeError(
                f"{path} line {line_no} is not JSON ({err.msg}; cut off?); rerun lm_eval with --log_samples"
            ) from None
        except KeyError as err:
            raise BabyMergeError(
                f"{path} line {line_no} has no {err} field "
                "(lm-eval's loglikelihood samples have doc_id, doc, resps, arguments); "
                "rerun lm_eval with --log_samples"
            ) from None
        except (IndexError, TypeError, ValueError) as err:
            raise BabyMergeError(
                f"{path} line {line_no} is not an lm-eval loglikelihood sample ({err}); "
                "rerun lm_eval with --log_samples"
            ) from None
    return out


def _prediction(sample: dict) -> tuple[int, str]:
    """(doc_id, the chosen continuation) of one sample."""
    args = sample["arguments"]
    best = choose(loglikelihoods(sample))
    choice = args[f"gen_args_{best}"]["arg_1"] if isinstance(args, dict) else args[best][1]
    return int(sample["doc_id"]), choice


def predictions(samples: Path) -> list[tuple[int, str]]:
    """(doc_id, chosen continuation) per document, in doc_id order."""
    return sorted(read_samples(samples, _prediction))


def build(results: Path, model: str, data_dir: Path, vision: bool, allow_partial: bool) -> tuple[dict, list[str], dict]:
    """The prediction dict, what is missing, and the lm-eval scores per task."""
    required = required_subtasks(data_dir, vision)
    samples = find_samples(results, model)
    preds: dict[str, dict] = {}
    for task, path in sorted(samples.items()):
        for pattern, name, data_file in _TASK_PATTERNS:
            m = pattern.fullmatch(task)
            if m:
                sub = m["sub"]
                entries = predictions(path)
                ids = [doc_id for doc_id, _ in entries]
                if len(set(ids)) != len(ids):
                    raise BabyMergeError(f"{path}: duplicated doc_id, so duplicated prediction ids in {name}/{sub}")
                expected = data_dir / data_file.format(sub=sub)
                if not expected.is_file():
                    raise BabyMergeError(
                        f"{name}/{sub}: no data file {expected} to check {path.name}'s predictions against; "
                        "point --data (or BABYMERGE_DATA) at the evaluation data the results were produced from"
                    )
                n_lines = sum(1 for line in expected.read_bytes().splitlines() if line.strip())  # counted, not decoded
                if len(entries) != n_lines or ids != list(range(n_lines)):
                    raise BabyMergeError(
                        f"{name}/{sub}: {len(entries)} predictions for {n_lines} lines of {expected} "
                        "(was lm_eval run with --limit?); one prediction per example is required"
                    )
                preds.setdefault(name, {})[sub] = {"predictions": [{"id": f"{sub}_{i}", "pred": p} for i, p in entries]}
                break
    missing = [f"{task}/{sub}" for task, subs in required.items() for sub in subs if sub not in preds.get(task, {})]
    if missing and not allow_partial:
        raise BabyMergeError(
            f"the submission lacks {len(missing)} required subtasks, e.g. {missing[:6]}; produce them, or pass --allow-partial"
        )
    validate(preds)
    scores = {}  # from the results files of the samples used (checked to be this model's)
    for path in sorted({p.with_name(f"results_{_SAMPLES.search(p.name)['stamp']}.json") for p in samples.values()}):
        for task, metrics in json.loads(path.read_text()).get("results", {}).items():
            scores[task] = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    return preds, missing, scores


def validate(preds: dict) -> None:
    """Types and unique ids, as the pipeline's verify_dict checks them."""
    for task, subtasks in preds.items():
        for sub, entry in subtasks.items():
            ids = [p["id"] for p in entry["predictions"]]
            if len(set(ids)) != len(ids):
                raise BabyMergeError(f"{task}/{sub}: duplicated prediction ids")
            wanted = int if task == "glue" else str
            bad = [p for p in entry["predictions"] if not isinstance(p["pred"], wanted)]
            if bad:
                raise BabyMergeError(f"{task}/{sub}: predictions must be {wanted.__name__}s, e.g. {bad[0]}")


def submit(
    results, model: str, out, *, data_dir=None, vision: bool = False, allow_partial: bool = False
) -> dict[str, Path]:
    """Validate, then write the gzip prediction file and the JSON summary (atomically, both or neither)."""
    if not model or model in (".", "..") or "/" in model or os.sep in model:
        raise BabyMergeError(
            f"--model {model!r} is a path; give the model's name, which names the files written in --out "
            f"(e.g. --model {Path(model).name or 'merged-a0.3'!r}, the evaluated checkpoint's folder name)"
        )
    results, out = Path(results), Path(out)
    data_dir = Path(data_dir) if data_dir else evaluation_data_dir()
    preds, missing, scores = build(results, model, data_dir, vision, allow_partial)
    kind = "withvision" if vision else "textonly"
    paths = {"predictions": out / f"{model}_{kind}_predictions.json.gz", "summary": out / f"{model}_summary.json"}
    summary = {
        "model": model,
        "kind": kind,
        "missing": missing,
        "subtasks": {t: sorted(s) for t, s in preds.items()},
        "scores": scores,
    }
    with output_errors(out):
        write_files_atomic({
            paths["predictions"]: gzip.compress(json.dumps(preds).encode()),
            paths["summary"]: json.dumps(summary, indent=2) + "\n",
        })  # fmt: skip
    return paths
