"""Temporary names that record their owner, so that what a killed writer left is recognised and removed.

A writer of ``parent/final`` works under ``.final.tmp-<host>~<pid>-<random>`` (``.final.old-...``
for an output moved aside) and renames it when done (``babymerge.publish``). After SIGKILL the
name stays; the next writer of the same ``final`` removes it, once its owner process is gone, and
never the temporaries of a writer still running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import socket
from pathlib import Path

logger = logging.getLogger(__name__)


def _owner_tag() -> str:
    """``<host>~<pid>``: who owns a temporary name (host names hold no ``~``)."""
    return f"{socket.gethostname()}~{os.getpid()}"


def temp_name(final: str, kind: str) -> str:
    return f".{final}.{kind}-{_owner_tag()}-{secrets.token_hex(4)}"


def _is_stale(name: str, final: str, kind: str) -> bool:
    """Is ``name`` a temporary of ``final`` whose owner process is gone? Only names of this
    host are judged (a pid says nothing about another machine sharing the file system); a
    name we cannot parse, or whose pid is alive (even if reused by another program), is left."""
    prefix = f".{final}.{kind}-"
    if not name.startswith(prefix):
        return False
    owner, _, _token = name[len(prefix) :].rpartition("-")
    host, sep, pid = owner.rpartition("~")
    if not sep or host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def remove_stale_temporaries(parent: Path, final: str) -> list[Path]:
    """Remove what killed writers of ``parent/final`` left behind (``.final.tmp-*``, ``.final.old-*``)."""
    removed = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        if any(_is_stale(name, final, kind) for kind in ("tmp", "old")):
            path = parent / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    path.unlink()
            removed.append(path)
    if removed:
        logger.warning(f"removed {len(removed)} temporary output(s) of killed runs: {[p.name for p in removed]}")
    return removed
