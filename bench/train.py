"""Training throughput: 2 CPU ranks with ZeRO-2 (the real launcher) vs plain single-process PyTorch.

    python bench/train.py [--steps 12] [--hidden 512] [--layers 6]

Both runs train the same ~20M-parameter BabyLLaVA on the same packed blocks (the demo
corpora, written here) at the same global batch, from the same seed: ``python -m train
--set engine=torch`` (one process, all cores) and ``deepspeed --num_gpus 2 --module train``
(two ranks, half the cores each, ZeRO-2 over gloo). Tokens/s comes from each run's own
``log.jsonl`` (the first steps, which include warm-up, are skipped). The ratio printed last
is the ZeRO overhead per token (target: <= 1.3). Their final losses are printed too: the
two runs compute the same steps.

With a GPU it also runs one rank of ZeRO-2 in bf16 and reports tokens/s and the model FLOPs
utilisation (6 x parameters x tokens/s over the GPU's peak dense bf16 FLOP/s;
``--peak-tflops`` if the GPU is not in the table).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Run as a script, this file's folder is first on sys.path and its name would shadow the
# `train` package it measures.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(REPO))  # the demo package (workspace and config)
from demo import data as demo_data  # noqa: E402

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "A10": 125.0, "L4": 121.0, "A6000": 155.0}


def write_config(ws: Path, name: str, args, **extra) -> Path:
    top = dict(seed=42, epochs=1, max_steps=args.steps, micro_batch_size=args.micro, global_batch_size=args.global_batch,
               log_every_steps=1, keep_optimizer_states=0)  # fmt: skip
    model = {
        "num_layers": args.layers,
        "hidden_size": args.hidden,
        "intermediate_size": 3 * args.hidden,
        "num_heads": args.hidden // 64,
        "context_length": 128,
    }
    config = demo_data.tiny_config(ws, name, model=model, optim={}, **{**top, **extra})
    return demo_data.write_config(ws / f"{name}.yaml", config)


def run(cmd: list[str], ws: Path, env: dict) -> None:
    proc = subprocess.run(cmd, cwd=ws, capture_output=True, text=True, env={**os.environ, **env})
    if proc.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def throughput(run_dir: Path, skip: int) -> tuple[float, float]:
    """Tokens/s over the steps after the first ``skip``, and the final loss, from log.jsonl."""
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    tokens = [b["tokens_seen"] - a["tokens_seen"] for a, b in zip(log[skip - 1 :], log[skip:])]
    seconds = sum(t / r["tokens_per_s"] for t, r in zip(tokens, log[skip:]))
    return sum(tokens) / seconds, log[-1]["loss"]


def port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--skip", type=int, default=2, help="first steps left out of the timing")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--micro", type=int, default=4)
    p.add_argument("--global-batch", type=int, default=16)
    p.add_argument("--gpu-batch", type=int, default=128, help="sequences per step on the GPU")
    p.add_argument("--peak-tflops", type=float, default=None)
    p.add_argument("--workdir", default=None)
    args = p.parse_args()

    ws = Path(args.workdir or tempfile.mkdtemp(prefix="bench-train-"))
    if not (ws / "features" / "black.npy").is_file():
        demo_data.prepare_workspace(ws, n_sentences=20000, n_captions=4000, vocab_size=8000)
    shutil.rmtree(ws / "runs", ignore_errors=True)
    cpu = {"CUDA_VISIBLE_DEVICES": "", "DS_ACCELERATOR": "cpu"}  # CPU ranks even on a GPU machine
    run([sys.executable, "-m", "train", "--config", str(write_config(ws, "torch", args, engine="torch"))], ws, cpu)
    run(
        [
            "deepspeed",
            "--num_gpus",
            "2",
            "--master_port",
            port(),
            "--module",
            "train",
            "--config",
            str(write_config(ws, "zero2", args)),
        ],
        ws,
        cpu,
    )
    single_tps, single_loss = throughput(ws / "runs" / "torch", args.skip)
    zero_tps, zero_loss = throughput(ws / "runs" / "zero2", args.skip)
    state = json.loads((ws / "runs" / "zero2" / f"ckpt-step{args.steps}" / "trainer_state.json").read_text())
    from safetensors import safe_open

    with safe_open(ws / "runs" / "zero2" / f"ckpt-step{args.steps}" / "model.safetensors", "pt") as f:
        n_params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    print(f"model: {n_params / 1e6:.1f}M parameters, context 128, global batch {args.global_batch} x 128 tokens, {args.steps} steps "
          f"(timing steps {args.skip + 1}..{args.steps}), {os.cpu_count()} CPU cores, world size {state['world_size']} for ZeRO-2")  # fmt: skip
    print(f"plain PyTorch, 1 process     : {single_tps:9.0f} tokens/s   final loss {single_loss:.4f}")
    print(f"DeepSpeed ZeRO-2, 2 CPU ranks: {zero_tps:9.0f} tokens/s   final loss {zero_loss:.4f}")
    ratio = single_tps / zero_tps
    print(
        f"ZeRO-2 overhead per token (time per token, ZeRO-2 / plain): {ratio:.2f}  target <= 1.3  {'PASS' if ratio <= 1.3 else 'FAIL'}"
    )

    import torch

    if torch.cuda.is_available():
        run(["deepspeed", "--num_gpus", "1", "--master_port", port(), "--module", "train", "--config",
             str(write_config(ws, "gpu", args, precision="bf16", micro_batch_size=args.gpu_batch, global_batch_size=args.gpu_batch))], ws, {})  # fmt: skip
        gpu_tps, gpu_loss = throughput(ws / "runs" / "gpu", args.skip)
        name = torch.cuda.get_device_name()
        peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
        mfu = 6 * n_params * gpu_tps / (peak * 1e12) if peak else float("nan")
        print(
            f"GPU ({name}), bf16, ZeRO-2, 1 rank: {gpu_tps:9.0f} tokens/s   final loss {gpu_loss:.4f}   MFU {mfu:.3f} (peak {peak} TFLOP/s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
