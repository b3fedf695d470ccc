"""The training loop: ``deepspeed --num_gpus N --module train --config CONFIG [--resume]``.

One optimiser step consumes one *global batch* of ``global_batch_size`` blocks, drawn in a
per-epoch order that depends only on ``(seed, epoch)``. Rank ``r`` takes, at micro-step
``m``, the slice ``[(m * world + r) * micro, ... + micro)`` of it, so the set of blocks
behind every step is the same for any number of ranks (a 2-rank ZeRO run and a 1-process
run see the same data), and a resumed run, which starts at its checkpoint's step, sees
exactly the batches an uninterrupted run would have.

Checkpoints are written at the end of every epoch (``ckpt-ep<E>``) and every
``save_every_steps`` steps (``ckpt-step<S>``); see ``train.checkpointing``. Rank 0 shows a
tqdm bar and appends loss, learning rate, tokens/s and samples/s to ``log.jsonl`` (and to
TensorBoard with ``tensorboard: true``).

For the fault-tolerance test only: ``BABYMERGE_TRAIN_KILL_AT=RANK:STEP`` makes that rank
``SIGKILL`` itself right after optimiser step STEP, as a crashed node would.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from babymerge.errors import BabyMergeError

from . import checkpointing, distributed
from .config import load_config
from .data import build_blocks, make_batch
from .engine import build_engine, grad_accum_steps
from .model import build_model

# What must not change between a run and its --resume (else the data order or the ZeRO
# partitioning would differ silently).
RESUME_INVARIANTS = ("world_size", "global_batch_size", "micro_batch_size", "n_blocks", "seed", "zero_stage")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="YAML training config (see train/configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one config value, e.g. --set optim.lr=3e-4 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from the output_dir's latest checkpoint")
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # passed by the deepspeed launcher
    return p.parse_args(argv)


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    if not Path(path).is_dir():
        raise BabyMergeError(f"tokenizer {path!r} not found: train one with `python -m train.tokenizer --data DIR --out {path}`")
    return AutoTokenizer.from_pretrained(path)


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def _kill_switch(rank: int):
    spec = os.environ.get("BABYMERGE_TRAIN_KILL_AT")
    if spec:
        r, s = (int(x) for x in spec.split(":"))
        return s if r == rank else None
    return None


def train(config, resume: bool = False) -> Path:
    """Train as ``config`` says; returns the output directory."""
    import transformers

    transformers.utils.logging.disable_progress_bar()  # one bar (ours), not one per save
    dist = distributed.setup(config.engine)
    out = Path(config.output_dir)
    if resume:
        resume_from = checkpointing.latest_checkpoint(out)
    else:
        resume_from = None
        if (out / checkpointing.LATEST).exists():
            raise BabyMergeError(f"{str(out)!r} already holds a run; pass --resume to continue it or choose another output_dir")
    tokenizer = load_tokenizer(config.tokenizer)
    data = build_blocks(config, tokenizer, is_builder=dist.is_main, barrier=dist.barrier)
    image_token = tokenizer.convert_tokens_to_ids("<image>") if config.model.kind == "babyllava" else None

    world, micro, G = dist.world_size, config.micro_batch_size, config.global_batch_size
    accum = grad_accum_steps(config, world)
    steps_per_epoch = len(data) // G
    if steps_per_epoch == 0:
        raise BabyMergeError(f"the data makes {len(data)} blocks of {config.model.context_length} tokens, fewer than one global batch ({G}); lower global_batch_size")
    total = config.epochs * steps_per_epoch
    total = min(total, config.max_steps) if config.max_steps else total

    model = build_model(config, tokenizer, data.black)
    n_params = sum(p.numel() for p in model.parameters())  # before ZeRO-3 partitions them
    engine = build_engine(config, model, world, total)
    device = engine.device
    zero_stage = engine.zero_optimization_stage() if hasattr(engine, "zero_optimization_stage") else 0
    invariants = dict(world_size=world, global_batch_size=G, micro_batch_size=micro, n_blocks=len(data), seed=config.seed, zero_stage=zero_stage)
    step, tokens_seen = 0, 0
    if resume_from is not None:
        _, state = engine.load_checkpoint(str(resume_from / checkpointing.STATE_DIR), tag=checkpointing.TAG)
        changed = {k: (state[k], invariants[k]) for k in RESUME_INVARIANTS if state.get(k) != invariants[k]}
        if changed:
            raise BabyMergeError(f"--resume from {resume_from}: these settings differ from the checkpoint's (was, now): {changed}")
        step, tokens_seen = state["global_step"], state["tokens_seen"]
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        checkpointing.remove_unpublished(out)
        print(f"[train] {len(data)} blocks of {config.model.context_length} tokens, {steps_per_epoch} steps/epoch x {config.epochs} epochs, "
              f"{total} steps{' (max_steps)' if total < config.epochs * steps_per_epoch else ''}; global batch {G} = {micro} x {world} ranks "
              f"x {accum} accumulation; {n_params / 1e6:.2f}M parameters; "
              f"{'resuming at step ' + str(step) if step else 'from scratch'}", flush=True)  # fmt: skip
    log = open(out / "log.jsonl", "a") if dist.is_main else None
    board = _tensorboard(out) if config.tensorboard and dist.is_main else None
    kill_at = _kill_switch(dist.rank)
    n_tokens = np.asarray(data.blocks["n_tokens"], dtype=np.int64)

    model.train()
    bar = tqdm(total=total, initial=step, desc="training", unit="step", disable=not dist.is_main, dynamic_ncols=True)
    order, order_epoch = None, -1
    while step < total:
        epoch, k = divmod(step, steps_per_epoch)
        if epoch != order_epoch:
            order, order_epoch = epoch_order(config.seed, epoch, len(data)), epoch
        batch_index = order[k * G : (k + 1) * G]
        lr = engine.get_lr()[0]  # the rate this step uses (the scheduler steps after it)
        start = time.perf_counter()
        losses = []
        for m in range(accum):
            index = batch_index[(m * world + dist.rank) * micro : (m * world + dist.rank + 1) * micro]
            batch = {name: t.to(device) for name, t in make_batch(data, index, image_token).items()}
            loss = engine(**batch).loss
            engine.backward(loss)
            engine.step()
            losses.append(loss.item())
        step += 1
        loss = dist.mean(sum(losses) / len(losses))
        seconds = time.perf_counter() - start
        batch_tokens = int(n_tokens[batch_index].sum())
        tokens_seen += batch_tokens
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", epoch=epoch + 1)
        if log and (step % config.log_every_steps == 0 or step == total or step == 1):
            record = {"step": step, "epoch": round(step / steps_per_epoch, 4), "loss": loss, "lr": lr,
                      "tokens_per_s": batch_tokens / seconds, "samples_per_s": G / seconds, "tokens_seen": tokens_seen}  # fmt: skip
            log.write(json.dumps(record) + "\n")
            log.flush()
            if board:
                for key in ("loss", "lr", "tokens_per_s", "samples_per_s"):
                    board.add_scalar(f"train/{key}", record[key], step)
        end_of_epoch = step % steps_per_epoch == 0
        if end_of_epoch or (config.save_every_steps and step % config.save_every_steps == 0) or step == total:
            name = f"ckpt-ep{step // steps_per_epoch}" if end_of_epoch else f"ckpt-step{step}"
            state = {"global_step": step, "epoch": step / steps_per_epoch, "tokens_seen": tokens_seen, **invariants, "config": config.to_dict()}
            path = checkpointing.save_checkpoint(engine, tokenizer, out, name, state, dist, config.keep_optimizer_states)
            if dist.is_main:
                bar.write(f"[train] step {step}: saved {path}")
        if kill_at == step:
            os.kill(os.getpid(), signal.SIGKILL)
    bar.close()
    if log:
        log.close()
    if board:
        board.close()
    dist.barrier()
    return out


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise BabyMergeError("tensorboard: true needs the tensorboard package: pip install tensorboard") from err
    return SummaryWriter(out / "tensorboard")


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(args.config, args.set)
        train(config, resume=args.resume)
    except BabyMergeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
