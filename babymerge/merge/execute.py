"""Executing a plan: each output tensor computed chunk by chunk, on one or two threads, into
a model in memory or a consumer (the safetensors writer), and redone in place for another
alpha (``Remerger``, used by sweeps).

Tensors are read from the multimodal, language-only and optional base checkpoints
(``Checkpoint.read_into``, chunk by chunk into reused buffers), merged in float32 (in chunks
for elementwise methods) and cast to the output dtype. Peak memory stays near one tensor (to
disk) or one model (in memory). An input changed while it is read ends the merge with an
error naming it (``check_unchanged``), before anything is published.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from ..checkpoint import Checkpoint, all_finite
from ..errors import BabyMergeError
from .alpha import AlphaSchedule, parse_alpha
from .plan import Entry
from .registry import MergeMethod

# Elements per chunk of rows: 1 MiB of float32, so that an elementwise merge's few passes over
# a chunk (the merge, the finiteness check, the copy into the file) run in the CPU's L2 cache.
CHUNK = 1 << 18
# Where two threads merge (``in_threads``), 4 MiB chunks: each chunk's few torch calls hand
# the GIL to the other thread and back, and on a VM every handover waits for a wake-up; a
# quarter as many chunks made a bfloat16 merge 1.3x faster than 1 MiB ones.
THREADED_CHUNK = 1 << 20


def check_unchanged(sources) -> None:
    """Refuse a result computed from an input that changed while it was read (rewritten in
    place: a truncation is caught by the short read itself)."""
    for ckpt in filter(None, sources):
        ckpt.check_unchanged()


def memory_needed(plan: list[Entry], method: MergeMethod) -> int:
    """Bytes an in-memory merge allocates: the model in its dtype, plus the largest tensor's
    float32 copies (inputs, base, result and method temporaries) for methods that need whole
    tensors, or a few chunk buffers for elementwise ones."""
    model = sum(e.numel * e.dtype.itemsize for e in plan)
    largest = max((e.numel for e in plan if e.lang_key), default=0)
    working = 6 * 4 * largest if not method.elementwise else 8 * 4 * CHUNK
    return model + working


@contextlib.contextmanager
def one_thread_per_chunk(method: MergeMethod) -> Iterator[None]:
    """Elementwise methods run their chunks on one torch thread (restored afterwards). A chunk
    is a few cache-sized passes: splitting each over threads costs more in OpenMP's fork and
    join than it saves, and many times more when another process holds a core (every pass
    then waits for a descheduled thread: 20x slower on a loaded 2-core machine). A second
    core gets whole tensors of its own instead (``in_threads``)."""
    threads = torch.get_num_threads()
    if not method.elementwise or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def threads_for(method: MergeMethod) -> int:
    """Two threads for elementwise methods where this process may use two CPUs: each merges
    and writes its own tensors (no handing over of chunks: a thread wakes up late on a VM).
    One for the others, whose whole-tensor operations use torch's own threads."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # not on macOS
    return 2 if method.elementwise and cpus >= 2 else 1


def in_threads(plan: list[Entry], work, threads: int, bar) -> None:
    """``work(entry, scratch)`` for every entry, on ``threads`` threads (this one and helpers),
    each with its own buffers, taking the largest remaining tensor next (so that both finish
    together). The first error stops the others after their current tensor and is raised."""
    if threads == 1:
        scratch = Scratch()
        for entry in plan:
            work(entry, scratch)
            bar.update(1)
        return
    todo = sorted(plan, key=lambda e: e.numel, reverse=True)
    lock, failed = threading.Lock(), threading.Event()

    def worker() -> None:
        torch.set_num_threads(1)  # OpenMP's thread count is per calling thread
        scratch, entry = Scratch(THREADED_CHUNK), None
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


def _row_spans(shape, chunk: int) -> list[tuple[int, int]]:
    """Row ranges of about ``chunk`` elements each (of a tensor with at least one dimension)."""
    per = max(1, chunk // max(1, math.prod(shape[1:])))
    return [(start, min(shape[0], start + per)) for start in range(0, shape[0], per)]


class Scratch:
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


def merged_chunks(
    entry: Entry, mm: Checkpoint, lang: Checkpoint, base, method: MergeMethod, options, scratch: Scratch
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


def _merge_rows(into, entry: Entry, views: list[torch.Tensor], out: torch.Tensor, scratch: Scratch) -> bool:
    """Merge rows of the sources (``views``) with a method's ``into`` into ``out`` (the output
    chunk, in the output dtype). True if the inputs must be checked for NaN/inf: the result
    is not finite, or it is one of the inputs (see ``merged_chunks``).

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


def _chunk_reads(sources: list[tuple[Checkpoint, str]], shape, scratch: Scratch) -> Iterator[tuple[Any, list]]:
    """``(rows, tensors)`` for each chunk of a tensor (``_row_spans``): the rows of each source
    ``(checkpoint, key)`` read into its reused buffer (valid until the next chunk)."""
    infos = [ckpt.tensors[key] for ckpt, key in sources]
    spans = _row_spans(shape, scratch.chunk) if shape else [None]
    for span in spans:
        rows = shape if span is None else (span[1] - span[0], *shape[1:])
        buffers = [scratch.get(f"read{i}-{info.dtype}", rows, info.dtype) for i, info in enumerate(infos)]
        yield span, [ckpt.read_into(key, out, span) for (ckpt, key), out in zip(sources, buffers)]


def fill(target: torch.Tensor, chunks: Iterator[torch.Tensor]) -> None:
    """Copy consecutive flat chunks into a parameter."""
    flat, offset = target.view(-1), 0
    for chunk in chunks:
        flat[offset : offset + chunk.numel()].copy_(chunk)
        offset += chunk.numel()


def merge_into_model(mm: Checkpoint, plan: list[Entry], bar, chunks_of):
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
            fill(state[entry.key], chunks_of(entry))
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


class Remerger:
    """Redo an in-memory merge in place for another alpha, reading the checkpoints again.

    Alpha sweeps evaluate the same pair at many alphas. Keeping both models in memory would
    cost two more models (as float32 copies: four times a bfloat16 pair's files); reading
    them again chunk by chunk costs only the buffers, and from the page cache it takes a second
    or two per GB: little next to an evaluation. The merged tensors are recomputed with the
    same code as ``merge()`` (``merged_chunks``), so a swept alpha gives bit-identical weights
    to a fresh merge. Checkpoint files changed since the first merge are refused.
    """

    def __init__(self, model, plan: list[Entry], sources: tuple, method: MergeMethod, options: dict):
        self.model, self.entries, self.sources = model, [e for e in plan if e.lang_key], sources
        self.method, self.options = method, options
        self.alpha: Any = None

    def set_alpha(self, alpha) -> None:
        if isinstance(alpha, str):
            alpha = parse_alpha(alpha)
        schedule = AlphaSchedule(alpha, self.sources[0].num_layers)
        schedule.check_covers([e.text_key for e in self.entries])
        check_unchanged(self.sources)
        state, scratch = self.model.state_dict(), Scratch()
        with torch.no_grad(), one_thread_per_chunk(self.method):
            for entry in self.entries:
                entry = dataclasses.replace(entry, alpha=schedule(entry.text_key))
                fill(state[entry.key], merged_chunks(entry, *self.sources, self.method, self.options, scratch))
        check_unchanged(self.sources)
        self.alpha = alpha
