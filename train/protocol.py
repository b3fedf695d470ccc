"""The paper's protocol in one command: every evaluation of a merged pair of runs, then the 2025 submission.

    python -m train.protocol --mm runs/mm --lang runs/lang --alphas 0.3 --data evaluation_data --out protocol/ \\
        [--skip glue,devbench] [--sizes sizes.json] [--model-args dtype=bfloat16,device=cuda]

Steps, in this order (each one a public function or command ``main`` of the project, run in this process):

1. ``fast``: ``babymerge sweep`` of the fast suite (``babylm2025_fast``) over every word-count checkpoint
   pair (``chck_<N>M``) at every alpha (one merge per pair, redone in place per alpha): ``OUT/sweep``
   (``results.csv``, ``score_vs_words.png``); then, for the submission's ``fast_eval_results``, each
   (alpha, checkpoint) again with lm-eval's ``--log_samples`` (the sweep keeps scores, not samples):
   ``OUT/a<alpha>/fast/<chck>``;
2. ``full``: ``lm_eval --model babymerge`` on the full zero-shot suite, the final pair merged at load time:
   ``OUT/a<alpha>/full``;
3. ``glue``: ``python -m train.finetune`` on the final merge: ``OUT/a<alpha>/glue/<name>/main/finetune``;
4. ``aoa``: ``babymerge aoa`` on every word-count pair (and its score, with ``cdi_human.csv``): ``OUT/a<alpha>/aoa``;
5. ``devbench``: ``babymerge devbench`` on the final merge: ``OUT/a<alpha>/devbench``;
6. ``submit``: ``babymerge submit --format 2025`` with every part made: ``OUT/a<alpha>/submission``.

Before any work, the data of every part not skipped is checked; what is missing is refused in one line
naming what to fetch and where it goes. ``--skip`` leaves parts out; the submission then lists them as
missing (``--allow-partial``). A part the runs cannot make complete (AoA needs every checkpoint of the
track) is left out of the submission with the reason, and its own output is still written.

Resuming: ``OUT/protocol.json`` records the settings (a fingerprint of both runs' checkpoints included)
and each finished step; a rerun skips them, and a step cut by a kill is redone (each step also skips its
own finished work: sweep cells, fine-tuned tasks, AoA checkpoints). Other settings in the same ``--out``
are refused. One progress bar over the steps; each step's own output goes to ``OUT/protocol.log``. At the
end: ``OUT/summary.csv`` (one row per alpha and part) printed as a table, and the sweep's plots.

What each step runs is in ``train.protocol_steps``; here: the data check, the resumable state, the run
and the summary.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import os
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from babymerge.babylm import aoa as aoa_module
from babymerge.babylm import devbench as devbench_module
from babymerge.babylm.tasks import FOLDERS, GLUE_2025
from babymerge.data import DATA_ENV
from babymerge.errors import BabyMergeError
from babymerge.publish import output_errors, write_file_atomic

from .protocol_steps import DEVBENCH_DIR, LOG, MISSING, PARTS, Step, aoa_complete, plan

FAST_SUITE, FULL_SUITE = "babylm2025_fast", "babylm2025_full_zero_shot"
STATE = "protocol.json"
SUMMARY = "summary.csv"
OSF = "the BabyLM 2025 evaluation data (https://osf.io/ryjfm/, evaluation_data/)"


# -- what each part needs ---------------------------------------------------------------------------------------------
def _needed_files(part: str, track: str) -> list[str]:
    """Paths under the evaluation data folder a part reads (the pipeline's ``evaluation_data/`` layout)."""
    if part in ("fast", "full"):
        paths = sorted({folder for (_, kind), folder in FOLDERS.items() if kind == part})
        paths.append(f"{part}_eval/reading/reading_data.csv")
        if part == "full" and track == "multimodal":
            paths += ["full_eval/vqa_filtered", "vqav2_validation", "winoground", "winoground_filtered"]
        return paths
    if part == "glue":
        from train.glue import task_file

        return [str(task_file(Path(), t, s)) for t in GLUE_2025 for s in ("train", "valid")]
    if part == "aoa":
        return [aoa_module.DATA_FILE]
    return []


def check_data(data: Path, parts: list[str], track: str, final_mm: Path, suites: dict) -> None:
    """Refuse, in one line, every part whose data is not there: what, where it goes, how to get it.
    ``suites``: the lm-eval tasks of fast and full; the data of the official suites is checked here
    (other task lists: by lm-eval, when they load)."""
    problems = []
    for part in parts:
        if part in ("fast", "full") and suites[part] != {"fast": FAST_SUITE, "full": FULL_SUITE}[part]:
            continue
        if part == "devbench":
            try:
                devbench_module.check_model(final_mm)
                devbench_module.check_data(data / DEVBENCH_DIR)
            except BabyMergeError as err:
                problems.append((part, str(err)))
            continue
        absent = [p for p in _needed_files(part, track) if not (data / p).exists()]
        if absent:
            where = f"{data / absent[0]}" + (f" and {len(absent) - 1} more" if len(absent) > 1 else "")
            problems.append((part, f"{where} missing; fetch {OSF} into {data}"))
    if problems:
        text = "; ".join(f"{part}: {why}" for part, why in problems)
        raise BabyMergeError(
            f"missing data for {', '.join(p for p, _ in problems)}: {text}. "
            f"Fetch it, or run the rest with --skip {','.join(p for p, _ in problems)}"
        )


# -- settings and state -----------------------------------------------------------------------------------------------
def _digest(path) -> str | None:
    return None if path is None else hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def settings_of(args, pairs, final) -> dict:
    """What the results depend on; alphas and --skip may change between runs (steps are per alpha and part)."""
    from babymerge.sweep import checkpoint_fingerprint

    return {
        "mm": str(Path(args.mm).resolve()), "lang": str(Path(args.lang).resolve()),
        "data": str(Path(args.data).resolve()), "track": args.track, "sizes": _digest(args.sizes),
        "model_args": args.model_args, "finetune_args": args.finetune_args, "fast_tasks": args.fast_tasks,
        "full_tasks": args.full_tasks, "final": final[0],
        "checkpoints": {name: [checkpoint_fingerprint(m), checkpoint_fingerprint(l)] for name, m, l in pairs},
    }  # fmt: skip


def read_state(out: Path, settings: dict) -> dict:
    path = out / STATE
    if not path.is_file():
        if out.is_dir() and any(out.iterdir()):
            raise BabyMergeError(
                f"--out {out} holds files this command did not write ({STATE} missing); choose another --out"
            )
        return {"settings": settings, "done": {}}
    state = json.loads(path.read_text())
    before = state.get("settings", {})
    differ = [k for k in settings if before.get(k) != settings[k]]
    if differ:
        raise BabyMergeError(
            f"--out {out} was run with other settings ({differ[0]}: {str(before.get(differ[0]))[:80]!r}, now "
            f"{str(settings[differ[0]])[:80]!r}); choose another --out"
        )
    return state


def write_state(out: Path, state: dict) -> None:
    with output_errors(out):
        write_file_atomic(out / STATE, json.dumps(state, indent=1) + "\n")


# -- the summary ------------------------------------------------------------------------------------------------------
def _mean_scores(obj) -> list[float]:
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in _mean_scores(v)]
    return [float(obj)] if isinstance(obj, (int, float)) and not isinstance(obj, bool) else []


def summary_rows(out: Path, alphas, parts, pairs, track) -> list[dict]:
    """One row per alpha and part: the numbers a user looks at before submitting."""
    rows = []
    for alpha in alphas:
        folder = out / f"a{alpha}"
        sub = folder / "submission" / "all_full_preds_and_fast_scores_causal.json"
        data = json.loads(sub.read_text()) if sub.is_file() else {}
        for task, per_ckpt in data.get("fast_eval_results", {}).items():
            last = next((c for c in reversed(per_ckpt) if c), {})
            scores = _mean_scores(last)
            if scores:
                rows.append({"alpha": alpha, "part": f"fast {task} (last checkpoint)",
                             "value": sum(scores) / len(scores)})  # fmt: skip
        if "glue" in parts:
            for task_dir in sorted((folder / "glue").glob("*/main/finetune/*")):
                for line in (task_dir / "results.txt").read_text().splitlines():
                    key, _, value = line.partition(": ")
                    if key == "accuracy":
                        rows.append({"alpha": alpha, "part": f"glue {task_dir.name} accuracy", "value": float(value)})
        score = folder / "aoa" / "aoa_score.json"
        if "aoa" in parts and score.is_file():
            rows.append(
                {"alpha": alpha, "part": "aoa score (r)", "value": json.loads(score.read_text())["curve_fitness"]}
            )
        marker = folder / "devbench" / devbench_module.SUBDIR / devbench_module.MARKER
        if "devbench" in parts and marker.is_file():
            for task, acc in json.loads(marker.read_text())["accuracy"].items():
                rows.append({"alpha": alpha, "part": f"devbench {task} accuracy", "value": acc})
        missing = [f"{p} (skipped)" for p in PARTS if p not in parts]
        if "aoa" in parts and not aoa_complete(pairs, track):
            missing.append("aoa (in the submission: needs all the track's checkpoints)")
        if "full" not in parts:
            missing.append("the submission itself: it needs the full suite")
        if (folder / MISSING).is_file():
            lacks = (folder / MISSING).read_text().strip()
            missing.append(f"in the file: {lacks[:120]}{'...' if len(lacks) > 120 else ''} ({folder / MISSING})")
        rows.append({"alpha": alpha, "part": "submission", "value": str(sub) if sub.is_file() else "not written",
                     "missing": "; ".join(missing)})  # fmt: skip
    return rows


def write_summary(out: Path, rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, ["alpha", "part", "value", "missing"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with output_errors(out):
        write_file_atomic(out / SUMMARY, buffer.getvalue())
    lines = [f"{'alpha':>6}  {'part':<48} value"]
    for r in rows:
        value = f"{r['value']:.4f}" if isinstance(r["value"], float) else r["value"]
        lines.append(
            f"{r['alpha']:>6}  {r['part']:<48} {value}" + (f"  (missing: {r['missing']})" if r.get("missing") else "")
        )
    return "\n".join(lines)


# -- the command ------------------------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m train.protocol", description=__doc__.split("\n\n")[0])
    p.add_argument("--mm", required=True, help="multimodal run directory (chck_<N>M word-count checkpoints)")
    p.add_argument("--lang", required=True, help="language-only run directory (chck_<N>M word-count checkpoints)")
    p.add_argument("--alphas", default="0.3", help="weights of the LANGUAGE-ONLY model, e.g. 0.3 or 0,0.3,0.5")
    p.add_argument("--data", required=True, help="the pipeline's evaluation_data folder (full_eval/, fast_eval/, ...)")
    p.add_argument("--out", required=True, help="protocol folder (resumable; refuses other settings)")
    p.add_argument("--skip", default="", help=f"parts to leave out, comma-separated: {','.join(PARTS)}")
    p.add_argument("--final", default="latest", help="the final checkpoint pair's name (default: the last one)")
    p.add_argument("--track", default="multimodal", help="the submission's track (default multimodal)")
    p.add_argument("--sizes", help="babymerge submit --sizes: item counts for small data (default: the official ones)")
    p.add_argument("--allow-partial", action="store_true", help="write the submission even if parts are missing")
    p.add_argument("--model-args", default="", help="extra babymerge model_args, e.g. dtype=bfloat16,device=cuda")
    p.add_argument("--finetune-args", default="", help="extra train.finetune options, e.g. '--epochs 3'")
    p.add_argument("--fast-tasks", default=FAST_SUITE, help=f"lm-eval tasks of the fast part (default {FAST_SUITE})")
    p.add_argument("--full-tasks", default=FULL_SUITE, help=f"lm-eval tasks of the full part (default {FULL_SUITE})")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def run(args) -> list[dict]:
    from babymerge.sweep import checkpoint_pairs, parse_alphas

    skip = [s.strip() for s in args.skip.split(",") if s.strip()]
    unknown = [s for s in skip if s not in PARTS]
    if unknown:
        raise BabyMergeError(f"--skip {unknown[0]!r}: not a part; parts are {','.join(PARTS)}")
    parts = [p for p in PARTS if p not in skip and (p != "devbench" or args.track == "multimodal")]
    alphas = parse_alphas(args.alphas)
    data, out = Path(args.data), Path(args.out)
    if not data.is_dir():
        raise BabyMergeError(f"--data {data}: no such folder; fetch {OSF} and give its folder")
    if args.sizes and not Path(args.sizes).is_file():
        raise BabyMergeError(f"--sizes {args.sizes}: no such file")
    pairs = checkpoint_pairs(args.mm, args.lang, "words")
    everything = checkpoint_pairs(args.mm, args.lang, "all")
    final = everything[-1] if args.final == "latest" else next((p for p in everything if p[0] == args.final), None)
    if final is None:
        raise BabyMergeError(
            f"--final {args.final}: not a checkpoint of both runs; they have {[p[0] for p in everything]}"
        )
    check_data(data, parts, args.track, final[1], {"fast": args.fast_tasks, "full": args.full_tasks})
    state = read_state(out, settings_of(args, pairs, final))
    with output_errors(out):
        out.mkdir(parents=True, exist_ok=True)
    write_state(out, state)
    steps = plan(args, out, pairs, final, parts, alphas)
    saved_env = {k: os.environ.get(k) for k in (DATA_ENV, "TOKENIZERS_PARALLELISM")}
    os.environ[DATA_ENV] = str(data.resolve())  # the lm-eval tasks read their files there
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        _run_steps(args, out, steps, state)
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    rows = summary_rows(out, alphas, parts, pairs, args.track)
    print(write_summary(out, rows))
    return rows


def _run_steps(args, out: Path, steps: list[Step], state: dict) -> None:
    screen = sys.stderr
    bar = tqdm(steps, desc="protocol", unit="step", file=screen, disable=args.no_progress)
    with open(out / LOG, "a", encoding="utf-8") as log:
        for step in bar:
            if step.name in state["done"]:
                continue
            bar.set_postfix_str(step.name)
            started = time.time()
            print(f"\n==== {step.name} ({time.strftime('%Y-%m-%d %H:%M:%S')})", file=log, flush=True)
            try:
                with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                    execute(step)
            except BabyMergeError as err:
                raise BabyMergeError(f"step {step.name!r}: {err}{_last_error(out / LOG)}") from None
            state["done"][step.name] = {"seconds": round(time.time() - started, 1)}
            write_state(out, state)


def _last_error(log: Path) -> str:
    """The last error line a command printed into the log (its own words), if any."""
    text = log.read_text(errors="replace").rsplit("\n==== ", 1)[-1]  # this step's part of the log
    lines = [ln for ln in text.splitlines() if "error:" in ln]
    return f" ({lines[-1].strip()})" if lines else ""


def execute(step: Step) -> None:
    """Run one step (a test may wrap this to count or interrupt steps)."""
    step.action()


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except BabyMergeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {Path(args.out) / SUMMARY}; plots in {Path(args.out) / 'sweep'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
