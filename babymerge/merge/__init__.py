"""``merge()``: stream two checkpoints into a merged model, on disk or in memory.

The plan is made from the safetensors headers alone, so every shape, vocabulary, alpha and
option problem is reported before anything is computed or written. Then tensors flow one at
a time: read from the files of the multimodal, language-only and optional base checkpoints
(``Checkpoint.read_into``, chunk by chunk into reused buffers), merged in float32 (in chunks
for elementwise methods), cast to the output dtype and either written at their place in the
safetensors shards, whose headers fix every offset up front, or copied into a model's
parameters. Merging to disk, two threads each take whole tensors where two CPUs are free.
Peak memory stays near one tensor (to disk) or one model (in memory); an in-memory merge
that would not fit the memory this process may use is refused before it starts
(``babymerge.memory.check_fits``). An input changed while it is read ends the merge with an error naming
it, before anything is published.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..checkpoint import CONFIG_NAME, Checkpoint, all_finite, parse_dtype
from ..errors import BabyMergeError
from ..memory import check_fits
from ..output import StreamingSafetensorsWriter, atomic_output_dir, parse_size
from . import breadcrumbs, dare, della, linear, model_stock, nuslerp, sce, slerp, task_arithmetic, ties  # noqa: F401
from .alpha import AlphaSchedule, parse_alpha
from .registry import METHODS, MergeMethod, get_method, parse_flag, register

__all__ = [
    "METHODS", "AlphaSchedule", "MergeReport", "Remerger", "get_method", "merge", "parse_alpha", "parse_dtype", "register",
]  # fmt: skip

logger = logging.getLogger(__name__)

RECIPE_NAME = "babymerge_recipe.json"
# Multimodal tensors never interpolated even when the twin has them: the black-image feature
# is an output of the frozen encoder, not a learned weight.
KEEP_FROM_MULTIMODAL = ("black_image_features",)
# Files copied from the multimodal checkpoint next to the merged weights.
SIDE_FILES = (
    "tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab.*", "merges.txt", "spiece.model",
    "chat_template*", "preprocessor_config.json", "processor_config.json", "image_processor*",
    "generation_config.json",
)  # fmt: skip
# Elements per chunk of rows: 1 MiB of float32, so that an elementwise merge's few passes over
# a chunk (the merge, the finiteness check, the copy into the file) run in the CPU's L2 cache.
CHUNK = 1 << 18
# Where two threads merge (``_in_threads``), 4 MiB chunks: each chunk's few torch calls hand
# the GIL to the other thread and back, and on a VM every handover waits for a wake-up; a
# quarter as many chunks made a bfloat16 merge 1.3x faster than 1 MiB ones.
THREADED_CHUNK = 1 << 20


@dataclass
class _Entry:
    key: str  # name in the multimodal checkpoint (and in the output)
    text_key: str  # LlamaForCausalLM name, what alpha patterns match
    dtype: torch.dtype  # output dtype
    shape: tuple[int, ...]
    lang_key: str | None = None  # None: kept from the multimodal model
    base_key: str | None = None
    alpha: float | None = None


@dataclass
class MergeReport:
    """What a merge did. ``model`` is set when merging in memory, ``out`` when writing to disk."""

    method: str
    alpha: Any
    tensors_merged: int
    tensors_kept: int
    params_merged: int
    params_kept: int
    ignored_language_only: list[str] = field(default_factory=list)
    seconds: float = 0.0
    out: Path | None = None
    model: Any = None
    remerge: Remerger | None = None

    def summary(self) -> str:
        lines = [
            f"merged {self.tensors_merged} tensors ({self.params_merged:,} parameters) with {self.method}, alpha={self.alpha}",
            f"kept {self.tensors_kept} multimodal-only tensors ({self.params_kept:,} parameters) unchanged",
        ]
        if self.ignored_language_only:
            lines.append(f"ignored {len(self.ignored_language_only)} tensors only the language-only model has")
        lines.append(
            f"took {self.seconds:.1f}s" + (f"; wrote {self.out}" if self.out else "; merged into a model in memory")
        )
        return "\n".join(lines)


def merge(
    mm_ckpt: str | Path,
    lang_ckpt: str | Path,
    method: str = "linear",
    alpha: float | Sequence[float] | Mapping[str, Any] | str = 0.3,
    *,
    base_ckpt: str | Path | None = None,
    out: str | Path | None = None,
    dtype: str | torch.dtype | None = None,
    max_shard_size: int | str = "2GB",
    overwrite: bool | str = False,
    allow_different_tokenizers: bool = False,
    keep_sources: bool = False,
    progress: bool = True,
    **options: Any,
) -> MergeReport:
    """Merge a multimodal checkpoint with its language-only twin.

    Args:
        mm_ckpt: the multimodal (BabyLLaVA / Llava) checkpoint directory. Its config,
            tokenizer and multimodal-only tensors (projector) are carried into the result.
        lang_ckpt: the language-only twin: the same class trained on text, or a plain
            ``LlamaForCausalLM`` of the same decoder shape (names are mapped automatically).
        method: ``linear`` (the paper's), ``task_arithmetic``, ``ties``, ``dare_linear``,
            ``dare_ties`` or ``slerp``.
        alpha: weight of the **language-only** model, in [0, 1]; a number, a per-layer gradient
            (list) or a pattern -> value mapping (see ``babymerge.merge.alpha``).
        base_ckpt: shared ancestor for the task-vector methods (e.g. the random init); default:
            the multimodal model itself.
        out: write a checkpoint here (atomically); if None, return the merged model in memory.
        dtype: output dtype ("float32", "bfloat16", ...); default: each tensor's multimodal dtype.
        max_shard_size: shard size of the written checkpoint.
        overwrite: replace an existing ``out`` if it is an earlier merge (it holds
            ``babymerge_recipe.json``); ``"any"``: replace whatever directory is there. Never
            an input: ``out`` may not be, contain or lie inside ``mm_ckpt``, ``lang_ckpt`` or
            ``base_ckpt``.
        allow_different_tokenizers: merge even if the two tokenizers differ (the embedding rows
            would then mean different tokens: only for tokenizers you know are aligned).
        keep_sources: (in memory only) keep the checkpoints open, as ``report.remerge``, so
            the merge can be redone in place for other alphas (alpha sweeps): it reads them
            again chunk by chunk, which costs no memory beyond the model's and takes about
            as long as reading them (from the page cache: a second or two per GB).
        progress: show a tqdm bar.
        **options: method options (``density``, ``scale``, ``seed``, ...).
    """
    start = time.perf_counter()
    merge_method = get_method(method)
    options = _typed_options(merge_method, merge_method.resolve_options(options))
    if isinstance(alpha, str):
        alpha = parse_alpha(alpha)
    out_dtype = parse_dtype(dtype)
    if out is not None:
        parse_size(max_shard_size)
    mm = Checkpoint(mm_ckpt, "multimodal")
    lang = Checkpoint(lang_ckpt, "language-only")
    base = Checkpoint(base_ckpt, "base") if base_ckpt is not None else None
    _check_roles(mm, lang)
    schedule = AlphaSchedule(alpha, num_layers=mm.num_layers)
    if not allow_different_tokenizers:
        _check_tokenizers(mm, lang)
    plan = _plan(mm, lang, base, schedule, out_dtype)

    report = MergeReport(
        method=method,
        alpha=alpha,
        tensors_merged=sum(e.lang_key is not None for e in plan),
        tensors_kept=sum(e.lang_key is None for e in plan),
        params_merged=sum(math.prod(e.shape) for e in plan if e.lang_key is not None),
        params_kept=sum(math.prod(e.shape) for e in plan if e.lang_key is None),
        ignored_language_only=sorted(set(lang.tensors) - {e.lang_key for e in plan}),
    )
    sources = (mm, lang, base)
    if out is None:
        check_fits(_memory_needed(plan, merge_method), f"merging {mm.path} and {lang.path} in memory")
    bar = tqdm(plan, desc=f"merging ({method})", unit="tensor", disable=not progress)
    with _one_thread_per_chunk(merge_method):
        if out is None:
            scratch = _Scratch()
            report.model = _merge_into_model(
                mm, plan, bar, lambda e: _merged_chunks(e, *sources, merge_method, options, scratch)
            )
            _check_unchanged(sources)
            if keep_sources:
                report.remerge = Remerger(report.model, plan, sources, merge_method, options)
        elif keep_sources:
            raise BabyMergeError("keep_sources applies to in-memory merges (out=None)")
        else:
            inputs = [mm.path, lang.path] + ([base.path] if base else [])
            with atomic_output_dir(out, overwrite=overwrite, protect=inputs, owner_marker=RECIPE_NAME) as tmp:
                layout = [(e.key, e.dtype, e.shape) for e in plan]
                with StreamingSafetensorsWriter(tmp, layout, max_shard_size) as writer:

                    def merge_and_write(entry: _Entry, scratch: _Scratch) -> None:
                        start = 0
                        for chunk in _merged_chunks(entry, mm, lang, base, merge_method, options, scratch):
                            writer.write(entry.key, start, chunk)
                            start += chunk.numel()

                    _in_threads(plan, merge_and_write, _threads_for(merge_method), bar)
                    writer.close()
                _check_unchanged(sources)
                _write_side_files(mm, tmp, out_dtype)
                _write_recipe(tmp / RECIPE_NAME, report, mm, lang, base, options)
            report.out = Path(out)
    if report.remerge is None:
        for ckpt in filter(None, sources):
            ckpt.close()
    report.seconds = time.perf_counter() - start
    return report


def _check_unchanged(sources) -> None:
    """Refuse a result computed from an input that changed while it was read (rewritten in
    place: a truncation is caught by the short read itself)."""
    for ckpt in filter(None, sources):
        ckpt.check_unchanged()


def _memory_needed(plan: list[_Entry], method: MergeMethod) -> int:
    """Bytes an in-memory merge allocates: the model in its dtype, plus the largest tensor's
    float32 copies (inputs, base, result and method temporaries) for methods that need whole
    tensors, or a few chunk buffers for elementwise ones."""
    model = sum(math.prod(e.shape) * e.dtype.itemsize for e in plan)
    largest = max((math.prod(e.shape) for e in plan if e.lang_key), default=0)
    working = 6 * 4 * largest if not method.elementwise else 8 * 4 * CHUNK
    return model + working


@contextlib.contextmanager
def _one_thread_per_chunk(method: MergeMethod) -> Iterator[None]:
    """Elementwise methods run their chunks on one torch thread (restored afterwards). A chunk
    is a few cache-sized passes: splitting each over threads costs more in OpenMP's fork and
    join than it saves, and many times more when another process holds a core (every pass
    then waits for a descheduled thread: 20x slower on a loaded 2-core machine). A second
    core gets whole tensors of its own instead (``_in_threads``)."""
    threads = torch.get_num_threads()
    if not method.elementwise or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _threads_for(method: MergeMethod) -> int:
    """Two threads for elementwise methods where this process may use two CPUs: each merges
    and writes its own tensors (no handing over of chunks: a thread wakes up late on a VM).
    One for the others, whose whole-tensor operations use torch's own threads."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # not on macOS
    return 2 if method.elementwise and cpus >= 2 else 1


def _in_threads(plan: list[_Entry], work, threads: int, bar) -> None:
    """``work(entry, scratch)`` for every entry, on ``threads`` threads (this one and helpers),
    each with its own buffers, taking the largest remaining tensor next (so that both finish
    together). The first error stops the others after their current tensor and is raised."""
    if threads == 1:
        scratch = _Scratch()
        for entry in plan:
            work(entry, scratch)
            bar.update(1)
        return
    todo = sorted(plan, key=lambda e: math.prod(e.shape), reverse=True)
    lock, failed = threading.Lock(), threading.Event()

    def worker() -> None:
        torch.set_num_threads(1)  # OpenMP's thread count is per calling thread
        scratch, entry = _Scratch(THREADED_CHUNK), None
        try:
            while not failed.is_set():
                with lock:
                    if entry is not None:
                        bar.update(1)
                    if not todo:
                        return
                    entry = todo.pop(0)
                work(entry, scratch)
        except BaseException:  # an error, or Ctrl-C in this thread
            failed.set()
            raise

    with ThreadPoolExecutor(threads - 1, "babymerge-merge") as helpers:
        futures = [helpers.submit(worker) for _ in range(threads - 1)]
        worker()  # an error here stops the helpers after their current tensor; the pool waits for them
    for future in futures:
        future.result()  # raises a helper's error


class Remerger:
    """Redo an in-memory merge in place for another alpha, reading the checkpoints again.

    Alpha sweeps evaluate the same pair at many alphas. Keeping both models in memory would
    cost two more models (as float32 copies: four times a bfloat16 pair's files); reading
    them again chunk by chunk costs only the buffers, and from the page cache it takes a second
    or two per GB: little next to an evaluation. The merged tensors are recomputed with the
    same code as ``merge()`` (``_merged_chunks``), so a swept alpha gives bit-identical weights
    to a fresh merge. Checkpoint files changed since the first merge are refused.
    """

    def __init__(self, model, plan: list[_Entry], sources: tuple, method: MergeMethod, options: dict):
        self.model, self.entries, self.sources = model, [e for e in plan if e.lang_key], sources
        self.method, self.options = method, options
        self.alpha: Any = None

    def set_alpha(self, alpha) -> None:
        if isinstance(alpha, str):
            alpha = parse_alpha(alpha)
        schedule = AlphaSchedule(alpha, self.sources[0].num_layers)
        schedule.check_covers([e.text_key for e in self.entries])
        _check_unchanged(self.sources)
        state, scratch = self.model.state_dict(), _Scratch()
        with torch.no_grad(), _one_thread_per_chunk(self.method):
            for entry in self.entries:
                entry = dataclasses.replace(entry, alpha=schedule(entry.text_key))
                _fill(state[entry.key], _merged_chunks(entry, *self.sources, self.method, self.options, scratch))
        _check_unchanged(self.sources)
        self.alpha = alpha


# -- planning ---------------------------------------------------------------------------------
def _plan(
    mm: Checkpoint, lang: Checkpoint, base: Checkpoint | None, schedule: AlphaSchedule, out_dtype
) -> list[_Entry]:
    lang_names = {lang.text_key(k): k for k in lang.tensors}
    base_names = {base.text_key(k): k for k in base.tensors} if base else {}
    plan = []
    for key, info in mm.tensors.items():
        text_key = mm.text_key(key)
        floating = info.dtype.is_floating_point
        entry = _Entry(key, text_key, out_dtype if (out_dtype and floating) else info.dtype, info.shape)
        lang_key = lang_names.get(text_key)
        if lang_key is None or not floating or key.endswith(KEEP_FROM_MULTIMODAL):
            plan.append(entry)
            continue
        _check_shape(key, info.shape, lang, lang_key)
        if base is not None:
            entry.base_key = base_names.get(text_key)
            if entry.base_key is None:
                raise BabyMergeError(
                    f"base checkpoint {str(base.path)!r} has no parameter {text_key!r} that both models share"
                )
            _check_shape(key, info.shape, base, entry.base_key)
        entry.lang_key = lang_key
        plan.append(entry)
    merged = [e for e in plan if e.lang_key is not None]
    if not merged:
        raise BabyMergeError(
            f"the language-only checkpoint {str(lang.path)!r} ({lang.architecture}) shares no parameter with the "
            f"multimodal one {str(mm.path)!r} ({mm.architecture}): e.g. {next(iter(lang.tensors))!r} vs "
            f"{mm.text_key(next(iter(mm.tensors)))!r}. Is it the language-only twin of the same shape?"
        )
    schedule.check_covers([e.text_key for e in merged])
    for entry in merged:
        entry.alpha = schedule(entry.text_key)
    return plan


def _check_shape(key: str, shape, other: Checkpoint, other_key: str) -> None:
    other_shape = other.tensors[other_key].shape
    if tuple(other_shape) != tuple(shape):
        vocab_differs = ("embed" in key or "lm_head" in key) and shape[0] != other_shape[0]
        hint = (
            " (different vocabulary sizes: were both trained with the same tokenizer?)"
            if vocab_differs
            else " (not the same decoder shape)"
        )
        raise BabyMergeError(
            f"shape mismatch for tensor {key!r}: multimodal {list(shape)} vs {other.role} {list(other_shape)} "
            f"({other_key!r} in {str(other.path)!r}){hint}"
        )


def _check_tokenizers(mm: Checkpoint, lang: Checkpoint) -> None:
    """Same embedding row must mean the same token in both models."""
    files = [c.path / "tokenizer.json" for c in (mm, lang)]
    if all(f.is_file() for f in files) and files[0].stat().st_size == files[1].stat().st_size:
        if files[0].read_bytes() == files[1].read_bytes():
            return  # the same file: the same ids, without building two vocabularies (~15 MB, 0.1 s)
    vocabs = [_vocab(c) for c in (mm, lang)]
    if None in vocabs:
        missing = " and ".join(f"{c.role} checkpoint {str(c.path)!r}" for c, v in zip((mm, lang), vocabs) if v is None)
        consequence = "the merged checkpoint will have no tokenizer either; " if vocabs[0] is None else ""
        verb = "have" if vocabs == [None, None] else "has"
        logger.warning(
            f"the {missing} {verb} no tokenizer files: cannot check that both models use the same token ids; "
            f"{consequence}copy the tokenizer it was trained with next to its weights (tokenizer.save_pretrained)"
        )
        return
    if vocabs[0] == vocabs[1]:
        return
    a, b = vocabs
    differ = sorted(t for t in set(a) | set(b) if a.get(t) != b.get(t))
    raise BabyMergeError(
        f"the tokenizers of {str(mm.path)!r} and {str(lang.path)!r} differ ({len(a)} vs {len(b)} tokens, "
        f"{len(differ)} tokens with different ids, e.g. {differ[:5]}); their embedding rows do not line up. "
        "Merge models trained with the same tokenizer, or pass allow_different_tokenizers=True "
        "(--force-tokenizer) if you know the ids agree."
    )


def _vocab(ckpt: Checkpoint) -> dict[str, int] | None:
    """The checkpoint's token -> id map (None if it has no tokenizer files): read from
    ``tokenizer.json`` with ``tokenizers``, or through transformers for other formats."""
    try:
        if (ckpt.path / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            return Tokenizer.from_file(str(ckpt.path / "tokenizer.json")).get_vocab(with_added_tokens=True)
        if any(ckpt.path.glob("tokenizer*")):
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(ckpt.path).get_vocab()
    except Exception as err:  # tokenizers raises its own Exception type for unreadable files
        raise BabyMergeError(f"cannot load the tokenizer of {ckpt.role} checkpoint {str(ckpt.path)!r}: {err}") from err
    return None


# -- computing ---------------------------------------------------------------------------------
def _row_spans(shape, chunk: int) -> list[tuple[int, int]]:
    """Row ranges of about ``chunk`` elements each (of a tensor with at least one dimension)."""
    per = max(1, chunk // max(1, math.prod(shape[1:])))
    return [(start, min(shape[0], start + per)) for start in range(0, shape[0], per)]


class _Scratch:
    """Buffers reused from chunk to chunk: a fresh allocation per chunk would cost its page
    faults again each time, and the heap grows between the chunks. The output chunk too is
    reused (``output``): each is written to the file or copied into the model before the
    next is computed."""

    def __init__(self, chunk: int | None = None):
        self.chunk = chunk or CHUNK  # elements per chunk
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, slot: str, shape, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        n = math.prod(shape)
        buffer = self._buffers.get(slot)
        if buffer is None or buffer.numel() < n:
            buffer = self._buffers[slot] = torch.empty(max(n, self.chunk), dtype=dtype)
        return buffer[:n].view(shape)

    def output(self, dtype: torch.dtype, shape) -> torch.Tensor:
        return self.get(f"result-{dtype}", shape, dtype)


def _merged_chunks(
    entry: _Entry, mm: Checkpoint, lang: Checkpoint, base, method: MergeMethod, options, scratch: _Scratch
) -> Iterator[torch.Tensor]:
    """The output tensor as consecutive flat chunks of rows; whole for methods that need the
    whole tensor (norms, top-k, random masks).

    Elementwise methods compute on the rows read into reused buffers, chunk by chunk; with
    the method's ``into`` (linear) from those rows straight into a reused output chunk
    (``_merge_rows``), so that the only copies are the rows read and the output chunk. NaN/inf are refused with
    one check of the merged chunk instead of one per input: an elementwise method is
    arithmetic, which carries a NaN or inf of any input into its result (inf * 0 is NaN); the
    inputs are checked, to name the broken one, only when the result is not finite, or when
    the result is one of the inputs (linear at alpha 0 or 1) and so says nothing of the
    others. A result that is not finite from finite inputs (an overflow) is written, as it
    was when each input was checked instead."""
    if entry.lang_key is None:
        for span, (part,) in _chunk_reads([(mm, entry.key)], entry.shape, scratch):
            chunk = part.to(entry.dtype)
            if chunk.is_floating_point() and not all_finite(chunk):
                mm.check_finite(entry.key, part, span)
            yield chunk.reshape(-1)
        return
    if not method.elementwise:
        m, l = mm.read(entry.key).float(), lang.read(entry.lang_key).float()
        b = (
            base.read(entry.base_key).float() if entry.base_key else m
        )  # no base: the base *is* m (methods check identity)
        yield method.fn(m, l, b, entry.alpha, entry.text_key, **options).to(entry.dtype).reshape(-1)
        return
    into = method.into if options == method.options else None  # options at their defaults
    sources = [(mm, entry.key), (lang, entry.lang_key)] + ([(base, entry.base_key)] if entry.base_key else [])
    for span, views in _chunk_reads(sources, entry.shape, scratch):
        if into is None:
            inputs = [v.float() for v in views]
            m, l = inputs[0], inputs[1]
            b = inputs[2] if entry.base_key else m
            merged = method.fn(m, l, b, entry.alpha, entry.text_key, **options)
            chunk = merged.to(entry.dtype)
            check = any(merged is x for x in (m, l, b)) or not all_finite(chunk)
        else:
            chunk = scratch.output(entry.dtype, views[0].shape)
            check = _merge_rows(into, entry, views, chunk, scratch)
        if check:
            for (ckpt, key), view in zip(sources, views):
                ckpt.check_finite(key, view, span)
        yield chunk.reshape(-1)


def _merge_rows(into, entry: _Entry, views: list[torch.Tensor], out: torch.Tensor, scratch: _Scratch) -> bool:
    """Merge rows of the sources (``views``) with a method's ``into`` into ``out`` (the output
    chunk, in the output dtype). True if the inputs must be checked for NaN/inf: the result
    is not finite, or it is one of the inputs (see ``_merged_chunks``).

    Where the sources and the output share a dtype computed in float32 (float32, bfloat16,
    float16: the usual case) ``into`` reads the rows as read and writes the output chunk
    directly; otherwise (inputs of mixed dtypes, ``dtype=`` changing it, float64) it works on
    float32 copies, which gives the same bits as the direct way (see ``register``)."""
    inputs, target = views, out
    if out.dtype not in (torch.float32, torch.bfloat16, torch.float16) or any(v.dtype != out.dtype for v in views):
        inputs = [
            v if v.dtype == torch.float32 else scratch.get(f"in{i}", v.shape).copy_(v) for i, v in enumerate(views)
        ]
        target = out if out.dtype == torch.float32 else scratch.get("out", out.shape)
    m, l = inputs[0], inputs[1]
    b = inputs[2] if len(inputs) > 2 else m
    merged = into(m, l, b, entry.alpha, entry.text_key, out=target)
    if merged is not out:
        out.copy_(merged)
    return any(merged is x for x in (m, l, b)) or not all_finite(out)


def _chunk_reads(sources: list[tuple[Checkpoint, str]], shape, scratch: _Scratch) -> Iterator[tuple[Any, list]]:
    """``(rows, tensors)`` for each chunk of a tensor (``_row_spans``): the rows of each source
    ``(checkpoint, key)`` read into its reused buffer (valid until the next chunk)."""
    infos = [ckpt.tensors[key] for ckpt, key in sources]
    spans = _row_spans(shape, scratch.chunk) if shape else [None]
    for span in spans:
        rows = shape if span is None else (span[1] - span[0], *shape[1:])
        buffers = [scratch.get(f"read{i}-{info.dtype}", rows, info.dtype) for i, info in enumerate(infos)]
        yield span, [ckpt.read_into(key, out, span) for (ckpt, key), out in zip(sources, buffers)]


def _fill(target: torch.Tensor, chunks: Iterator[torch.Tensor]) -> None:
    """Copy consecutive flat chunks into a parameter."""
    flat, offset = target.view(-1), 0
    for chunk in chunks:
        flat[offset : offset + chunk.numel()].copy_(chunk)
        offset += chunk.numel()


def _merge_into_model(mm: Checkpoint, plan: list[_Entry], bar, chunks_of):
    """Build the multimodal model's class without initialising weights, then fill it."""
    from transformers import AutoConfig
    from transformers.initialization import no_init_weights

    config = AutoConfig.from_pretrained(mm.path)
    model_class = _model_class(config)
    dtype = next((e.dtype for e in plan if e.dtype.is_floating_point), torch.float32)
    with no_init_weights():
        model = model_class._from_config(config, dtype=dtype)
    state = model.state_dict()
    filled = set()
    with torch.no_grad():
        for entry in bar:
            if entry.key not in state:
                raise BabyMergeError(
                    f"tensor {entry.key!r} of {str(mm.path)!r} is not a parameter of {model_class.__name__}; "
                    "was the checkpoint saved by an older transformers? Re-save it with save_pretrained."
                )
            _fill(state[entry.key], chunks_of(entry))
            filled.add(entry.key)
    model.tie_weights()
    # Tied parameters (GPT-2's or a tie_word_embeddings Llama's lm_head) share the storage of
    # a filled one. state_dict() detaches a new tensor object on every call, so compare storages.
    filled_storages = {state[k].untyped_storage().data_ptr() for k in filled}
    tied = {name for name, p in model.state_dict().items() if p.untyped_storage().data_ptr() in filled_storages}
    missing = sorted(set(state) - filled - tied - _non_persistent(model))
    if missing:
        raise BabyMergeError(
            f"the multimodal checkpoint {str(mm.path)!r} lacks parameters of {model_class.__name__}: {missing[:5]}"
        )
    return model.eval()


def _non_persistent(model) -> set[str]:
    return {
        f"{prefix}.{b}".lstrip(".")
        for prefix, module in model.named_modules()
        for b in module._non_persistent_buffers_set
    }


def _model_class(config):
    import transformers

    import babymerge

    for name in config.architectures or []:
        cls = getattr(babymerge, name, None) or getattr(transformers, name, None)
        if cls is not None:
            return cls
    return transformers.AutoModelForCausalLM._model_mapping[type(config)]


# -- writing -----------------------------------------------------------------------------------
def _write_side_files(mm: Checkpoint, directory: Path, out_dtype) -> None:
    """Config (dtype updated), tokenizer, processor and generation files of the multimodal model;
    for BabyLLaVA also ``auto_map`` and the code files, so the output loads with plain
    transformers (``trust_remote_code=True``) where babymerge is not installed."""
    from ..remote_code import with_auto_map, write_remote_code

    config = with_auto_map(json.loads(json.dumps(mm.config)))
    if out_dtype is not None:
        name = str(out_dtype).removeprefix("torch.")
        for cfg in (config, config.get("text_config")):
            if isinstance(cfg, dict):
                cfg["dtype"] = name
                cfg.pop("torch_dtype", None)
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    for pattern in SIDE_FILES:
        for path in mm.path.glob(pattern):
            if path.is_file():
                shutil.copy2(path, directory / path.name)
    write_remote_code(directory, config)


def _write_recipe(path: Path, report: MergeReport, mm, lang, base, options) -> None:
    """Record how the checkpoint was made, next to it (and exportable to mergekit YAML)."""
    alpha = report.alpha if isinstance(report.alpha, (int, float, Mapping)) else list(report.alpha)
    recipe = {
        "method": report.method,
        "alpha": alpha,
        "options": options,
        "multimodal": str(mm.path.resolve()),
        "language_only": str(lang.path.resolve()),
        "base": str(base.path.resolve()) if base else None,
        "tensors_merged": report.tensors_merged,
        "tensors_kept": report.tensors_kept,
        "params_merged": report.params_merged,
        "params_kept": report.params_kept,
    }
    path.write_text(json.dumps(recipe, indent=2) + "\n")


def _typed_options(method: MergeMethod, options: dict[str, Any]) -> dict[str, Any]:
    """Method options given as text (the CLI, lm-eval model_args) take the type of their
    default: ``density=abc`` is refused here, in words, not deep inside torch."""
    typed = {}
    for name, value in options.items():
        default = method.options.get(name)
        kind = type(default)
        if kind is int and isinstance(value, float):
            value = str(value)
        if isinstance(value, str) and kind in (int, float, bool):
            text = value.strip().lower()
            try:
                if kind is bool:
                    if parse_flag(text) is None:
                        raise ValueError(text)
                    value = parse_flag(text)
                elif kind is int:
                    number = float(text)
                    if not number.is_integer():
                        raise ValueError(text)
                    value = int(number)
                else:
                    value = float(text)
            except ValueError:
                what = {int: "an integer", float: "a number", bool: "true or false"}[kind]
                raise BabyMergeError(
                    f"option {name} of merge method {method.name!r} must be {what} (default {default}), got {value!r}"
                ) from None
        typed[name] = value
    return typed


def _check_roles(mm: Checkpoint, lang: Checkpoint) -> None:
    """Catch swapped or duplicated inputs: the result keeps only what the multimodal model has."""
    if os.path.realpath(mm.path) == os.path.realpath(lang.path):
        logger.warning(
            f"--mm and --lang are the same checkpoint {str(mm.path)!r}: the merge gives it back unchanged "
            "for every alpha. Was --lang meant to be the language-only twin?"
        )
    if lang.is_llava_layout and not mm.is_llava_layout:
        only_lang = sorted({lang.text_key(k) for k in lang.tensors} - {mm.text_key(k) for k in mm.tensors})
        raise BabyMergeError(
            f"--mm {str(mm.path)!r} is a text-only {mm.architecture} but --lang {str(lang.path)!r} is a multimodal "
            f"{lang.architecture}: the result would lose its multimodal parameters (e.g. {only_lang[:3]}). "
            "Did you swap --mm and --lang?"
        )
