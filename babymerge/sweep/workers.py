"""Several processes on one sweep: who this process is, which cells it takes first, and claims.

A sweep may run as many processes at once, into one folder: the ranks of ``torchrun`` /
``accelerate launch`` (on one node or across nodes), the tasks of a Slurm job array
(``--shard K/N`` or ``SLURM_ARRAY_TASK_ID``), or both (each array task a ``torchrun``). Worker
``index`` of ``count`` takes its own contiguous block of the grid first (so it loads few
checkpoint pairs), then helps with other blocks' pairs that nobody has started, from the
grid's far end (a shard that never ran, a slow node); the blocks alone cover the grid. A cell is
computed only by the process that holds its claim, a ``flock`` on ``.claims/<cell>.lock``
that the OS releases when the process dies, so a killed worker's cell is free for a rerun,
and two workers never compute the same cell.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import BabyMergeError
from ..locking import try_lock

CLAIMS = ".claims"


@dataclass(frozen=True)
class Worker:
    index: int  # 0 .. count-1 over every process of the sweep
    count: int
    local_rank: int  # this process's rank on its node (picks its GPU)
    launched: bool  # started by torchrun / accelerate launch (WORLD_SIZE > 1)

    def device(self) -> str | None:
        """One device per process when launched: its node's GPU ``local_rank`` (round robin
        over the GPUs there), else the CPU; None (the adapter's default) for one process."""
        if not self.launched:
            return None
        import torch

        if torch.cuda.is_available():
            return f"cuda:{self.local_rank % torch.cuda.device_count()}"
        return "cpu"


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"``: shard K (0 .. N-1) of N."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or not int(m[1]) < int(m[2]):
        raise BabyMergeError(f"--shard takes K/N with 0 <= K < N (e.g. 0/4 ... 3/4), got {text!r}")
    return int(m[1]), int(m[2])


def slurm_shard() -> tuple[int, int] | None:
    """This Slurm array task's shard (its id counted from the array's first id), else None."""
    env = os.environ
    if "SLURM_ARRAY_TASK_ID" not in env or "SLURM_ARRAY_TASK_COUNT" not in env:
        return None
    first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
    return parse_shard(f"{int(env['SLURM_ARRAY_TASK_ID']) - first}/{env['SLURM_ARRAY_TASK_COUNT']}")


def current_worker(shard: str | tuple[int, int] | None = None) -> Worker:
    """This process among all of the sweep's: the launcher's rank within its shard."""
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    k, n = parse_shard(shard) if isinstance(shard, str) else shard or slurm_shard() or (0, 1)
    return Worker(k * world + rank, n * world, int(os.environ.get("LOCAL_RANK", "0")), world > 1)


def work_order(grid: list, worker: Worker) -> tuple[list, list]:
    """The grid's cells this worker tries: its own contiguous block (sizes differ by at most
    one), and the other cells from the grid's end backwards, to help with (``untouched``)."""
    size, extra = divmod(len(grid), worker.count)
    start = worker.index * size + min(worker.index, extra)
    stop = start + size + (worker.index < extra)
    return grid[start:stop], (grid[:start] + grid[stop:])[::-1]


def untouched(out: Path, checkpoint: str) -> bool:
    """No process has claimed a cell of this checkpoint pair yet: a helper may take its cells
    without racing the pair's owner to them (each would load the pair)."""
    claims = out / CLAIMS
    return not claims.is_dir() or not any(p.name.startswith(f"{checkpoint}@alpha=") for p in claims.iterdir())


@contextlib.contextmanager
def single_process_env():
    """Each worker evaluates whole cells alone: hide the launcher's WORLD_SIZE from the adapter,
    which would otherwise split each cell's requests over the ranks (its data parallelism)."""
    saved = os.environ.get("WORLD_SIZE")
    os.environ["WORLD_SIZE"] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("WORLD_SIZE", None)
        else:
            os.environ["WORLD_SIZE"] = saved


def claim_path(out: Path, checkpoint: str, alpha: float) -> Path:
    return out / CLAIMS / f"{checkpoint}@alpha={alpha!r}.lock"


@contextlib.contextmanager
def claim(out: Path, checkpoint: str, alpha: float):
    """Claim one cell for the block; yields False when another process holds it."""
    path = claim_path(out, checkpoint, alpha)
    path.parent.mkdir(exist_ok=True)
    with try_lock(path) as held:
        yield held
