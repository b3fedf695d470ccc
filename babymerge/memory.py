"""How much memory this process may still allocate, and a check before a large allocation.

A model built in memory (an lm-eval merge at load, a sweep) that does not fit is killed by
the kernel's OOM killer with no message, or fails late with ``MemoryError``. So before
building one, its size is compared with the least of what the limits that apply leave:

* the machine: ``MemAvailable`` + ``SwapFree`` (``/proc/meminfo``);
* the cgroup (containers, Slurm, systemd): ``memory.max`` (v2) or ``memory.limit_in_bytes``
  (v1) of this process's cgroup and its ancestors, minus what they hold other than
  reclaimable file pages (the page cache of the checkpoints just read is reclaimable);
* the address space (``ulimit -v``, ``RLIMIT_AS``): the soft limit minus ``VmSize``.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

from .errors import BabyMergeError

GB = 1e9
# Address space a load or merge takes beyond its tensors: the stacks and malloc arenas of the
# threads torch starts (64 MiB of address space each) and the modules it imports then.
OVERHEAD = 128 << 20
PROC_CGROUP, CGROUP_ROOT = Path("/proc/self/cgroup"), Path("/sys/fs/cgroup")


def _proc_values(path: str) -> dict[str, int]:
    """``Key: value [kB]`` lines -> bytes (``/proc/meminfo``, ``/proc/self/status``)."""
    values = {}
    try:
        for line in Path(path).read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                values[key] = int(parts[0]) * (1024 if parts[1:2] == ["kB"] else 1)
    except OSError:
        pass
    return values


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _stat_value(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _cgroup_available() -> int | None:
    """What the tightest cgroup memory limit over this process leaves, or None without one."""
    try:
        lines = PROC_CGROUP.read_text().splitlines()
    except OSError:
        return None
    best = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: walk up from this cgroup to the root
            directory = CGROUP_ROOT / path.lstrip("/")
            while directory == CGROUP_ROOT or CGROUP_ROOT in directory.parents:
                limit = _read_int(directory / "memory.max")
                usage = _read_int(directory / "memory.current")
                if limit is not None and usage is not None:
                    left = limit - usage + _stat_value(directory / "memory.stat", "inactive_file")
                    best = left if best is None else min(best, left)
                directory = directory.parent
        elif "memory" in controllers.split(","):  # v1
            directory = CGROUP_ROOT / "memory" / path.lstrip("/")
            limit = _read_int(directory / "memory.limit_in_bytes")
            usage = _read_int(directory / "memory.usage_in_bytes")
            if limit is not None and usage is not None and limit < 1 << 60:
                left = limit - usage + _stat_value(directory / "memory.stat", "total_inactive_file")
                best = left if best is None else min(best, left)
    return best


def available_memory() -> tuple[int, str]:
    """Bytes this process may still allocate, and which limit says so."""
    meminfo = _proc_values("/proc/meminfo")
    found = []
    if "MemAvailable" in meminfo:
        found.append((meminfo["MemAvailable"] + meminfo.get("SwapFree", 0), "available RAM + swap"))
    cgroup = _cgroup_available()
    if cgroup is not None:
        found.append((cgroup, "left under the cgroup's memory limit"))
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        used = _proc_values(f"/proc/{os.getpid()}/status").get("VmSize", 0)
        found.append((soft - used, "left under the address-space limit (ulimit -v)"))
    return min(found) if found else (1 << 62, "no limit found")


def check_fits(needed: int, what: str) -> None:
    """Refuse, before allocating, ``needed`` bytes of tensors for ``what`` if they (and
    ``OVERHEAD``) do not fit."""
    needed += OVERHEAD
    left, limit = available_memory()
    if needed > left:
        raise BabyMergeError(
            f"{what} needs about {needed / GB:.2f} GB but only {left / GB:.2f} GB is {limit}; "
            "load it in half the memory with dtype=bfloat16 (lm-eval --model_args, babymerge sweep --model-args), "
            "or merge to disk with `babymerge merge ... --out DIR`, which streams in ~one tensor of memory, "
            "and evaluate pretrained=DIR"
        )
