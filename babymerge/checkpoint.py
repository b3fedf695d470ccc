"""Hugging Face checkpoint directories, read lazily one tensor at a time.

Merging two models should cost about one tensor of memory, not two models. ``Checkpoint``
reads only the safetensors headers up front (names, dtypes, shapes, byte offsets). Each
weight file is then memory-mapped once, privately, and ``view(key, rows)`` is a tensor on
those pages: no copy, no allocation, so a merge computes straight from the page cache.
``release(key, rows)`` unmaps the pages a consumed chunk touched (they stay in the page
cache), so a merge streaming through a checkpoint keeps about one chunk in its RSS.

It also knows how the language model's parameters are named in each layout, so a
``LlamaForCausalLM`` twin lines up with the Llava language model (``text_key``).
"""

from __future__ import annotations

import json
import math
import mmap
import re
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

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
# A page fault on a mapped file may map this much around the page (fault-around, large folios).
_MAPPED_AROUND = 2 << 20
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
        self._mapped: dict[Path, tuple[mmap.mmap, torch.Tensor]] = {}  # file -> its mapping, as bytes (see view)
        self._mapping_lock = threading.Lock()  # threads merging different tensors map each file once
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
            with safe_open(file, framework="pt") as f:  # validates the header against the file
                keys = list(f.keys())
                for key in keys:
                    sl = f.get_slice(key)
                    if sl.get_dtype() not in SAFETENSORS_DTYPES:
                        raise BabyMergeError(f"{file}: tensor {key!r} has unsupported dtype {sl.get_dtype()}")
            with open(file, "rb") as f:  # the byte offsets, which safe_open does not expose
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n))
        except (SafetensorError, OSError, ValueError, struct.error) as err:
            raise BabyMergeError(
                f"{self.role} checkpoint file {file} is truncated or corrupt ({err}); re-save or re-download it"
            ) from err
        for key in keys:
            entry = header[key]
            self.tensors[key] = TensorInfo(
                file, SAFETENSORS_DTYPES[entry["dtype"]], tuple(entry["shape"]), 8 + n + entry["data_offsets"][0]
            )

    # -- reading --------------------------------------------------------------------------
    def view(self, key: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        """One tensor, or its rows ``start:stop``, as a tensor on the file's mapped pages: no copy.

        The file is mapped once, copy-on-write (``ACCESS_COPY``): the checkpoint on disk can
        never change through a view, whatever is done to it. Not checked for NaN/inf (see
        ``check_finite``); call ``release`` when done with it to keep the process's RSS small.
        """
        info = self.tensors[key]
        with self._mapping_lock:
            if info.file not in self._mapped:
                try:
                    with open(info.file, "rb") as f:
                        mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
                except (OSError, ValueError) as err:
                    raise BabyMergeError(f"cannot read {info.file}: {err}") from err
                self._mapped[info.file] = (mapping, torch.frombuffer(mapping, dtype=torch.uint8))
        _, raw = self._mapped[info.file]
        start, stop = info.byte_range(rows)
        data = raw[start:stop]
        if start % info.dtype.itemsize:  # a file whose tensors are not aligned to their dtype
            data = data.clone()
        shape = info.shape if rows is None else (rows[1] - rows[0], *info.shape[1:])
        return data.view(info.dtype).view(shape)

    def release(self, key: str, rows: tuple[int, int] | None = None) -> None:
        """Unmap the pages of a tensor (or rows of it) a view touched. They stay in the page
        cache and a later view maps them again; only this process's RSS shrinks."""
        info = self.tensors[key]
        if info.file in self._mapped:
            mapping = self._mapped[info.file][0]
            start, stop = info.byte_range(rows)
            # The faults also mapped pages around the range: unmap those too (without this,
            # ~10% of the pages stayed: +50 MB of RSS merging two 300 MB checkpoints in memory).
            # Those after it only with the tensor's last rows: within a tensor the next chunk's
            # pages are mapped ahead, as the next chunk wants them.
            start = max(0, start - _MAPPED_AROUND) // mmap.PAGESIZE * mmap.PAGESIZE
            if rows is None or rows[1] >= info.shape[0]:
                stop = min(len(mapping), stop + _MAPPED_AROUND)
            if stop > start:
                mapping.madvise(mmap.MADV_DONTNEED, start, stop - start)

    def read(self, key: str, rows: tuple[int, int] | None = None, check_finite: bool = True) -> torch.Tensor:
        """One tensor, or its rows ``start:stop``, copied out of its file; refuses NaN and inf."""
        tensor = self.view(key, rows).clone()
        self.release(key, rows)
        if check_finite:
            self.check_finite(key, tensor, rows)
        return tensor

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
