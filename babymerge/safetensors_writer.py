"""Writing safetensors shards in constant memory, tensor chunk by tensor chunk.

``safetensors.torch.save_file`` needs every tensor of a shard in memory at once. Because a
merge knows every output name, dtype and shape before it computes anything, we write each
shard's header first and then write each chunk of each tensor at its place in the file, as
soon as it is computed, from whichever thread computed it. The files are standard
safetensors (each header read back and each size checked when closed, without mapping the
files: a mapping of the whole output may not fit ``ulimit -v``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import struct
import threading
from pathlib import Path

import torch

from .checkpoint import SAFE_INDEX_NAME, SAFE_WEIGHTS_NAME, SAFETENSORS_DTYPES
from .errors import BabyMergeError

_DTYPE_NAMES = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}
# Bytes per write call. Larger writes into the page cache were up to 3x slower on this
# project's VMs (ext4, Linux 6.18): 4 MiB calls spent a second in the kernel where 1 MiB
# calls spent 0.2 s merging 600 MB, and two threads then spin on the file's lock.
WRITE_BYTES = 1 << 20
_SIZE_SUFFIXES = (("GIB", 2**30), ("MIB", 2**20), ("KIB", 2**10), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3), ("B", 1))


def parse_size(size: int | str, what: str = "`max_shard_size`") -> int:
    """``"500MB"`` / ``"2GB"`` / ``"1GiB"`` / ``123`` -> bytes (transformers' convention)."""
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    else:
        s = str(size).strip().upper()
        factor = next((f for suffix, f in _SIZE_SUFFIXES if s.endswith(suffix)), 1)
        number = next((s[: -len(suffix)] for suffix, _ in _SIZE_SUFFIXES if s.endswith(suffix)), s)
        try:
            value = int(float(number) * factor)
        except ValueError:
            value = None
    if value is None or value <= 0:
        raise BabyMergeError(
            f"{what} must be a positive size such as 500MB, 2GB or 1GiB (or a number of bytes), got {size!r}"
        )
    return value


class StreamingSafetensorsWriter:
    """Write tensors, whose names/dtypes/shapes are declared up front, into safetensors shards.

    Args:
        directory: where to write ``model.safetensors`` (or ``model-0000i-of-0000n.safetensors``
            plus ``model.safetensors.index.json``).
        layout: ``[(name, dtype, shape), ...]``: the order of the tensors in the files.
        max_shard_size: bytes (or ``"2GB"``-style) per shard.

    The headers, written first, fix where every tensor's bytes go, so ``write`` puts a chunk
    straight at its place in the file (``pwrite``), in any order and from any thread: several
    threads can each merge and write their own tensors, with no thread in between and no
    chunk waiting in memory. ``close`` checks that every byte was written. Use the writer as a
    context manager: leaving the block by an exception closes the files (the caller removes
    them).
    """

    def __init__(
        self, directory: Path, layout: list[tuple[str, torch.dtype, tuple[int, ...]]], max_shard_size: int | str = "2GB"
    ):
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
        self.total_size = sum(_nbytes(e[1], e[2]) for e in layout)
        self._files: list[int] = []
        self._expected: dict[Path, tuple[dict, int]] = {}  # shard -> (its header, its file size)
        self._where: dict[str, tuple[int, int, torch.dtype, int]] = {}  # name -> (fd, offset, dtype, nbytes)
        self._written: dict[str, int] = {}
        self._lock = threading.Lock()
        for path, entries in self._plan:
            self._open_shard(path, entries)

    def __enter__(self) -> StreamingSafetensorsWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        while self._files:  # after an error: the caller removes the files
            with contextlib.suppress(OSError):
                os.close(self._files.pop())

    def _open_shard(self, path: Path, entries) -> None:
        header: dict = {"__metadata__": {"format": "pt"}}
        offset, places = 0, []
        for name, dtype, shape in entries:
            nbytes = _nbytes(dtype, shape)
            header[name] = {
                "dtype": _DTYPE_NAMES[dtype],
                "shape": list(shape),
                "data_offsets": [offset, offset + nbytes],
            }
            places.append((name, dtype, offset, nbytes))
            offset += nbytes
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)  # safetensors pads the header to 8-byte alignment
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        self._files.append(fd)
        self._expected[path] = (header, 8 + len(blob) + offset)
        _pwrite_all(fd, struct.pack("<Q", len(blob)) + blob, 0)
        for name, dtype, offset, nbytes in places:  # the data follow the 8-byte length and the header
            self._where[name] = (fd, 8 + len(blob) + offset, dtype, nbytes)
            self._written[name] = 0

    def write(self, name: str, start: int, chunk: torch.Tensor) -> None:
        """Write ``chunk`` as the values ``start, start + 1, ...`` (flat) of tensor ``name``."""
        fd, offset, dtype, nbytes = self._where[name]
        if chunk.dtype != dtype:
            raise RuntimeError(f"tensor {name!r} is {chunk.dtype}, declared {dtype}")
        data = memoryview(chunk.detach().contiguous().reshape(-1).view(torch.uint8).numpy())
        begin = start * dtype.itemsize
        if begin + len(data) > nbytes:
            raise RuntimeError(f"tensor {name!r}: values {start}.. lie beyond its {nbytes // dtype.itemsize}")
        _pwrite_all(fd, data, offset + begin)
        with self._lock:
            self._written[name] += len(data)

    def close(self) -> list[Path]:
        """Check every tensor was written whole, close the files, write the index if sharded,
        and check every file reads back as written (header and size)."""
        short = [name for name, (_, _, _, nbytes) in self._where.items() if self._written[name] != nbytes]
        if short:
            raise RuntimeError(f"{len(short)} tensors were not written whole, e.g. {short[:3]}")
        while self._files:
            os.close(self._files.pop())  # a write error the file system deferred (NFS) is raised here
        if len(self._plan) > 1:
            weight_map = {name: path.name for path, entries in self._plan for name, _, _ in entries}
            index = {"metadata": {"total_size": self.total_size}, "weight_map": weight_map}
            (self.directory / SAFE_INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
        for path, (header, size) in self._expected.items():
            with open(path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                if json.loads(f.read(n)) != header or os.fstat(f.fileno()).st_size != size:
                    raise RuntimeError(f"{path} does not read back as written")
        return [path for path, _ in self._plan]


def _pwrite_all(fd: int, data, offset: int) -> None:
    """``pwrite`` all of ``data`` at ``offset``, ``WRITE_BYTES`` at a time (a call may also
    write less than asked)."""
    view = memoryview(data).cast("B")
    while view:
        done = os.pwrite(fd, view[:WRITE_BYTES], offset)
        view, offset = view[done:], offset + done


def _nbytes(dtype: torch.dtype, shape: tuple[int, ...]) -> int:
    return math.prod(shape) * dtype.itemsize
