"""The training loop: ``deepspeed --num_gpus N --module train --config CONFIG [--resume]``.

One optimiser step consumes one *global batch* of ``global_batch_size`` blocks, drawn in a
per-epoch order that depends only on ``(seed, epoch)``. Rank ``r`` takes, at micro-step
``m``, the slice ``[(m * world + r) * micro, ... + micro)`` of it, so the set of blocks
behind every step is the same for any number of ranks (a 2-rank ZeRO run and a 1-process
run see the same data), and a resumed run, which starts at its checkpoint's step, sees
exactly the batches an uninterrupted run would have.

Read top to bottom: ``setup`` (resume point, data, model, engine: every check before any
work, in a run folder ``train`` holds with ``train.run_folder``), ``BatchPlan`` and ``micro_batches`` (which blocks each step uses; a
``DataLoader`` prepares the next batches while the step runs), ``train_step`` (one optimiser
step), ``due_checkpoints`` (epoch ends, ``save_every_steps``, the word-count schedule of
``babymerge.babylm.checkpoints``), ``Logger`` and ``train``, which strings them together. Rank 0
shows a tqdm bar and appends loss, learning rate, tokens/s, samples/s, tokens and words seen
to ``log.jsonl`` (and to TensorBoard with ``tensorboard: true``); the loss is read back from
the device only on the steps it is logged.

``train(config, on_step_end=f)`` calls ``f(step)`` on every rank after each step and its
checkpoints: the tests kill a rank from there (``tests/train_kill.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from babymerge.babylm.checkpoints import word_checkpoint_name, word_thresholds
from babymerge.errors import BabyMergeError

from . import checkpointing, distributed, run_folder
from .config import TrainConfig, load_config, validate
from .data import TrainingData, build_blocks, make_batch
from .engine import build_engine, deepspeed_config, grad_accum_steps
from .model import build_model

# What must not change between a run and its --resume (else the data order or the ZeRO
# partitioning would differ silently). The first four are checked before any work.
RESUME_INVARIANTS = ("world_size", "global_batch_size", "micro_batch_size", "seed", "n_blocks", "zero_stage")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="YAML training config (see train/configs/)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, e.g. --set optim.lr=3e-4 (repeatable)",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue from the output_dir's latest checkpoint")
    mode.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in an output_dir holding an earlier run (removes its checkpoints)",
    )
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # passed by the deepspeed launcher
    return p.parse_args(argv)


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    if not Path(path).is_dir():
        raise BabyMergeError(
            f"tokenizer {path!r} not found: train one with `python -m train.tokenizer --data DIR --out {path}`"
        )
    return AutoTokenizer.from_pretrained(path)


# -- setup ---------------------------------------------------------------------------------------
def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


class BatchPlan:
    """Which blocks make optimiser step ``step`` (its global batch) and this rank's micro-batches."""

    def __init__(self, n_blocks: int, seed: int, global_batch: int, micro: int, world: int, rank: int):
        self.n_blocks, self.seed, self.global_batch = n_blocks, seed, global_batch
        self.micro, self.world, self.rank = micro, world, rank
        self.steps_per_epoch = n_blocks // global_batch
        self.accum = global_batch // (micro * world)
        self._epoch, self._order = -1, None

    def global_batch_at(self, step: int) -> np.ndarray:
        epoch, k = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._order = epoch, epoch_order(self.seed, epoch, self.n_blocks)
        return self._order[k * self.global_batch : (k + 1) * self.global_batch]

    def micro_batch_at(self, step: int, m: int) -> np.ndarray:
        r = m * self.world + self.rank
        return self.global_batch_at(step)[r * self.micro : (r + 1) * self.micro]


@dataclass
class Run:
    """Everything ``setup`` builds, and the counters a checkpoint records."""

    config: TrainConfig
    dist: distributed.Dist
    out: Path
    tokenizer: object
    data: TrainingData
    image_token: int | None
    plan: BatchPlan
    total: int  # optimiser steps of the whole run
    engine: object
    invariants: dict
    word_thresholds: list[int]
    step: int = 0
    tokens_seen: int = 0
    words_seen: int = 0

    def trainer_state(self) -> dict:
        epoch = self.step / self.plan.steps_per_epoch
        return {
            "global_step": self.step, "epoch": epoch, "tokens_seen": self.tokens_seen, "words_seen": self.words_seen,
            **self.invariants, "config": self.config.to_dict(),
        }  # fmt: skip


def _check_resume(ckpt: Path, state: dict, now: dict) -> None:
    changed = {k: (state.get(k), v) for k, v in now.items() if state.get(k) != v}
    if changed:
        raise BabyMergeError(
            f"--resume from {ckpt}: these settings differ from the checkpoint's (was, now): {changed}; "
            "resume with the same number of ranks, batch sizes, seed, data and ZeRO config"
        )


def setup(config: TrainConfig, dist: distributed.Dist, resume: bool) -> Run:
    """Check, then build: resume point, data, model and engine (state loaded on resume), in a
    run folder this run holds (``train.run_folder``)."""
    import transformers

    transformers.utils.logging.disable_progress_bar()  # one bar (ours), not one per save
    world, micro, G = dist.world_size, config.micro_batch_size, config.global_batch_size
    out = Path(config.output_dir)
    resume_from = state = None
    if resume:
        resume_from = checkpointing.latest_checkpoint(out)
        state = checkpointing.read_trainer_state(resume_from)
        now = dict(world_size=world, global_batch_size=G, micro_batch_size=micro, seed=config.seed)
        _check_resume(resume_from, state, now)
        damaged = dist.first_error(checkpointing.damaged_engine_state(resume_from, dist.rank))
        if damaged:
            dist.fail(damaged)
    grad_accum_steps(config, world)  # batch sizes fit the number of ranks
    if config.engine == "deepspeed":
        deepspeed_config(config, world)  # the ZeRO file exists and every "auto" has a value
    tokenizer = load_tokenizer(config.tokenizer)

    data = build_blocks(config, tokenizer, is_builder=dist.is_main, barrier=dist.barrier)
    image_token = tokenizer.convert_tokens_to_ids("<image>") if config.model.kind == "babyllava" else None
    plan = BatchPlan(len(data), config.seed, G, micro, world, dist.rank)
    if plan.steps_per_epoch == 0:
        raise BabyMergeError(
            f"the data makes {len(data)} blocks of {config.model.context_length} tokens, "
            f"fewer than one global batch ({G}); lower global_batch_size"
        )
    total = config.epochs * plan.steps_per_epoch
    total = min(total, config.max_steps) if config.max_steps else total

    model = build_model(config, tokenizer, data.black)
    n_params = sum(p.numel() for p in model.parameters())  # before ZeRO-3 partitions them
    engine = build_engine(config, model, world, total)
    zero_stage = engine.zero_optimization_stage() if hasattr(engine, "zero_optimization_stage") else 0
    invariants = dict(world_size=world, global_batch_size=G, micro_batch_size=micro, n_blocks=len(data),
                      seed=config.seed, zero_stage=zero_stage)  # fmt: skip
    thresholds = word_thresholds(config.word_checkpoints, config.word_checkpoint_unit)
    run = Run(config, dist, out, tokenizer, data, image_token, plan, total, engine, invariants, thresholds)
    if resume_from is not None:
        # the rest of the invariants, still before DeepSpeed reads the state
        _check_resume(resume_from, state, {k: invariants[k] for k in ("n_blocks", "zero_stage")})
        state = checkpointing.load_engine_state(engine, resume_from)
        run.step, run.tokens_seen, run.words_seen = state["global_step"], state["tokens_seen"], state["words_seen"]
    if dist.is_main:
        checkpointing.remove_unpublished(out)
        words_per_epoch = int(np.asarray(data.blocks["n_words"], dtype=np.int64).sum())
        capped = " (max_steps)" if total < config.epochs * plan.steps_per_epoch else ""
        print(f"[train] {len(data)} blocks of {config.model.context_length} tokens ({words_per_epoch} words), "
              f"{plan.steps_per_epoch} steps/epoch x {config.epochs} epochs, {total} steps{capped}; "
              f"global batch {G} = {micro} x {world} ranks x {plan.accum} accumulation; "
              f"{n_params / 1e6:.2f}M parameters; {len(thresholds)} word-count checkpoints; "
              f"{'resuming at step ' + str(run.step) if run.step else 'from scratch'}", flush=True)  # fmt: skip
    return run


# -- batches -------------------------------------------------------------------------------------
class MicroBatches(torch.utils.data.Dataset):
    """This rank's micro-batches of steps ``start`` .. ``total - 1``, in order: item ``i`` is
    micro-step ``i % accum`` of step ``start + i // accum``."""

    def __init__(self, data: TrainingData, plan: BatchPlan, image_token: int | None, start: int, total: int):
        self.data, self.plan, self.image_token, self.start, self.total = data, plan, image_token, start, total

    def __len__(self) -> int:
        return (self.total - self.start) * self.plan.accum

    def __getitem__(self, i: int) -> dict:
        step, m = divmod(i, self.plan.accum)
        return make_batch(self.data, self.plan.micro_batch_at(self.start + step, m), self.image_token)


def micro_batches(run: Run):
    """An iterator over the run's remaining micro-batches, prepared ahead by a ``DataLoader``:
    worker processes and pinned memory on a GPU, in this process on CPU (``dataloader_workers``).
    The order is fixed by the plan, so the workers change nothing but the timing."""
    cuda = torch.cuda.is_available()
    workers = run.config.dataloader_workers if run.config.dataloader_workers >= 0 else (2 if cuda else 0)
    loader = torch.utils.data.DataLoader(
        MicroBatches(run.data, run.plan, run.image_token, run.step, run.total),
        batch_size=None,  # items are whole micro-batches
        shuffle=False,
        num_workers=workers,
        pin_memory=cuda,
        generator=torch.Generator(),  # its seed draw leaves the global RNG alone
        multiprocessing_context="fork" if workers else None,  # the memory-mapped blocks are shared, not pickled
    )
    return iter(loader)


# -- one step ------------------------------------------------------------------------------------
def train_step(run: Run, batches) -> torch.Tensor:
    """One optimiser step: forward and backward over ``accum`` micro-batches (the engine steps
    the optimiser at the accumulation boundary). Returns the mean loss, left on the device."""
    engine, device = run.engine, run.engine.device
    loss_sum = None
    for batch in islice(batches, run.plan.accum):
        batch = {name: t.to(device, non_blocking=True) for name, t in batch.items()}
        loss = engine(**batch).loss
        engine.backward(loss)
        engine.step()
        loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
    return loss_sum / run.plan.accum


def due_checkpoints(run: Run, words_before: int) -> list[str]:
    """Names of the checkpoints due after the step just taken: every word-count threshold
    crossed by it (first step with ``words_seen >= threshold``), then the epoch's end, every
    ``save_every_steps`` and the last step (``ckpt-*`` last, so ``latest`` points at it)."""
    names = [word_checkpoint_name(t) for t in run.word_thresholds if words_before < t <= run.words_seen]
    step, every = run.step, run.config.save_every_steps
    if step % run.plan.steps_per_epoch == 0:
        names.append(f"ckpt-ep{step // run.plan.steps_per_epoch}")
    elif (every and step % every == 0) or step == run.total:
        names.append(f"ckpt-step{step}")
    return names


class Logger:
    """Rank 0's tqdm bar, ``log.jsonl`` and TensorBoard. Rates are over the steps since the
    previous record, so reading the loss only when logging still times every step."""

    def __init__(self, run: Run):
        self.run, self.main = run, run.dist.is_main
        self.file = open(run.out / checkpointing.LOG, "a") if self.main else None
        self.board = _tensorboard(run.out) if run.config.tensorboard and self.main else None
        self.bar = tqdm(total=run.total, initial=run.step, desc="training", unit="step", disable=not self.main,
                        dynamic_ncols=True)  # fmt: skip
        self.since, self.tokens_since, self.samples_since = time.perf_counter(), 0, 0

    def wants(self, step: int) -> bool:
        """The same answer on every rank: the loss is averaged over ranks when logged."""
        return step % self.run.config.log_every_steps == 0 or step == self.run.total or step == 1

    def step(self, loss: torch.Tensor, lr: float, batch_tokens: int) -> None:
        run = self.run
        self.tokens_since += batch_tokens
        self.samples_since += run.plan.global_batch
        self.bar.update(1)
        if not self.wants(run.step):
            return
        loss = run.dist.mean(loss.item())  # the one device sync, on logged steps only
        seconds = time.perf_counter() - self.since
        epoch = run.step / run.plan.steps_per_epoch
        record = {
            "step": run.step, "epoch": round(epoch, 4), "loss": loss, "lr": lr,
            "tokens_per_s": self.tokens_since / seconds, "samples_per_s": self.samples_since / seconds,
            "tokens_seen": run.tokens_seen, "words_seen": run.words_seen,
        }  # fmt: skip
        self.since, self.tokens_since, self.samples_since = time.perf_counter(), 0, 0
        self.bar.set_postfix(loss=f"{loss:.3f}", epoch=(run.step - 1) // run.plan.steps_per_epoch + 1)
        if self.file:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        if self.board:
            for key in ("loss", "lr", "tokens_per_s", "samples_per_s"):
                self.board.add_scalar(f"train/{key}", record[key], run.step)

    def saved(self, paths: list[Path]) -> None:
        if self.main:
            self.bar.write(f"[train] step {self.run.step}: saved {', '.join(str(p) for p in paths)}")

    def close(self) -> None:
        self.bar.close()
        for f in (self.file, self.board):
            if f:
                f.close()


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise BabyMergeError("tensorboard: true needs the tensorboard package: pip install tensorboard") from err
    return SummaryWriter(out / checkpointing.TENSORBOARD)


# -- the loop ------------------------------------------------------------------------------------
def train(config: TrainConfig, resume: bool = False, overwrite: bool = False, on_step_end=None) -> Path:
    """Train as ``config`` says; returns the output directory. ``on_step_end(step)`` is called
    on every rank after each step and its checkpoints (the tests' fault injection)."""
    validate(config)
    dist = distributed.setup(config.engine)
    with run_folder.claimed(Path(config.output_dir), dist, resume, overwrite):
        return _train(setup(config, dist, resume), on_step_end)


def _train(run: Run, on_step_end) -> Path:
    config = run.config
    n_tokens = np.asarray(run.data.blocks["n_tokens"], dtype=np.int64)
    n_words = np.asarray(run.data.blocks["n_words"], dtype=np.int64)
    logger = Logger(run)
    try:  # the bar ends its line before an error is printed
        batches = micro_batches(run)
        run.engine.module.train()
        while run.step < run.total:
            blocks = run.plan.global_batch_at(run.step)
            lr = run.engine.get_lr()[0]  # the rate this step uses (the scheduler steps after it)
            loss = train_step(run, batches)
            words_before = run.words_seen
            run.step += 1
            run.tokens_seen += int(n_tokens[blocks].sum())
            run.words_seen += int(n_words[blocks].sum())
            logger.step(loss, lr, int(n_tokens[blocks].sum()))
            names = due_checkpoints(run, words_before)
            if names:
                paths = checkpointing.save_checkpoints(
                    run.engine,
                    run.tokenizer,
                    run.out,
                    names,
                    run.trainer_state(),
                    run.dist,
                    config.keep_optimizer_states,
                )
                logger.saved(paths)
            if on_step_end is not None:
                on_step_end(run.step)
    finally:
        logger.close()
    run.dist.barrier()
    return run.out


def main(argv=None, on_step_end=None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(args.config, args.set)
        train(config, resume=args.resume, overwrite=args.overwrite, on_step_end=on_step_end)
    except BabyMergeError as err:
        if not isinstance(err, distributed.PeerError):  # a PeerError: rank 0 printed why
            print(f"error: {err}", file=sys.stderr)
        distributed.exit_on_error(2)
        return 2
    return 0
