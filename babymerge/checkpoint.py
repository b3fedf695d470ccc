"""Hugging Face checkpoint directories, read lazily one tensor at a time.

Merging two models should cost about one tensor of memory, not two models. ``Checkpoint``
reads only the safetensors headers up front (names, dtypes, shapes, byte offsets). A merge
then reads each tensor, or a chunk of its rows, with ``pread`` into a buffer it reuses
(``read_into``). Not memory-mapped: a mapped file that another process truncates kills the
reader with SIGBUS, which Python cannot catch, where a short read is an error naming the
file; and reads hold no address space beyond the buffers (``ulimit -v``), nor pages in the
process's RSS. Every weight file's identity (inode, size, modification time) is recorded with
its header, and a file found different later (``check_unchanged``, a short read) is refused.

It also knows how the language model's parameters are named in each layout, so a
``LlamaForCausalLM`` twin lines up with the Llava language model (``text_key``).
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import BabyMergeError

CONFIG_NAME = "config.json"
SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_INDEX_NAME = "model.safetensors.index.json"
TORCH_WEIGHTS_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json")

SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}  # fmt: skip

# Where each Llava layout keeps its language model, mapped to LlamaForCausalLM's names.
# transformers >= 4.52: model.language_model.* + lm_head.*; older: language_model.model.* + language_model.lm_head.*
_LANGUAGE_MODEL_PREFIXES = (
    ("model.language_model.", "model."),
    ("language_model.model.", "model."),
    ("language_model.lm_head.", "lm_head."),
)
_LAYER_INDEX = re.compile(r"\blayers\.(\d+)\.")


@dataclass(frozen=True)
class TensorInfo:
    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    offset: int = 0  # where its bytes start in the file

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def byte_range(self, rows: tuple[int, int] | None = None) -> tuple[int, int]:
        """The file's bytes holding the tensor, or its rows ``start:stop``."""
        if rows is None:
            return self.offset, self.offset + self.nbytes
        row = math.prod(self.shape[1:]) * self.dtype.itemsize
        return self.offset + rows[0] * row, self.offset + rows[1] * row


def all_finite(tensor: torch.Tensor) -> bool:
    """No NaN or inf in ``tensor``: its min and max are finite exactly when every entry is (both
    propagate NaN; an inf is the min or the max). One pass that cannot overflow, and several
    times faster than a float32 sum on CPU, for bfloat16 above all (no conversion)."""
    if tensor.numel() == 0:
        return True
    low, high = torch.aminmax(tensor)
    return math.isfinite(float(low)) and math.isfinite(float(high))


def _check_layout(header: dict, data_bytes: int) -> str | None:
    """Check a safetensors header as ``safe_open`` does, without mapping the file (a mapping
    needs the file's size of address space): every tensor's bytes match its dtype and shape,
    and the tensors tile the data exactly, in order, to the end of the file. ValueError if
    not; the name of a tensor whose dtype babymerge does not handle, else None."""
    tensors = []
    for key, entry in header.items():
        try:
            begin, stop = (int(x) for x in entry["data_offsets"])
            tensors.append((begin, stop, key, [int(d) for d in entry["shape"]], str(entry["dtype"])))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"tensor {key!r} has no valid dtype, shape and data_offsets") from None
    unsupported, end = None, 0
    for begin, stop, key, shape, dtype in sorted(tensors):
        if begin != end or any(d < 0 for d in shape):
            raise ValueError(f"tensor {key!r} starts at byte {begin}, after {end}")
        if dtype not in SAFETENSORS_DTYPES:
            unsupported = unsupported or key
        elif stop - begin != math.prod(shape) * SAFETENSORS_DTYPES[dtype].itemsize:
            raise ValueError(f"tensor {key!r} of shape {shape} holds {stop - begin} bytes")
        end = stop
    if end != data_bytes:
        raise ValueError(f"the header describes {end:,} bytes of data, the file holds {data_bytes:,}")
    return unsupported


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def layer_index(key: str) -> int | None:
    """Decoder layer number in a parameter name (``model.layers.3.mlp...`` -> 3), else None."""
    m = _LAYER_INDEX.search(key)
    return int(m.group(1)) if m else None


class Checkpoint:
    """A checkpoint directory (``config.json`` + safetensors weights, possibly sharded).

    Args:
        path: the directory.
        role: how error messages name it ("multimodal", "language-only", "base").
    """

    def __init__(self, path: str | Path, role: str = "checkpoint"):
        self.path = Path(path)
        self.role = role
        if not self.path.is_dir():
            raise BabyMergeError(f"{role} checkpoint {str(self.path)!r} does not exist or is not a directory")
        config_file = self.path / CONFIG_NAME
        try:
            self.config: dict = json.loads(config_file.read_text())
        except FileNotFoundError:
            raise BabyMergeError(
                f"{role} checkpoint {str(self.path)!r} has no {CONFIG_NAME}: is it a Hugging Face "
                "checkpoint directory (written by save_pretrained)?"
            ) from None
        except (OSError, json.JSONDecodeError) as err:
            raise BabyMergeError(f"cannot read {config_file}: {err}") from err
        self.tensors: dict[str, TensorInfo] = {}
        self._identity: dict[
            Path, tuple[int, ...]
        ] = {}  # file -> (device, inode, size, mtime) when its header was read
        self._fds: dict[Path, int] = {}  # file -> descriptor, opened at its first read
        self._open_lock = threading.Lock()  # threads reading different tensors open each file once
        for file in self._weight_files():
            self._read_header(file)
        if not self.tensors:
            raise BabyMergeError(f"{role} checkpoint {str(self.path)!r} contains no tensors")
        self.is_llava_layout = any("language_model." in k for k in self.tensors)

    # -- discovery ------------------------------------------------------------------------
    def _weight_files(self) -> list[Path]:
        index = self.path / SAFE_INDEX_NAME
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
                raise BabyMergeError(f"cannot read the shard index {index}: {err}") from err
            files = sorted({self.path / name for name in weight_map.values()})
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise BabyMergeError(
                    f"{self.role} checkpoint {str(self.path)!r}: shards listed in {index.name} are missing: {missing}"
                )
            return files
        single = self.path / SAFE_WEIGHTS_NAME
        if single.is_file():
            return [single]
        if any((self.path / name).exists() for name in TORCH_WEIGHTS_NAMES):
            raise BabyMergeError(
                f"{self.role} checkpoint {str(self.path)!r} holds pickled PyTorch weights; babymerge reads "
                "safetensors only. Convert it: model = AutoModel...from_pretrained(dir); model.save_pretrained(dir)"
            )
        raise BabyMergeError(
            f"{self.role} checkpoint {str(self.path)!r} has no {SAFE_WEIGHTS_NAME} or {SAFE_INDEX_NAME}"
        )

    def _read_header(self, file: Path) -> None:
        try:
            with open(file, "rb") as f:
                self._identity[file] = _identity(os.fstat(f.fileno()))
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n)) if n <= self._identity[file][2] - 8 else None
            if not isinstance(header, dict):
                raise ValueError(f"a header of {n:,} bytes in a file of {self._identity[file][2]:,}")
            header.pop("__metadata__", None)
            unsupported = _check_layout(header, self._identity[file][2] - 8 - n)
        except (OSError, ValueError, struct.error) as err:
            raise BabyMergeError(
                f"{self.role} checkpoint file {file} is truncated or corrupt ({err}); re-save or re-download it"
            ) from err
        if unsupported is not None:
            raise BabyMergeError(
                f"{file}: tensor {unsupported!r} has unsupported dtype {header[unsupported]['dtype']}; "
                f"babymerge merges {', '.join(SAFETENSORS_DTYPES)}"
            )
        for key in sorted(header):  # in name order, as safe_open lists them
            entry = header[key]
            self.tensors[key] = TensorInfo(
                file, SAFETENSORS_DTYPES[entry["dtype"]], tuple(entry["shape"]), 8 + n + entry["data_offsets"][0]
            )

    # -- reading --------------------------------------------------------------------------
    def read_into(self, key: str, out: torch.Tensor, rows: tuple[int, int] | None = None) -> torch.Tensor:
        """Read one tensor, or its rows ``start:stop``, from its file into ``out`` (contiguous,
        of the tensor's dtype and the rows' shape) and return ``out``. Not checked for NaN/inf
        (see ``check_finite``). A file shorter than its header says (truncated meanwhile) is
        refused, naming it."""
        info = self.tensors[key]
        fd = self._fd(info.file)
        start, stop = info.byte_range(rows)
        view = memoryview(out.view(-1).view(torch.uint8).numpy())
        if len(view) != stop - start:
            raise RuntimeError(f"read_into {key!r}: buffer of {len(view)} bytes for {stop - start}")
        while view:
            done = os.preadv(fd, [view], start)
            if done == 0:
                raise self._changed(info.file)
            view, start = view[done:], start + done
        return out

    def read(self, key: str, rows: tuple[int, int] | None = None, check_finite: bool = True) -> torch.Tensor:
        """One tensor, or its rows ``start:stop``, read into a new tensor; refuses NaN and inf."""
        info = self.tensors[key]
        shape = info.shape if rows is None else (rows[1] - rows[0], *info.shape[1:])
        tensor = self.read_into(key, torch.empty(shape, dtype=info.dtype), rows)
        if check_finite:
            self.check_finite(key, tensor, rows)
        return tensor

    def _fd(self, file: Path) -> int:
        with self._open_lock:
            if file not in self._fds:
                try:
                    fd = os.open(file, os.O_RDONLY)
                except OSError as err:
                    raise BabyMergeError(f"cannot read {file}: {err}") from err
                self._fds[file] = fd
                if _identity(os.fstat(fd)) != self._identity[file]:
                    raise self._changed(file)
            return self._fds[file]

    def check_unchanged(self) -> None:
        """Refuse weight files that are no longer what their headers were read from: replaced,
        rewritten, truncated or grown (their inode, size or modification time differ)."""
        for file, identity in self._identity.items():
            try:
                now = _identity(os.stat(file))
            except OSError:
                now = None
            if now != identity:
                raise self._changed(file)

    def _changed(self, file: Path) -> BabyMergeError:
        was = self._identity[file][2]
        try:
            now = f"now {os.stat(file).st_size:,} bytes"
        except OSError:
            now = "now gone"
        return BabyMergeError(
            f"{self.role} checkpoint file {file} changed while it was being read ({was:,} bytes when opened, {now}): "
            "another process rewrote or truncated it. Run again once it is complete"
        )

    def close(self) -> None:
        """Close the weight files (reading again opens them again)."""
        with self._open_lock:
            while self._fds:
                os.close(self._fds.popitem()[1])

    def __del__(self, _close=os.close) -> None:  # os.close bound now: at exit the module may be gone
        for fd in getattr(self, "_fds", {}).values():
            _close(fd)

    def check_finite(self, key: str, tensor: torch.Tensor, rows: tuple[int, int] | None = None) -> None:
        """Refuse a tensor (rows ``start:stop`` of ``key``) holding NaN or inf, naming it."""
        if tensor.is_floating_point() and not all_finite(tensor):
            bad = int((~torch.isfinite(tensor)).sum())
            where = f"rows {rows[0]}:{rows[1]} of " if rows else ""
            raise BabyMergeError(
                f"{self.role} checkpoint {str(self.path)!r}: {where}tensor {key!r} contains {bad} NaN/inf values; "
                "the checkpoint is broken (diverged training?), merging it would spread them"
            )

    # -- naming ---------------------------------------------------------------------------
    def text_key(self, key: str) -> str:
        """The parameter's name in a plain ``LlamaForCausalLM`` if it belongs to the language
        model; other parameters (projector, buffers) keep their own name."""
        if self.is_llava_layout:
            for prefix, replacement in _LANGUAGE_MODEL_PREFIXES:
                if key.startswith(prefix):
                    return replacement + key[len(prefix) :]
        return key

    @property
    def text_config(self) -> dict:
        """The language model's config (``text_config`` of a Llava config, else the config)."""
        return self.config.get("text_config", self.config)

    @property
    def num_layers(self) -> int:
        return int(self.text_config.get("num_hidden_layers", 0))

    @property
    def architecture(self) -> str:
        return (self.config.get("architectures") or ["?"])[0]


_DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "half": "float16", "float": "float32"}


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """``"bf16"`` / ``"bfloat16"`` / ``"torch.bfloat16"`` / ``torch.bfloat16`` -> the torch dtype
    (None stays None: "the checkpoint's own"). The one parser for merge, the CLI and lm-eval."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).strip().lower().removeprefix("torch.")
    value = getattr(torch, _DTYPE_ALIASES.get(name, name), None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise BabyMergeError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16 (or fp32, bf16, fp16)")
    return value
