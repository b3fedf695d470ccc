"""Writing checkpoints safely and in constant memory.

* ``atomic_output_dir``: everything is written into a temporary sibling directory that is
  renamed to its final name only when complete, so a failure (bad tensor, Ctrl-C, full disk)
  never leaves a partial checkpoint that could later be mistaken for a good one.
* ``StreamingSafetensorsWriter``: ``safetensors.torch.save_file`` needs every tensor of a
  shard in memory at once. Because a merge knows every output name, dtype and shape before it
  computes anything, we write each shard's header first and then stream tensors into it one
  by one. The files are standard safetensors (checked with ``safe_open`` when closed).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import struct
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from safetensors import safe_open

from .checkpoint import SAFE_INDEX_NAME, SAFE_WEIGHTS_NAME, SAFETENSORS_DTYPES
from .errors import BabyMergeError

_DTYPE_NAMES = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}


def parse_size(size: int | str) -> int:
    """``"500MB"`` / ``"2GB"`` / ``"1GiB"`` / ``123`` -> bytes (transformers' convention)."""
    if isinstance(size, int):
        return size
    s = size.strip().upper()
    for suffix, factor in (("GIB", 2**30), ("MIB", 2**20), ("KIB", 2**10), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3), ("B", 1)):
        if s.endswith(suffix):
            return int(float(s[: -len(suffix)]) * factor)
    return int(s)


def write_file_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write a whole file under a temporary name in the same folder, then rename it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``out`` only if the block finishes."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise BabyMergeError(f"output directory {str(out)!r} already exists; choose another or pass overwrite=True (--overwrite)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        if out.exists():  # overwrite: move the old one aside first so there is never no checkpoint
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class StreamingSafetensorsWriter:
    """Write tensors, whose names/dtypes/shapes are declared up front, into safetensors shards.

    Args:
        directory: where to write ``model.safetensors`` (or ``model-0000i-of-0000n.safetensors``
            plus ``model.safetensors.index.json``).
        layout: ``[(name, dtype, shape), ...]`` in the order the tensors will be added.
        max_shard_size: bytes (or ``"2GB"``-style) per shard.
    """

    def __init__(self, directory: Path, layout: list[tuple[str, torch.dtype, tuple[int, ...]]], max_shard_size: int | str = "2GB"):
        self.directory = Path(directory)
        limit = parse_size(max_shard_size)
        shards: list[list[tuple[str, torch.dtype, tuple[int, ...]]]] = [[]]
        size = 0
        for entry in layout:
            nbytes = _nbytes(entry[1], entry[2])
            if shards[-1] and size + nbytes > limit:
                shards.append([])
                size = 0
            shards[-1].append(entry)
            size += nbytes
        n = len(shards)
        names = [SAFE_WEIGHTS_NAME] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        self._plan = [(self.directory / name, shard) for name, shard in zip(names, shards)]
        self._expected = [entry[0] for entry in layout]
        self._position = 0
        self._shard = -1
        self._file = None
        self._shard_keys: list[str] = []
        self.total_size = sum(_nbytes(e[1], e[2]) for e in layout)

    def _open_next_shard(self) -> None:
        self._close_file()
        self._shard += 1
        path, entries = self._plan[self._shard]
        header: dict = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name, dtype, shape in entries:
            nbytes = _nbytes(dtype, shape)
            header[name] = {"dtype": _DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)  # safetensors pads the header to 8-byte alignment
        self._file = open(path, "wb")
        self._file.write(struct.pack("<Q", len(blob)))
        self._file.write(blob)
        self._shard_keys = [e[0] for e in entries]

    def add(self, name: str, chunks: Iterable[torch.Tensor]) -> None:
        """Append the next declared tensor, given whole or as consecutive flat chunks."""
        if self._position >= len(self._expected) or name != self._expected[self._position]:
            raise RuntimeError(f"tensor {name!r} added out of the declared order")
        if self._file is None or not self._shard_keys:
            self._open_next_shard()
        _, entries = self._plan[self._shard]
        _, dtype, shape = entries[len(entries) - len(self._shard_keys)]
        written = 0
        for chunk in chunks:
            if chunk.dtype != dtype:
                raise RuntimeError(f"tensor {name!r} is {chunk.dtype}, declared {dtype}")
            data = chunk.detach().to("cpu").contiguous().reshape(-1)
            self._file.write(memoryview(data.view(torch.uint8).numpy()))
            written += data.numel()
        if written != math.prod(shape):
            raise RuntimeError(f"tensor {name!r}: wrote {written} values, declared shape {list(shape)}")
        self._shard_keys.pop(0)
        self._position += 1

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self) -> list[Path]:
        """Finish the last shard, write the index if sharded, and check every file opens."""
        if self._position != len(self._expected):
            raise RuntimeError(f"only {self._position} of {len(self._expected)} tensors were written")
        self._close_file()
        if len(self._plan) > 1:
            weight_map = {name: path.name for path, entries in self._plan for name, _, _ in entries}
            index = {"metadata": {"total_size": self.total_size}, "weight_map": weight_map}
            (self.directory / SAFE_INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
        for path, entries in self._plan:
            with safe_open(path, framework="pt") as f:  # header and sizes must round-trip
                assert len(list(f.keys())) == len(entries)
        return [path for path, _ in self._plan]


def _nbytes(dtype: torch.dtype, shape: tuple[int, ...]) -> int:
    return math.prod(shape) * dtype.itemsize
