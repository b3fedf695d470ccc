"""Rank, world size and the two collectives the loop needs, the same with or without a launcher.

Under ``deepspeed --num_gpus N --module train`` every rank finds RANK/WORLD_SIZE/... in its
environment; started as ``python -m train`` the DeepSpeed engine still needs a process group,
so a one-rank one is made on localhost. On CPU the cores are shared out between the local
ranks (otherwise every rank starts one thread per core and they fight over them).
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from babymerge.errors import BabyMergeError


class PeerError(BabyMergeError):
    """An error every rank stops for and rank 0 reports; the other ranks stop without repeating it."""


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()

    def first_error(self, error: str | None) -> str | None:
        """The first rank's error message of those that had one, on every rank."""
        if self.world_size == 1:
            return error
        errors = [None] * self.world_size
        torch.distributed.all_gather_object(errors, error)
        return next((e for e in errors if e is not None), None)

    def fail(self, message: str):
        """Raise ``message`` on every rank; rank 0 alone reports it (the others raise PeerError)."""
        raise (BabyMergeError if self.is_main else PeerError)(message)

    def mean(self, value: float) -> float:
        if self.world_size == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        torch.distributed.all_reduce(t)
        return t.item() / self.world_size


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup(engine: str) -> Dist:
    if engine == "torch":
        return Dist()
    import deepspeed

    if "RANK" in os.environ:
        watch_launcher()
    else:  # started without a launcher: a process group of one
        os.environ.update(
            RANK="0",
            LOCAL_RANK="0",
            WORLD_SIZE="1",
            LOCAL_WORLD_SIZE="1",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(_free_port()),
        )
    dist = Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    if torch.cuda.is_available():
        torch.cuda.set_device(dist.local_rank)
    else:
        local = int(os.environ.get("LOCAL_SIZE", os.environ.get("LOCAL_WORLD_SIZE", dist.world_size)))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    # on CPU, DeepSpeed's shared-memory all-reduce prints "... built successfully" from every rank
    with contextlib.nullcontext() if torch.cuda.is_available() else contextlib.redirect_stdout(io.StringIO()):
        deepspeed.init_distributed()
    if not torch.cuda.is_available():
        _unlink_shared_memory(dist)
    return dist


def _unlink_shared_memory(dist: Dist) -> None:
    """Remove the name of this rank's DeepSpeed shared-memory segment as soon as every rank has it.

    On CPU, DeepSpeed's all-reduce gives each rank a ~66 MB POSIX shared-memory segment,
    ``/dev/shm/deepspeed_allreduce_buffer_<uid>_<MASTER_ADDR>_<MASTER_PORT>_<rank>``, and
    never removes it: every run on a new port left 132 MB of RAM behind in /dev/shm (15 GB
    after a day of tests here). All ranks map all segments inside ``init_distributed``, so
    after a barrier the names can go: the memory lives on while mapped and is freed when the
    last rank exits, however it exits (kill -9 included). Only this run's own name is
    removed (its address, port and rank)."""
    name = "deepspeed_allreduce_buffer_{}_{}_{}_{}".format(
        os.getuid(), os.environ.get("MASTER_ADDR", ""), os.environ.get("MASTER_PORT", ""), dist.rank
    )
    dist.barrier()
    (Path("/dev/shm") / name).unlink(missing_ok=True)  # none if the ranks span machines


def exit_on_error(code: int) -> None:
    """End a rank of a multi-rank run that stops on an error, without Python's shutdown: tearing
    down the process group while a peer is gone can abort the process ("terminate called
    without an active exception"), turning a clean exit code into SIGABRT. One rank: returns."""
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


# -- stopping with the launcher -------------------------------------------------------------------
def _parent_of(pid: int) -> int | None:
    """The parent pid of ``pid`` (Linux /proc), None once ``pid`` is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the name in (...) may hold spaces


def _is_deepspeed_launch(pid: int) -> bool:
    try:
        return b"deepspeed.launcher.launch" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def watch_launcher(poll_seconds: float = 1.0) -> None:
    """End this rank when the launcher that started it is gone.

    torchrun and accelerate forward SIGTERM/SIGINT to their ranks, but DeepSpeed's ``deepspeed``
    command forwards them only for multi-node runs: killing it (a scheduler's SIGTERM, or
    SIGKILL) leaves its per-node ``launch.py`` and every rank training on, writing into the run
    folder, while the user is told the run has ended. So each rank records the process
    chain above it (its parent, and the parent's parent when the parent is DeepSpeed's
    ``launch.py``) and a daemon thread checks every ``poll_seconds`` that nobody in it was
    reparented. When one was, the rank exits at once: checkpoints are published by rename, so
    the run folder keeps its last complete checkpoint and ``--resume`` continues from it."""
    if not Path("/proc/self/stat").is_file():  # not Linux: no process table to watch
        return
    parent = os.getppid()
    chain = [(os.getpid(), parent)]
    if _is_deepspeed_launch(parent) and (grandparent := _parent_of(parent)) is not None:
        chain.append((parent, grandparent))

    def watch() -> None:
        while True:
            time.sleep(poll_seconds)
            for pid, was in chain:
                if _parent_of(pid) != was:
                    if os.environ.get("RANK") == "0":
                        print(f"[train] the launcher (pid {was}) is gone: stopping every rank; "
                              "the run folder keeps its last complete checkpoint (--resume continues)", flush=True)  # fmt: skip
                    os._exit(143)  # 128 + SIGTERM, as if the launcher's signal had reached us

    threading.Thread(target=watch, name="watch-launcher", daemon=True).start()
