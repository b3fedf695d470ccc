"""Sweep speed: ``babymerge sweep`` over 11 alphas vs 11 separate ``lm_eval`` invocations.

    python bench/sweep.py [--tasks winoground] [--limit 20]

Both evaluate the same tiny checkpoint pair (built locally) at alpha = 0, 0.1, ..., 1 on the
same tasks (default: the synthetic Winoground set written by the project, plus BLiMP
paradigms when ../shared/data/blimp and the BLiMP tasks are there). The separate runs are
what a user would otherwise type: ``lm_eval --model babymerge --model_args ...,alpha=a``,
each a fresh process that imports everything, reads both checkpoints and merges. The sweep
reads them once and re-merges in place. Wall time end to end for both; the per-alpha
scores must be identical; the speed-up is printed last.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the demo package (tiny checkpoints)
BLIMP = REPO.parent / "shared" / "data" / "blimp"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tasks", default=None, help="comma-separated (default: winoground + 3 BLiMP paradigms if present)"
    )
    parser.add_argument("--limit", type=int, default=20)
    args = parser.parse_args()

    from babymerge.data.synthetic_winoground import write_dataset
    from demo.toy import build_toy_checkpoints

    alphas = [round(i / 10, 1) for i in range(11)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        toy = build_toy_checkpoints(tmp / "toy", hidden_size=128, num_layers=4)
        data = tmp / "evaluation_data"
        write_dataset(data / "winoground", n=args.limit, seed=0)
        tasks = ["winoground"]
        if BLIMP.is_dir() and (REPO / "lm_eval_tasks" / "blimp").is_dir():
            (data / "blimp").symlink_to(BLIMP)
            tasks += [
                "blimp_anaphor_gender_agreement",
                "blimp_regular_plural_subject_verb_agreement_1",
                "blimp_wh_island",
            ]
        tasks = args.tasks.split(",") if args.tasks else tasks
        env = {**os.environ, "BABYMERGE_DATA": str(data)}
        common = ["--tasks", ",".join(tasks), "--limit", str(args.limit)]

        start = time.perf_counter()
        cmd = [sys.executable, "-m", "babymerge", "sweep", "--mm", str(toy.mm), "--lang", str(toy.lang), "--alphas", "0:1:0.1",
               "--include-path", str(REPO / "lm_eval_tasks"), "--out", str(tmp / "sweep"), "--no-progress", *common]  # fmt: skip
        subprocess.run(cmd, check=True, env=env, capture_output=True)
        t_sweep = time.perf_counter() - start
        sweep_scores = {}
        for line in (tmp / "sweep" / "results.jsonl").read_text().splitlines():
            row = json.loads(line)
            sweep_scores[row["alpha"], row["task"], row["metric"]] = row["value"]

        start = time.perf_counter()
        separate_scores = {}
        for alpha in alphas:
            out = tmp / f"separate-{alpha}"
            cmd = ["lm_eval", "--model", "babymerge", "--model_args", f"pretrained={toy.mm},lang_ckpt={toy.lang},alpha={alpha}",
                   "--include_path", str(REPO / "lm_eval_tasks"), "--device", "cpu", "--batch_size", "auto",
                   "--output_path", str(out), *common]  # fmt: skip
            subprocess.run(cmd, check=True, env=env, capture_output=True)
            results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]
            for task, metrics in results.items():
                for key, value in metrics.items():
                    metric, _, filt = key.partition(",")
                    if filt and not metric.endswith("_stderr") and isinstance(value, (int, float)):
                        separate_scores[alpha, task, metric] = value
        t_separate = time.perf_counter() - start

    same = all(sweep_scores.get(k) == v for k, v in separate_scores.items())
    print(f"tasks {tasks}, --limit {args.limit}, 11 alphas, tiny checkpoint pair")
    print(f"babymerge sweep (one process, one load, in-place re-merge) {t_sweep:7.1f}s")
    print(f"11 separate lm_eval --model babymerge runs              {t_separate:7.1f}s")
    print(f"per-alpha scores identical: {same} ({len(separate_scores)} values compared)")
    print(f"speed-up sweep vs separate runs = {t_separate / t_sweep:.2f}x (target >= 3)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
