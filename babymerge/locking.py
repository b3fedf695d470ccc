"""Locks on files inside an output folder, with ``flock``: ``exclusive_lock`` (one writer per
folder, others refused), ``waiting_lock`` (short sections many writers take in turn) and
``try_lock`` (claim one piece of work; skip it when another process holds it).

The OS releases the lock when its holder exits, however it exits (``kill -9`` included), so
a crashed run never blocks the next one. The file says who holds it (pid, host, since when),
so a refusal can name the holder. The file itself is left in place, emptied, when the holder
is done: removing a lock file races with a second process opening it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import BabyMergeError


def holder_description() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"


@contextlib.contextmanager
def exclusive_lock(path: Path, refusal: Callable[[str], str]) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` for the block; when another process holds it, raise
    ``BabyMergeError(refusal(holder))``, ``holder`` being what that process wrote there."""
    try:
        f = open(path, "a+b", buffering=0)  # unbuffered: a failed write leaves nothing to flush at close
    except OSError as err:
        raise BabyMergeError(
            f"cannot create the lock file {str(path)!r}: {err.strerror}; choose a writable folder"
        ) from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().decode(errors="replace").strip() or "a running process"
        f.close()
        raise BabyMergeError(refusal(holder)) from None
    # Who holds the lock only serves a refusal's message: on a full disk the lock holds without it,
    # and the holder's own first write reports the disk.
    with contextlib.suppress(OSError):
        f.truncate(0)
        f.write((holder_description() + "\n").encode())
    try:
        yield
    finally:
        f.truncate(0)
        f.close()


def _open_lock_file(path: Path):
    try:
        return open(path, "a+b", buffering=0)
    except OSError as err:
        raise BabyMergeError(
            f"cannot create the lock file {str(path)!r}: {err.strerror}; choose a writable folder"
        ) from None


@contextlib.contextmanager
def waiting_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` for the block, waiting while another process holds it:
    for short critical sections (appending a line, rewriting a report) shared by many writers."""
    f = _open_lock_file(path)
    try:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield
    finally:
        f.close()  # closing releases the lock


@contextlib.contextmanager
def try_lock(path: Path) -> Iterator[bool]:
    """Try to take an exclusive lock on ``path`` without waiting; yields whether it was taken.
    Held for the block; the OS releases it if the holder dies."""
    f = _open_lock_file(path)
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        with contextlib.suppress(OSError):
            f.truncate(0)
            f.write((holder_description() + "\n").encode())
        yield True
    finally:
        f.close()
