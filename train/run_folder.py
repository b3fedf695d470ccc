"""The run folder (``output_dir``): one training run writes it at a time, and a fresh run never
mixes with an earlier one.

Rank 0 holds an exclusive lock on ``<output_dir>/.train.lock`` for the run's lifetime
(``babymerge.locking``): a second run into the same folder is refused in one line naming the
holder, before it reads or writes anything there. A fresh run (no ``--resume``) refuses a folder
holding an earlier run's output (its checkpoints, ``latest``, ``log.jsonl``) unless told
``--overwrite``, which first removes that output and nothing else: only what training writes.
A folder the run created itself and that ends holding nothing but the lock file (a run refused
or failed before its first record) is removed again.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from babymerge.errors import BabyMergeError
from babymerge.locking import exclusive_lock

from . import checkpointing
from .distributed import Dist

LOCK = ".train.lock"


def earlier_output(out: Path) -> list[Path]:
    """What a training run wrote into ``out``: checkpoints (published or not), ``latest``,
    ``log.jsonl`` and TensorBoard's event files."""
    if not out.is_dir():
        return []
    found = sorted(p for p in out.iterdir() if (p / checkpointing.TRAINER_STATE).is_file())
    found += sorted(out.glob(".tmp-*"))
    found += [p for p in (out / checkpointing.LATEST, out / checkpointing.LOG) if p.is_file()]
    return found + sorted((out / checkpointing.TENSORBOARD).glob("events.out.tfevents.*"))


def _check_or_clear(out: Path, resume: bool, overwrite: bool) -> None:
    earlier = earlier_output(out)
    if resume:
        if earlier and not (out / checkpointing.LATEST).is_file():
            raise BabyMergeError(
                f"--resume: {str(out)!r} holds an earlier run's output but no complete checkpoint "
                f"(no '{checkpointing.LATEST}' file); pass --overwrite instead of --resume to start over"
            )
        return
    if not earlier:
        return
    if not overwrite:
        raise BabyMergeError(
            f"{str(out)!r} already holds a run; pass --resume to continue it, --overwrite to start over "
            f"(removes its {len(earlier)} checkpoint folders and files), or choose another output_dir"
        )
    for p in earlier:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    with contextlib.suppress(OSError):
        (out / checkpointing.TENSORBOARD).rmdir()  # only if empty
    print(f"[train] --overwrite: removed the earlier run's {len(earlier)} checkpoint folders and files from {out}")


def _make_dir(out: Path) -> bool:
    """Create ``out``; True if it did not exist before."""
    try:
        out.mkdir(parents=True)
        return True
    except FileExistsError:
        if not out.is_dir():
            raise BabyMergeError(
                f"output_dir {str(out)!r} is a file, not a folder; choose another output_dir"
            ) from None
        return False
    except OSError as err:
        raise BabyMergeError(
            f"cannot create output_dir {str(out)!r}: {err.strerror}; choose a writable output_dir"
        ) from None


def _remove_if_only_the_lock(out: Path) -> None:
    if [p.name for p in out.iterdir()] == [LOCK]:
        (out / LOCK).unlink()
        out.rmdir()


@contextlib.contextmanager
def claimed(out: Path, dist: Dist, resume: bool, overwrite: bool) -> Iterator[None]:
    """Hold ``out`` for the block (rank 0 locks it); every rank raises if rank 0 refuses it."""
    with contextlib.ExitStack() as stack:
        refusal = None
        if dist.is_main:
            try:
                if _make_dir(out):
                    stack.callback(_remove_if_only_the_lock, out)
                stack.enter_context(
                    exclusive_lock(
                        out / LOCK,
                        lambda holder: (
                            f"{str(out)!r} is in use by another training run ({holder}); "
                            "wait for it to finish or choose another output_dir"
                        ),
                    )
                )
                _check_or_clear(out, resume, overwrite)
            except BabyMergeError as err:
                refusal = str(err)
        refusal = dist.first_error(refusal)  # only rank 0 checked
        if refusal is not None:
            dist.fail(refusal)
        yield
