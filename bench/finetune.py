"""GLUE fine-tuning throughput: ``python -m train.finetune`` vs the official pipeline's fine-tuner.

    python bench/finetune.py [--tasks rte,boolq] [--train 128] [--valid 32] [--epochs 1] [--hidden 128]

Both fine-tune the same random BabyLLaVA checkpoint (``demo.toy``, ``--hidden`` x ``--layers``)
on the same GLUE files (the pipeline's field names; synthetic sentences, the second text of
1 to 16 sentences with a long tail, as GLUE's passages are) with the same recipe: each task's
batch size from ``train.glue``, ``--epochs`` epochs, last token with left padding. The
pipeline's fine-tuner runs as ``eval_finetuning.sh`` runs it, one process per task
(``python -m evaluation_pipeline.finetune.run ... --take_final --padding_side left``, wandb
off, offline); ours runs all tasks in one process. Throughput is training examples (the
batches of every epoch) per second of wall time, start to finish, loading and validation
included. The ratio printed last is ours over theirs (target: >= 1.5): ours loads the model
once, tokenises each text once and batches texts of similar length together.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Run as a script, this file's folder is first on sys.path and its name would shadow nothing here,
# but the repository root must be there for `demo` and `train`.
sys.path.insert(0, str(REPO))
from demo.toy import build_toy_checkpoints, synthetic_sentences  # noqa: E402
from train.glue import glue_task  # noqa: E402

PIPELINE = Path(
    os.environ.get("BABYMERGE_TEST_PIPELINE")
    or REPO.parent / "shared" / "third_party" / "babylm-evaluation-pipeline-2025"
).resolve()
SENTENCES_PER_TEXT = [1, 1, 1, 1, 2, 2, 2, 3, 3, 4, 5, 6, 8, 11, 16]  # the second text's length: a long tail


def write_task(folder: Path, task: str, n: int, split: str, rng: random.Random) -> None:
    spec = glue_task(task)
    pool = synthetic_sentences(20 * n, rng.randrange(10**6))
    rows = []
    for i in range(n):
        row = {key: rng.choice(pool)[:-1] for key in spec.first}
        for key in spec.second:
            row[key] = " ".join(rng.choice(pool) for _ in range(rng.choice(SENTENCES_PER_TEXT)))
        rows.append({**row, "label": rng.randrange(spec.num_labels), "idx": i})
    (folder / f"{task}.{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def timed(cmd: list[str], cwd: Path, env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="rte,boolq")
    p.add_argument("--train", type=int, default=128, help="training examples per task")
    p.add_argument("--valid", type=int, default=32, help="validation examples per task")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    args = p.parse_args()
    tasks = args.tasks.split(",")
    if not (PIPELINE / "evaluation_pipeline").is_dir():
        sys.exit(f"the official pipeline is not at {PIPELINE}: set BABYMERGE_TEST_PIPELINE")

    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as tmp:
        ws = Path(tmp)
        model = build_toy_checkpoints(ws / "ckpt", hidden_size=args.hidden, num_layers=args.layers,
                                      heads=max(1, args.hidden // 64)).mm  # fmt: skip
        data = ws / "evaluation_data"
        glue = data / "full_eval" / "glue_filtered"
        glue.mkdir(parents=True)
        rng = random.Random(0)
        for task in tasks:
            write_task(glue, task, args.train, "train", rng)
            write_task(glue, task, args.valid, "valid", rng)
        examples = sum(args.train // glue_task(t).batch_size * glue_task(t).batch_size * args.epochs for t in tasks)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled"}

        ours = timed([sys.executable, "-m", "train.finetune", "--model", str(model), "--data", str(data),
                      "--tasks", ",".join(tasks), "--epochs", str(args.epochs), "--out", str(ws / "ours")],
                     REPO, env)  # fmt: skip
        print(
            f"train.finetune (one process, length-grouped): {ours:.1f} s, {examples / ours:.1f} examples/s", flush=True
        )
        theirs = 0.0
        for task in tasks:
            spec = glue_task(task)
            argv = ["run", "--model_name_or_path", str(model), "--task", task, "--num_labels", str(spec.num_labels),
                    "--train_data", str(glue / f"{task}.train.jsonl"), "--valid_data", str(glue / f"{task}.valid.jsonl"),
                    "--predict_data", str(glue / f"{task}.valid.jsonl"), "--take_final", "--padding_side", "left",
                    "--batch_size", str(spec.batch_size), "--num_epochs", str(args.epochs), "--sequence_length", "512",
                    "--metrics", *spec.metrics, "--metric_for_valid", spec.metric_for_valid,
                    "--results_dir", str(ws / "theirs")]  # fmt: skip
            code = f"import runpy, sys\nsys.argv = {argv!r}\nrunpy.run_module('evaluation_pipeline.finetune.run', run_name='__main__')\n"
            theirs += timed([sys.executable, "-c", code], ws, {**env, "PYTHONPATH": str(PIPELINE)})

        print(f"{len(tasks)} tasks ({','.join(tasks)}), {args.train} training / {args.valid} validation examples each, "
              f"{args.epochs} epochs, {examples} training examples in all; hidden {args.hidden} x {args.layers} layers")  # fmt: skip
        print(f"pipeline's fine-tuner (one process per task): {theirs:.1f} s, {examples / theirs:.1f} examples/s")
        print(f"ratio (ours / pipeline's): {theirs / ours:.2f}x (target >= 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
