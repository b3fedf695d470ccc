"""The BabyLM 2025 fast suite over one (checkpoint, alpha) cell: ``lm_eval --model babymerge`` vs the official pipeline.

    python bench/fast_suite.py             # 10 items per subtask (x200 of BLiMP's fast files is the real size)
    python bench/fast_suite.py -n 50       # more items: evaluation time dominates, start-up less
    python bench/fast_suite.py --threads 1 # one torch thread per process (a shared, loaded machine: see below)

What is measured, side by side in one run, on one tiny model pair (``demo.toy``: a BabyLLaVA
multimodal model and its LlamaForCausalLM language-only twin) and one synthetic
``evaluation_data/`` tree in the pipeline's exact layout (``demo.babylm2025_data``; BLiMP
sentences from ../shared/data/blimp when present):

* OURS: one process, ``lm_eval --model babymerge --model_args pretrained=<mm>,lang_ckpt=<lang>,
  alpha=0.3 --tasks babylm2025_fast --include_path $(babymerge tasks-path)``: the merge in
  memory, one model load, every fast task's requests scored together (prefix tree);
* OFFICIAL: ``babymerge merge`` writes the merged checkpoint (its time counted in this row),
  then the unmodified pipeline's own ``eval_zero_shot_fast.sh`` (../shared/third_party/
  babylm-evaluation-pipeline-2025, ``--backend causal``): one process per fast task, each
  loading the model again, as the organisers run it.

Wall times are whole processes (interpreter start, imports, loading, merging, scoring, writing
results). Then the per-subtask fast scores: the pipeline's are what its ``collate_preds.py``
computes from its prediction files (the numbers of the submission file), ours lm-eval's
``acc_pipeline`` / ``spearman`` / ``rt`` / ``spr``; the largest difference per task is printed.
The machine's load average is printed with the times: they are noisy on a shared machine, and
on an oversubscribed CPU (load above the core count) torch's default of one thread per core
makes tiny models' forwards up to ~40x slower for both sides; ``--threads 1`` avoids that.
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
PIPELINE = REPO.parent / "shared" / "third_party" / "babylm-evaluation-pipeline-2025"
BLIMP = REPO.parent / "shared" / "data" / "blimp"
MERGED = "merged-a03"  # no dot: the pipeline names its results folder Path(model).stem

# collate_preds' fast-score functions on the pipeline's prediction files (as get_revision_fast_eval_metrics
# calls them, without its checks of the official item counts)
COLLATE = """
import json, pathlib, sys
import evaluation_pipeline.collate_preds as c
base, data = map(pathlib.Path, sys.argv[1:3])
load = lambda p: json.loads((base / p / "predictions.json").read_text())
print(json.dumps({
    "blimp": c._calculate_target_results(load("blimp/blimp_fast"), "blimp", data / "blimp_fast"),
    "blimp_supplement": c._calculate_target_results(load("blimp/supplement_fast"), "blimp_supplement",
                                                    data / "supplement_fast"),
    "ewok": c._calculate_target_results(load("ewok/ewok_fast"), "ewok", data / "ewok_fast"),
    "entity_tracking": c._calculate_target_et_results(load("entity_tracking/entity_tracking_fast"),
                                                      data / "entity_tracking_fast"),
    "wug_adj": c._calculate_wugs_results(load("wug_adj/wug_adj_nominalization"), "wug_adj_nominalization",
                                         data / "wug_adj_nominalization"),
    "wug_past": c._calculate_wugs_results(load("wug_past/wug_past_tense"), "wug_past_tense", data / "wug_past_tense"),
    "reading": c._calculate_reading_results(load("reading"), data / "reading" / "reading_data.csv"),
}))
"""


def run(cmd: list[str], cwd: Path, env: dict, log: Path) -> float:
    """Wall seconds of one command; its output goes to ``log``; a failure stops the bench with its tail."""
    start = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.call(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if code:
        sys.exit(f"{' '.join(map(str, cmd))} failed (exit {code}); last lines of {log}:\n" + log.read_text()[-3000:])
    return seconds


def load() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def build(workdir: Path, n: int, hidden_size: int, layers: int):
    """The model pair and the evaluation data (rebuilt each run: both are cheap)."""
    from demo.babylm2025_data import write_evaluation_data
    from demo.toy import build_toy_checkpoints

    for name in ("toy", "evaluation_data"):
        shutil.rmtree(workdir / name, ignore_errors=True)
    toy = build_toy_checkpoints(workdir / "toy", hidden_size=hidden_size, num_layers=layers)
    data = write_evaluation_data(
        workdir / "evaluation_data",
        blimp=BLIMP if BLIMP.is_dir() else None,
        n=n,
        reading_sentences=max(8, 4 * n),
        vqa=False,
    )
    return toy, data


def our_scores(output: Path) -> dict[str, dict[str, float]]:
    """lm-eval's per-subtask fast scores in an ``--output_path``, keyed as collate_preds keys them."""
    (results,) = output.rglob("results_*.json")
    return scores_from_results(json.loads(results.read_text())["results"])


def scores_from_results(results: dict) -> dict[str, dict[str, float]]:
    """lm-eval's ``results`` dict -> per-subtask fast scores, keyed as collate_preds keys them."""
    from babymerge.babylm.tasks import TASKS

    scores: dict[str, dict[str, float]] = {}
    for entry in TASKS.values():
        if entry.kind != "fast" or entry.name not in results:
            continue
        metrics = results[entry.name]
        if entry.task == "reading":
            scores["reading"] = {"spr": metrics["spr,none"], "rt": metrics["rt,none"]}
        elif entry.task.startswith("wug"):
            scores.setdefault(entry.task, {})[entry.subtask] = metrics["spearman,none"]
        else:
            scores.setdefault(entry.task, {})[entry.subtask] = metrics["acc_pipeline,none"]
    return scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="items per subtask (demo.babylm2025_data.write_text_tasks)")
    parser.add_argument("--hidden-size", type=int, default=64, help="of the toy decoder (demo.toy)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=REPO / "bench_out" / "fast_suite")
    parser.add_argument(
        "--threads", type=int, default=None, help="OMP_NUM_THREADS of every process, both sides (default: torch's)"
    )
    args = parser.parse_args()
    if not (PIPELINE / "evaluation_pipeline").is_dir():
        print(f"the official 2025 pipeline is not at {PIPELINE}", file=sys.stderr)
        return 2
    from babymerge import tasks_path

    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    toy, data = build(workdir, args.n, args.hidden_size, args.layers)
    n_items = {
        folder.name: sum(len(p.read_text().splitlines()) for p in folder.glob("*.jsonl"))
        for folder in sorted((data / "fast_eval").iterdir())
    }
    print(f"fast_eval items per folder: {n_items} (+ reading_data.csv)")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "BABYMERGE_DATA": str(data),
        **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # `python` in the script
    }

    # OURS: one lm_eval process
    ours_out = workdir / "ours"
    shutil.rmtree(ours_out, ignore_errors=True)
    model_args = f"pretrained={toy.mm},lang_ckpt={toy.lang},alpha=0.3"
    load_before = load()
    t_ours = run(
        [sys.executable, "-m", "lm_eval", "--model", "babymerge", "--model_args", model_args, "--tasks",
         "babylm2025_fast", "--include_path", str(tasks_path()), "--device", "cpu", "--output_path", str(ours_out)],
        workdir, env, workdir / "ours.log",
    )  # fmt: skip
    load_ours = load()

    # OFFICIAL: babymerge merge, then the pipeline's own fast-evaluation script
    official = workdir / "official"
    shutil.rmtree(official, ignore_errors=True)
    official.mkdir()
    t_merge = run(
        [sys.executable, "-m", "babymerge", "merge", "--mm", str(toy.mm), "--lang", str(toy.lang), "--alpha", "0.3",
         "--out", str(official / MERGED)],
        official, env, workdir / "merge.log",
    )  # fmt: skip
    pipeline_env = {**env, "PYTHONPATH": str(PIPELINE)}
    pipeline_env.pop("BABYMERGE_DATA")
    t_pipeline = run(
        ["bash", str(PIPELINE / "eval_zero_shot_fast.sh"), str(official / MERGED), "main", "causal",
         str(data / "fast_eval")],
        official, pipeline_env, workdir / "official.log",
    )  # fmt: skip
    load_official = load()
    t_official = t_merge + t_pipeline

    print(f"\n{'fast suite, one (checkpoint, alpha) cell':<62} {'seconds':>8}")
    print(f"{'OURS  lm_eval --model babymerge (merge in memory, 1 process)':<62} {t_ours:>8.1f}")
    (results_file,) = ours_out.rglob("results_*.json")
    merge_seconds = json.loads(results_file.read_text())["config"]["merge_seconds"]
    print(f"{'  of which the merge in memory':<62} {merge_seconds:>8.2f}")
    print(f"{'OFFICIAL  babymerge merge (to disk)':<62} {t_merge:>8.1f}")
    print(f"{'OFFICIAL  eval_zero_shot_fast.sh (7 processes, 7 model loads)':<62} {t_pipeline:>8.1f}")
    print(f"{'OFFICIAL  total':<62} {t_official:>8.1f}")
    print(f"load average (1, 5, 15 min): before {load_before}, after ours {load_ours}, after official {load_official}")
    print(f"torch threads per process: {args.threads or 'torch default'} ({os.cpu_count()} CPUs)")

    # scores: collate_preds on the pipeline's predictions vs ours
    collated = subprocess.run(
        [sys.executable, "-c", COLLATE, str(official / "results" / MERGED / "main" / "zero_shot" / "causal"),
         str(data / "fast_eval")],
        capture_output=True, text=True, env=pipeline_env, cwd=official,
    )  # fmt: skip
    if collated.returncode:
        sys.exit(f"collate_preds failed:\n{collated.stderr[-3000:]}")
    theirs = json.loads(collated.stdout.strip().splitlines()[-1])
    ours = our_scores(ours_out)
    print(f"\n{'task':<18} {'subtasks':>8} {'ours (mean)':>12} {'official':>12} {'max |diff|':>11}")
    agree = True
    for task, official_scores in theirs.items():
        mine = ours.get(task, {})
        same_keys = sorted(mine) == sorted(official_scores)
        diff = max((abs(mine[k] - v) for k, v in official_scores.items() if k in mine), default=float("nan"))
        mean = lambda d: sum(d.values()) / len(d) if d else float("nan")  # noqa: E731
        note = "" if same_keys else f"  subtasks differ: ours {sorted(mine)}"
        print(
            f"{task:<18} {len(official_scores):>8} {mean(mine):>12.4f} {mean(official_scores):>12.4f} {diff:>11.2e}{note}"
        )
        agree &= same_keys and diff <= 1e-4
    print(f"\nevery subtask's score equal (|diff| <= 1e-4): {agree}")
    print(f"speed-up OURS vs OFFICIAL (merge included) = {t_official / t_ours:.2f}x (target >= 2)")
    print(f"speed-up OURS vs OFFICIAL (evaluation only, merge not counted) = {t_pipeline / t_ours:.2f}x")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
