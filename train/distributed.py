"""Rank, world size and the two collectives the loop needs, the same with or without a launcher.

Under ``deepspeed --num_gpus N --module train`` every rank finds RANK/WORLD_SIZE/... in its
environment; started as ``python -m train`` the DeepSpeed engine still needs a process group,
so a one-rank one is made on localhost. On CPU the cores are shared out between the local
ranks (otherwise every rank starts one thread per core and they fight over them).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import torch


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

    if "RANK" not in os.environ:  # started without a launcher: a process group of one
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
