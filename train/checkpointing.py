"""Checkpoints that babymerge merges directly and that ``--resume`` continues from.

A run folder looks like::

    runs/mm/
      ckpt-ep1/                 Hugging Face checkpoint: config.json, model.safetensors, tokenizer
        trainer_state.json      epoch, step, tokens seen, the training config
        deepspeed/state/        DeepSpeed (or plain PyTorch) model + optimiser + scheduler state
      ckpt-step500/ ...
      latest                    name of the newest complete checkpoint
      log.jsonl

Publishing is crash-safe: every rank writes into ``.tmp-<name>``, rank 0 renames it to
``<name>`` once all ranks are done, and only then points ``latest`` at it (itself written to a
temporary file and renamed). A crash or ``kill -9`` at any moment leaves either the old
``latest`` or the new one, never a half-written checkpoint behind the pointer. The optimiser
states of older checkpoints are deleted (``keep_optimizer_states``); their weights stay, since
those are what a merge sweep over checkpoints needs.
"""

from __future__ import annotations

import json
import shutil
from contextlib import nullcontext
from pathlib import Path

from babymerge.errors import BabyMergeError
from babymerge.output import write_file_atomic

from .distributed import Dist

STATE_DIR, TAG, TRAINER_STATE, LATEST = "deepspeed", "state", "trainer_state.json", "latest"


def _gathered(engine):
    """Under ZeRO-3 each rank holds a slice of every parameter: gather them to save weights."""
    if getattr(engine, "zero_optimization_stage", lambda: 0)() == 3:
        import deepspeed

        return deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=None)
    return nullcontext()


def save_checkpoint(engine, tokenizer, out: Path, name: str, state: dict, dist: Dist, keep_optimizer_states: int = 1) -> Path:
    """Write weights + tokenizer + trainer state + engine state as ``out/name``, then publish it."""
    tmp, final = out / f".tmp-{name}", out / name
    if dist.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    engine.save_checkpoint(str(tmp / STATE_DIR), tag=TAG, client_state=state, save_latest=False)
    with _gathered(engine):
        if dist.is_main:
            engine.module.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            write_file_atomic(tmp / TRAINER_STATE, json.dumps(state, indent=2))
    dist.barrier()
    if dist.is_main:
        shutil.rmtree(final, ignore_errors=True)  # a re-run of a step a crash interrupted
        tmp.rename(final)
        write_file_atomic(out / LATEST, name + "\n")
        prune_optimizer_states(out, keep_optimizer_states)
    dist.barrier()
    return final


def checkpoints(out: Path) -> list[Path]:
    """Published checkpoints, oldest first (by optimiser step)."""
    found = [p for p in out.iterdir() if (p / TRAINER_STATE).is_file()] if out.is_dir() else []
    return sorted(found, key=lambda p: json.loads((p / TRAINER_STATE).read_text())["global_step"])


def prune_optimizer_states(out: Path, keep: int) -> None:
    if keep <= 0:
        return
    latest = out / (out / LATEST).read_text().strip()
    with_state = [p for p in checkpoints(out) if (p / STATE_DIR).is_dir()]
    for p in with_state[:-keep]:
        if p != latest:
            shutil.rmtree(p / STATE_DIR, ignore_errors=True)


def latest_checkpoint(out: Path) -> Path:
    """The checkpoint ``latest`` points to, checked to be complete and resumable."""
    pointer = out / LATEST
    if not pointer.is_file():
        raise BabyMergeError(f"--resume: no checkpoint in {str(out)!r} (no '{LATEST}' file); run without --resume to start training")
    ckpt = out / pointer.read_text().strip()
    if not (ckpt / TRAINER_STATE).is_file() or not (ckpt / STATE_DIR / TAG).is_dir():
        raise BabyMergeError(f"--resume: {str(ckpt)!r} (named by {pointer}) is missing {TRAINER_STATE} or its optimiser state")
    return ckpt


def remove_unpublished(out: Path) -> None:
    """Delete ``.tmp-*`` folders a crash left behind (never pointed to by ``latest``)."""
    for p in out.glob(".tmp-*") if out.is_dir() else []:
        shutil.rmtree(p, ignore_errors=True)
