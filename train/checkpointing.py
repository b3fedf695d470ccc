"""Checkpoints that babymerge merges directly and that ``--resume`` continues from.

A run folder looks like::

    runs/mm/
      ckpt-ep1/                 Hugging Face checkpoint: config.json, model.safetensors, tokenizer
        trainer_state.json      epoch, step, tokens seen, the training config
        deepspeed/state/        DeepSpeed (or plain PyTorch) model + optimiser + scheduler state
      ckpt-step500/ ...
      chck_1M/ ... chck_1000M/  word-count checkpoints (weights; engine state only when newest)
      latest                    name of the newest complete checkpoint
      log.jsonl                 one record per logged step (train.loop)
      tensorboard/              with tensorboard: true
      .train.lock               held by the run writing the folder (train.run_folder)

**Word-count checkpoints** follow the BabyLM 2025 schedule and are named as the evaluation
pipeline names revisions, ``chck_<N>M`` (both in ``babymerge.babylm.checkpoints``). A checkpoint is
saved at the first optimiser-step boundary at which ``words_seen >= threshold`` (words as
``train.data`` counts them), so it holds slightly more words than its name says;
``trainer_state.json`` has the exact ``"words_seen"``. When one step crosses
several thresholds, each gets its folder (same weights); when a step is also an epoch end
or a ``save_every_steps`` step, ``ckpt-*`` is written last and ``latest`` points at it.

Publishing is crash-safe: every rank writes into ``.tmp-<name>``, rank 0 renames it to
``<name>`` once all ranks are done, and only then (after all checkpoints of that step) points
``latest`` at it (itself written to a temporary file and renamed); a resumed run redoes the
steps after ``latest``, rewriting any checkpoint of theirs a crash left. A crash or
``kill -9`` at any moment leaves either the old
``latest`` or the new one, never a half-written checkpoint behind the pointer. The optimiser
states of older checkpoints are deleted (``keep_optimizer_states``); their weights stay, since
those are what a merge sweep over checkpoints needs.
"""

from __future__ import annotations

import json
import pickle
import shutil
import zipfile
from contextlib import nullcontext
from pathlib import Path

from safetensors import SafetensorError

from babymerge.errors import BabyMergeError
from babymerge.publish import write_file_atomic

from .distributed import Dist

STATE_DIR, TAG, TRAINER_STATE, LATEST = "deepspeed", "state", "trainer_state.json", "latest"
LOG, TENSORBOARD = "log.jsonl", "tensorboard"


def _gathered(engine):
    """Under ZeRO-3 each rank holds a slice of every parameter: gather them to save weights."""
    if getattr(engine, "zero_optimization_stage", lambda: 0)() == 3:
        import deepspeed

        return deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=None)
    return nullcontext()


def save_checkpoints(
    engine, tokenizer, out: Path, names: list[str], state: dict, dist: Dist, keep_optimizer_states: int = 1
) -> list[Path]:
    """Write the checkpoints due at one step (all with the same weights and ``state``), the
    last one with the engine state, then point ``latest`` at it."""
    paths = [_write(engine, tokenizer, out, name, state, dist, with_engine_state=name == names[-1]) for name in names]
    if dist.is_main:
        write_file_atomic(out / LATEST, names[-1] + "\n")
        prune_optimizer_states(out, keep_optimizer_states)
    dist.barrier()
    return paths


WRITE_ERRORS = (OSError, RuntimeError, SafetensorError)  # torch.save reports a failed write as a RuntimeError


def _write(engine, tokenizer, out: Path, name: str, state: dict, dist: Dist, with_engine_state: bool) -> Path:
    """Weights + tokenizer + trainer state (+ engine state) into ``.tmp-name``, renamed to ``name``.

    A write that fails (a full disk, a quota) ends the run with one line: every rank's own
    engine state first (that rank reports it; DeepSpeed's collectives inside the save leave no
    safe point to agree on it), then rank 0's weights, which every rank learns of. ``latest``
    still names the previous checkpoint; ``.tmp-name`` is removed, or by the next run."""
    tmp, final = out / f".tmp-{name}", out / name
    if dist.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    if with_engine_state:
        try:
            engine.save_checkpoint(str(tmp / STATE_DIR), tag=TAG, client_state=state, save_latest=False)
        except WRITE_ERRORS as err:
            raise BabyMergeError(_write_error(out, name, err)) from None
    error = None
    with _gathered(engine):
        if dist.is_main:
            try:
                engine.module.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
                write_file_atomic(tmp / TRAINER_STATE, json.dumps(state, indent=2))
            except WRITE_ERRORS as err:
                error = _write_error(out, name, err)
    error = dist.first_error(error)
    if error is not None:
        if dist.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        dist.fail(error)
    if dist.is_main:
        shutil.rmtree(final, ignore_errors=True)  # a re-run of a step a crash interrupted
        tmp.rename(final)
    return final


def _write_error(out: Path, name: str, err: Exception) -> str:
    pointer = out / LATEST
    latest = pointer.read_text().strip() if pointer.is_file() else None
    after = (f"rerun with --resume: {latest!r} (named by {pointer}) is intact" if latest
             else "rerun with --overwrite: no checkpoint was complete yet")  # fmt: skip
    reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    return f"could not write checkpoint {name!r} in {str(out)!r}: {reason}; free space (or fix the folder) and {after}"


def checkpoints(out: Path) -> list[Path]:
    """Published checkpoints, oldest first (by optimiser step)."""
    found = [p for p in out.iterdir() if (p / TRAINER_STATE).is_file()] if out.is_dir() else []
    return sorted(found, key=lambda p: (json.loads((p / TRAINER_STATE).read_text())["global_step"], p.name))


def prune_optimizer_states(out: Path, keep: int) -> None:
    if keep <= 0:
        return
    latest = out / (out / LATEST).read_text().strip()
    with_state = [p for p in checkpoints(out) if (p / STATE_DIR).is_dir()]
    for p in with_state[:-keep]:
        if p != latest:
            shutil.rmtree(p / STATE_DIR, ignore_errors=True)


def read_trainer_state(ckpt: Path) -> dict:
    return json.loads((ckpt / TRAINER_STATE).read_text())


def latest_checkpoint(out: Path) -> Path:
    """The checkpoint ``latest`` points to, checked to be complete and resumable."""
    pointer = out / LATEST
    if not pointer.is_file():
        raise BabyMergeError(
            f"--resume: no checkpoint in {str(out)!r} (no '{LATEST}' file); run without --resume to start training"
        )
    ckpt = out / pointer.read_text().strip()
    if not (ckpt / TRAINER_STATE).is_file() or not (ckpt / STATE_DIR / TAG).is_dir():
        raise BabyMergeError(
            f"--resume: {str(ckpt)!r} (named by {pointer}) is missing {TRAINER_STATE} or its optimiser state"
        )
    return ckpt


def damaged_engine_state(ckpt: Path, rank: int) -> str | None:
    """Why the engine-state files ``rank`` reads from ``ckpt`` are damaged, or None.

    They are zip archives (``torch.save``) whose members carry CRCs: a truncated or corrupted
    file is found here, by every rank before any of them loads (DeepSpeed's load has
    collectives inside, so a rank failing there leaves the others waiting on it)."""
    state_dir = ckpt / STATE_DIR / TAG
    for f in sorted(state_dir.glob("*.pt")):
        if f.name.startswith("zero_pp_rank_") and not f.name.startswith(f"zero_pp_rank_{rank}_"):
            continue  # another rank's shard
        try:
            with zipfile.ZipFile(f) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            bad = str(err) or type(err).__name__
        if bad is not None:
            return (
                f"--resume: the engine state {str(f)!r} is damaged ({bad}); start over with --overwrite, or write "
                f"into {str(ckpt.parent / LATEST)!r} the name of an earlier checkpoint that has a {STATE_DIR}/ folder"
            )
    return None


def load_engine_state(engine, ckpt: Path) -> dict:
    """Load ``ckpt``'s engine state (weights, optimiser, scheduler) into ``engine``; its client state."""
    try:
        _, state = engine.load_checkpoint(str(ckpt / STATE_DIR), tag=TAG)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as err:
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise BabyMergeError(
            f"--resume: cannot read the engine state in {str(ckpt / STATE_DIR)!r} ({reason}): the checkpoint is "
            f"damaged; start over with --overwrite, or write into {str(ckpt.parent / LATEST)!r} the name of an "
            f"earlier checkpoint that has a {STATE_DIR}/ folder"
        ) from None
    return state


def remove_unpublished(out: Path) -> None:
    """Delete ``.tmp-*`` folders a crash left behind (never pointed to by ``latest``)."""
    for p in out.glob(".tmp-*") if out.is_dir() else []:
        shutil.rmtree(p, ignore_errors=True)
