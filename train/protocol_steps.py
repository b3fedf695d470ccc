"""The steps of ``python -m train.protocol``: what each part runs for each alpha, one ``Step`` each.

``plan`` lists them in the protocol's order (the fast sweep, then per alpha: fast with samples, full,
GLUE, AoA, DevBench, the submission); each step is a public function or command ``main`` of the
project, run in this process, writing under ``OUT`` (``train.protocol`` runs them, records them and
resumes).
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

from babymerge.babylm import aoa as aoa_module
from babymerge.babylm import devbench as devbench_module
from babymerge.babylm.checkpoints import checkpoint_words, fast_revisions, word_checkpoint_name
from babymerge.errors import BabyMergeError
from babymerge.publish import atomic_output_dir, output_errors, write_file_atomic

PARTS = ("fast", "full", "glue", "aoa", "devbench")
LOG = "protocol.log"
MISSING = "submission_missing.txt"  # per alpha: what the submission lacks, as babymerge submit lists it
MARKER = ".babymerge_protocol"  # marks the lm-eval output folders this command wrote (replaced on a redo)
DEVBENCH_DIR = "full_eval/devbench"


@dataclass
class Step:
    name: str  # unique, stable: the key in protocol.json
    part: str
    alpha: float | None
    action: object  # () -> None


_TASK_MANAGER = []  # one task index per process: indexing is the slow part of a small evaluation


def _task_manager():
    """lm-eval's index of the project's tasks only (its own thousands are not needed, nor indexed)."""
    from lm_eval.tasks import TaskManager

    from babymerge.sweep import default_include_path

    if not _TASK_MANAGER:
        _TASK_MANAGER.append(TaskManager(include_path=default_include_path(), include_defaults=False))
    return _TASK_MANAGER[0]


def _lm_eval(model_args: str, tasks: str, out: Path) -> None:
    """``lm_eval --model babymerge --model_args ... --tasks ... --output_path out --log_samples``, through
    lm-eval's Python API as its command line does it (``simple_evaluate``, then ``EvaluationTracker``
    saves results and samples), into ``out`` published whole by rename (a kill leaves no half-written folder)."""
    import lm_eval
    from lm_eval.loggers import EvaluationTracker

    import babymerge.lm_eval_model  # noqa: F401  (registers --model babymerge)

    with atomic_output_dir(out, overwrite=True, owner_marker=MARKER) as tmp:
        tracker = EvaluationTracker(output_path=str(tmp))
        results = lm_eval.simple_evaluate(
            model="babymerge", model_args=model_args, tasks=tasks.split(","), batch_size="auto",
            log_samples=True, evaluation_tracker=tracker, task_manager=_task_manager(),
        )  # fmt: skip
        samples = results.pop("samples")
        tracker.save_results_aggregated(results=results, samples=samples)
        for task_name in results["configs"]:
            tracker.save_results_samples(task_name=task_name, samples=samples[task_name])
        (tmp / MARKER).write_text(json.dumps({"model_args": model_args, "tasks": tasks}) + "\n")


def _check_rc(rc: int, what: str) -> None:
    if rc:
        raise BabyMergeError(f"{what} failed (exit {rc}); see the end of {LOG} in --out")


def plan(args, out: Path, pairs, final, parts: list[str], alphas: list[float]) -> list[Step]:
    from babymerge.cli import main as babymerge_cli
    from train import finetune

    extra = f",{args.model_args}" if args.model_args else ""
    name = final[1].name  # the submission's model: the final multimodal checkpoint's folder
    steps = []
    if "fast" in parts:
        sweep = ["sweep", "--mm", args.mm, "--lang", args.lang, "--alphas", ",".join(map(str, alphas)),
                 "--checkpoints", "words", "--tasks", args.fast_tasks, "--out", str(out / "sweep"), "--no-progress"]  # fmt: skip
        if args.model_args:
            sweep += ["--model-args", args.model_args]
        steps.append(Step("fast sweep " + ",".join(map(str, alphas)), "fast", None,
                          lambda: _check_rc(babymerge_cli(sweep), "babymerge sweep")))  # fmt: skip
    for alpha in alphas:
        folder = out / f"a{alpha}"
        if "fast" in parts:
            for ckpt, mm, lang in pairs:
                margs = f"pretrained={mm},lang_ckpt={lang},alpha={alpha}{extra}"
                steps.append(Step(f"fast a={alpha} {ckpt}", "fast", alpha,
                                  lambda m=margs, o=folder / "fast" / ckpt: _lm_eval(m, args.fast_tasks, o)))  # fmt: skip
        if "full" in parts:
            margs = f"pretrained={final[1]},lang_ckpt={final[2]},alpha={alpha}{extra}"
            steps.append(Step(f"full a={alpha}", "full", alpha,
                              lambda m=margs, o=folder / "full": _lm_eval(m, args.full_tasks, o)))  # fmt: skip
        if "glue" in parts:
            glue = ["--model", str(final[1]), "--lang", str(final[2]), "--alpha", str(alpha), "--data", args.data,
                    "--out", str(folder / "glue"), "--name", name, *args.finetune_args.split()]  # fmt: skip
            steps.append(Step(f"glue a={alpha}", "glue", alpha,
                              lambda g=glue: _check_rc(finetune.main(g), "python -m train.finetune")))  # fmt: skip
        if "aoa" in parts:
            steps.append(Step(f"aoa a={alpha}", "aoa", alpha, lambda a=alpha, o=folder / "aoa": _aoa(args, a, o)))
        if "devbench" in parts:
            steps.append(Step(f"devbench a={alpha}", "devbench", alpha,
                              lambda a=alpha, o=folder / "devbench": _devbench(args, final, a, o)))  # fmt: skip
        if "full" in parts:  # the submission is built around the final model's predictions
            steps.append(Step(f"submit a={alpha} [{','.join(parts)}]", "submit", alpha,
                              lambda a=alpha, f=folder: _submit(args, pairs, name, parts, a, f)))  # fmt: skip
    return steps


def _model_args(args) -> dict:
    from lm_eval.utils import simple_parse_args_string

    return simple_parse_args_string(args.model_args)


def _aoa(args, alpha: float, out: Path) -> None:
    data = Path(args.data)
    path = aoa_module.run(args.mm, args.lang, alpha, data / aoa_module.DATA_FILE, out,
                          model_args=_model_args(args), progress=False)  # fmt: skip
    cdi = data / aoa_module.CDI_FILE
    if cdi.is_file():
        from babymerge.babylm.aoa_score import write_score

        write_score(aoa_module.read_surprisal(path), cdi, out)


def _devbench(args, final, alpha: float, out: Path) -> None:
    margs = _model_args(args)
    devbench_module.run(
        final[1], Path(args.data) / DEVBENCH_DIR, out, lang=final[2], alpha=alpha, dtype=margs.get("dtype", "float32"),
        device=margs.get("device"), overwrite=True, progress=False,
    )  # fmt: skip


def aoa_complete(pairs, track: str) -> bool:
    """AoA goes into the submission only with every checkpoint of the track (collate_preds' check)."""
    return set(fast_revisions(track)) <= {word_checkpoint_name(checkpoint_words(m.name)) for _, m, _ in pairs}


def _submit(args, pairs, name: str, parts: list[str], alpha: float, folder: Path) -> None:
    from babymerge.cli import main as babymerge_cli

    argv = ["submit", "--format", "2025", "--model", name, "--out", str(folder / "submission"), "--track", args.track]
    argv += ["--results", str(folder / "full")]
    if "fast" in parts:
        argv += ["--fast-results", str(folder / "fast")]
    if "glue" in parts:
        argv += ["--pipeline-results", str(folder / "glue" / name / "main")]
    if "aoa" in parts and aoa_complete(pairs, args.track):
        argv += ["--aoa", str(folder / "aoa")]
    if "devbench" in parts:
        argv += ["--devbench", str(folder / "devbench")]
    if args.sizes:
        argv += ["--sizes", args.sizes]
    if args.allow_partial or set(parts) != set(PARTS) or len(pairs) < len(fast_revisions(args.track)):
        argv.append("--allow-partial")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = babymerge_cli(argv)
    print(printed.getvalue(), end="")  # into the log
    _check_rc(rc, "babymerge submit")
    # what the file lacks, in submit's own words ("partial submission: N parts missing: a, b, ...")
    lacks = [line.partition(": ")[2] for line in printed.getvalue().splitlines() if line.startswith("partial")]
    with output_errors(folder):
        write_file_atomic(folder / MISSING, (lacks[0] if lacks else "nothing") + "\n")
