"""The paper's protocol as a grid: P checkpoint pairs x A alphas x the BabyLM 2025 fast suite,
``babymerge sweep`` (1 process; 2 torchrun ranks) vs the official route, cell for cell.

    python bench/protocol.py                  # P=5, A=3, 50 items per subtask, one torch thread per process
    python bench/protocol.py -n 10            # fewer items: start-up costs dominate each side
    python bench/protocol.py -p 2 -a 0,1 -n 4 # a quick look
    python bench/protocol.py --official-cells 3  # the official grid time from 3 cells (~100 s each)

What is measured, side by side in one run, on tiny model pairs (``demo.toy``; pair k is the toy
pair with the multimodal weights perturbed by seed k, saved as ``chck_<k>M`` in two runs) and
one synthetic ``evaluation_data/`` tree in the pipeline's layout (``demo.babylm2025_data``):

* OURS, 1 process: ``babymerge sweep --checkpoints words --alphas ... --tasks babylm2025_fast``
  (each pair read once, re-merged in place per alpha, all fast tasks scored together per cell);
* OURS, 2 ranks: the same under ``torchrun --standalone --nproc_per_node 2``;
* OFFICIAL, per cell: ``babymerge merge`` to disk, then the unmodified pipeline's
  ``eval_zero_shot_fast.sh`` (one process and one model load per task), as a participant would
  run the grid without babymerge.

Wall times are whole processes. Also printed: the time from the 1-process sweep's start to its
first cell recorded in ``cells.jsonl`` (imports, task index, data, first load and merge, the
first cell's scoring) beside one ``lm_eval --model babymerge`` run of that cell, and the load average (the machine may be shared: note it with the times).
Every cell's every subtask score must be equal on both sides (``collate_preds`` on the
pipeline's predictions vs ours), else the exit status is 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from fast_suite import COLLATE, PIPELINE, build, load, run, scores_from_results  # noqa: E402


def make_runs(toy, root: Path, pairs: int) -> tuple[Path, Path]:
    """Two training runs of word-count checkpoints chck_1M .. chck_<pairs>M."""
    import torch
    from safetensors.torch import load_file, save_file

    mm_run, lang_run = root / "runs" / "mm", root / "runs" / "lang"
    shutil.rmtree(root / "runs", ignore_errors=True)
    for k in range(1, pairs + 1):
        shutil.copytree(toy.mm, mm_run / f"chck_{k}M")
        shutil.copytree(toy.lang, lang_run / f"chck_{k}M")
        generator = torch.Generator().manual_seed(k)
        for weights in (mm_run / f"chck_{k}M").glob("*.safetensors"):
            tensors = load_file(weights)
            tensors = {n: t + 0.05 * torch.randn(t.shape, generator=generator) if t.is_floating_point() else t
                       for n, t in tensors.items()}  # fmt: skip
            save_file(tensors, weights, metadata={"format": "pt"})
    return mm_run, lang_run


def timed_sweep(cmd: list[str], out: Path, env: dict, log: Path) -> tuple[float, float]:
    """Wall seconds of a sweep, and seconds until its first cell was recorded."""
    start = time.perf_counter()
    first = None
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            if first is None and (out / "cells.jsonl").is_file() and (out / "cells.jsonl").stat().st_size:
                first = time.perf_counter() - start
            time.sleep(0.05)
    seconds = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed (exit {proc.returncode}); last lines of {log}:\n" + log.read_text()[-3000:])
    return seconds, first if first is not None else seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-p", "--pairs", type=int, default=5, help="word-count checkpoint pairs (P)")
    parser.add_argument("-a", "--alphas", default="0,0.5,1", help="alphas (A of them)")
    parser.add_argument("-n", type=int, default=50, help="items per subtask (demo.babylm2025_data)")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every process, both sides")
    parser.add_argument("--workdir", type=Path, default=REPO / "bench_out" / "protocol")
    parser.add_argument(
        "--official-cells", type=int, default=None,
        help="run the official route on the first K cells only (scores checked on those; its grid time "
        "extrapolated from their mean, and labelled so): on a loaded machine each of its cells takes minutes",
    )  # fmt: skip
    args = parser.parse_args()
    if not (PIPELINE / "evaluation_pipeline").is_dir():
        print(f"the official 2025 pipeline is not at {PIPELINE}", file=sys.stderr)
        return 2
    alphas = [float(a) for a in args.alphas.split(",")]
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    toy, data = build(workdir, args.n, 64, 2)
    mm_run, lang_run = make_runs(toy, workdir, args.pairs)
    env = {
        **os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "BABYMERGE_DATA": str(data),
        "OMP_NUM_THREADS": str(args.threads),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # `python` in the script
    }  # fmt: skip
    n_cells = args.pairs * len(alphas)
    print(f"grid: {args.pairs} checkpoint pairs x {len(alphas)} alphas = {n_cells} cells x the fast suite "
          f"({args.n} items per subtask), {args.threads} torch thread(s) per process, {os.cpu_count()} CPUs")  # fmt: skip

    sweep = ["-m", "babymerge", "sweep", "--mm", str(mm_run), "--lang", str(lang_run), "--checkpoints", "words",
             "--alphas", args.alphas, "--tasks", "babylm2025_fast", "--no-progress"]  # fmt: skip
    times, loads = {}, {"start": load()}
    for name, launcher in (
        ("ours1", [sys.executable]),
        ("ours2", [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]),
    ):
        out = workdir / name
        shutil.rmtree(out, ignore_errors=True)
        times[name] = timed_sweep([*launcher, *sweep, "--out", str(out)], out, env, workdir / f"{name}.log")
        loads[name] = load()

    # the first cell alone, as one `lm_eval` run: what the sweep's time to its first cell compares with
    from babymerge.tasks import tasks_path

    lm_eval_out = workdir / "lm_eval_one_cell"
    shutil.rmtree(lm_eval_out, ignore_errors=True)
    model_args = f"pretrained={mm_run / 'chck_1M'},lang_ckpt={lang_run / 'chck_1M'},alpha={alphas[0]}"
    t_one_cell = run(
        [sys.executable, "-m", "lm_eval", "--model", "babymerge", "--model_args", model_args, "--tasks",
         "babylm2025_fast", "--include_path", str(tasks_path()), "--device", "cpu", "--output_path", str(lm_eval_out)],
        workdir, env, workdir / "lm_eval_one_cell.log",
    )  # fmt: skip

    official = workdir / "official"
    shutil.rmtree(official, ignore_errors=True)
    official.mkdir()
    pipeline_env = {**env, "PYTHONPATH": str(PIPELINE)}
    pipeline_env.pop("BABYMERGE_DATA")
    t_merge = t_pipeline = 0.0
    theirs = {}
    cells = [(f"chck_{k}M", a) for k in range(1, args.pairs + 1) for a in alphas]
    official_cells = cells[: args.official_cells] if args.official_cells is not None else cells
    for ckpt, alpha in official_cells:
        merged = f"{ckpt}-a{alpha:g}".replace(".", "")  # no dot: the pipeline names its results Path(model).stem
        t_merge += run(
            [sys.executable, "-m", "babymerge", "merge", "--mm", str(mm_run / ckpt), "--lang", str(lang_run / ckpt),
             "--alpha", str(alpha), "--out", str(official / merged)],
            official, env, workdir / "merge.log",
        )  # fmt: skip
        t_pipeline += run(
            ["bash", str(PIPELINE / "eval_zero_shot_fast.sh"), str(official / merged), "main", "causal",
             str(data / "fast_eval")],
            official, pipeline_env, workdir / "official.log",
        )  # fmt: skip
        collated = subprocess.run(
            [sys.executable, "-c", COLLATE, str(official / "results" / merged / "main" / "zero_shot" / "causal"),
             str(data / "fast_eval")],
            capture_output=True, text=True, env=pipeline_env, cwd=official,
        )  # fmt: skip
        if collated.returncode:
            sys.exit(f"collate_preds failed:\n{collated.stderr[-3000:]}")
        theirs[(ckpt, alpha)] = json.loads(collated.stdout.strip().splitlines()[-1])
    loads["official"] = load()

    (t1, first1), (t2, _) = times["ours1"], times["ours2"]
    scale = n_cells / len(official_cells) if official_cells else 0.0  # 1 unless extrapolated
    t_merge, t_pipeline = t_merge * scale, t_pipeline * scale
    t_official = t_merge + t_pipeline
    measured = {"times": times, "lm_eval_one_cell": t_one_cell, "official": [t_merge, t_pipeline], "official_cells": len(official_cells),
                "loads": loads}  # fmt: skip
    (workdir / "measured.json").write_text(json.dumps(measured, indent=2))
    est = "" if scale == 1 else f", from {len(official_cells)} cells x {scale:g}"
    w = 64
    print(f"\n{f'{n_cells} cells':<{w}} {'seconds':>8}")
    print(f"{'OURS  babymerge sweep, 1 process':<{w}} {t1:>8.1f}")
    print(f"{'OURS  babymerge sweep, 2 torchrun ranks':<{w}} {t2:>8.1f}")
    print(f"{'  1 process: sweep start to first cell recorded':<{w}} {first1:>8.1f}   (target <= 12)")
    print(f"{'  the same first cell as one lm_eval --model babymerge run':<{w}} {t_one_cell:>8.1f}")
    if theirs:
        print(f"{'OFFICIAL  babymerge merge to disk, per cell':<{w}} {t_merge:>8.1f}{est}")
        print(f"{'OFFICIAL  eval_zero_shot_fast.sh, per cell (7 processes each)':<{w}} {t_pipeline:>8.1f}{est}")
        print(f"{'OFFICIAL  total':<{w}} {t_official:>8.1f}{est}")
    print(f"load average (1, 5, 15 min): start {loads['start']}, after 1 process {loads['ours1']}, "
          f"after 2 ranks {loads['ours2']}, after official {loads['official']}")  # fmt: skip

    ours = {}
    for line in (workdir / "ours1" / "cells.jsonl").read_text().splitlines():
        cell = json.loads(line)
        ours[(cell["checkpoint"], cell["alpha"])] = scores_from_results(cell["results"])
    two = {
        (c["checkpoint"], c["alpha"]): c["results"] for c in map(json.loads, open(workdir / "ours2" / "cells.jsonl"))
    }
    one = {
        (c["checkpoint"], c["alpha"]): c["results"] for c in map(json.loads, open(workdir / "ours1" / "cells.jsonl"))
    }
    agree = one == two and len(one) == n_cells
    print(f"\n2 ranks' cells equal the 1 process's, all {n_cells} there: {agree}")
    worst = 0.0
    for cell, official_scores in theirs.items():
        for task, scores in official_scores.items():
            mine = ours[cell].get(task, {})
            if sorted(mine) != sorted(scores):
                print(f"{cell} {task}: subtasks differ: ours {sorted(mine)}, official {sorted(scores)}")
                agree = False
                continue
            worst = max([worst, *(abs(mine[k] - v) for k, v in scores.items())])
    if theirs:
        print(f"every cell's subtask scores equal to the official route's: max |diff| = {worst:.2e} over "
              f"{len(theirs)} cells")  # fmt: skip
        agree &= worst <= 1e-4
        print(f"speed-up OURS (1 process) vs OFFICIAL = {t_official / t1:.1f}x (target >= 10)")
    print(f"speed-up 2 ranks vs 1 process = {t1 / t2:.2f}x (target >= 1.6)")
    print(f"all equal: {agree}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
