"""``merge()``: stream two checkpoints into a merged model, on disk or in memory.

A merge runs in three steps, one module each:

* ``plan``: from the safetensors headers alone, which tensors are merged (with which alpha)
  and which are kept from the multimodal model; every shape, vocabulary, alpha and option
  problem is reported before anything is computed or written;
* ``execute``: each tensor computed chunk by chunk (two threads where two CPUs are free),
  into a model's parameters, or again in place for another alpha (``Remerger``);
* ``write``: the tensors streamed into safetensors shards whose headers fix every offset up
  front, then config, tokenizer and remote code beside them, published atomically.

Peak memory stays near one tensor (to disk) or one model (in memory); an in-memory merge
that would not fit the memory this process may use is refused before it starts
(``babymerge.memory.check_fits``). Methods and their options live in ``registry``, alpha
schedules in ``alpha``, mergekit recipes in ``mergekit``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..checkpoint import Checkpoint, parse_dtype
from ..errors import BabyMergeError
from ..memory import check_fits
from ..safetensors_writer import parse_size
from . import breadcrumbs, dare, della, linear, model_stock, nuslerp, sce, slerp, task_arithmetic, ties  # noqa: F401
from .alpha import AlphaSchedule, parse_alpha
from .execute import (
    Remerger,
    Scratch,
    check_unchanged,
    memory_needed,
    merge_into_model,
    merged_chunks,
    one_thread_per_chunk,
)
from .plan import check_roles, check_tokenizers, make_plan
from .registry import METHODS, get_method, register
from .write import recipe, write_checkpoint

__all__ = [
    "METHODS", "AlphaSchedule", "MergeReport", "Remerger", "get_method", "merge", "parse_alpha", "parse_dtype", "register",
]  # fmt: skip


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
        method: a registered method (``METHODS``; ``linear`` is the paper's).
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
        **options: method options (``density``, ``scale``, ``seed``, ...), typed by
            ``MergeMethod.parse_options`` (text such as ``"0.5"`` or ``"true"`` is accepted).
    """
    start = time.perf_counter()
    merge_method = get_method(method)
    options = merge_method.parse_options(options)
    if isinstance(alpha, str):
        alpha = parse_alpha(alpha)
    out_dtype = parse_dtype(dtype)
    if out is not None:
        parse_size(max_shard_size)
    if keep_sources and out is not None:
        raise BabyMergeError("keep_sources applies to in-memory merges (`out=None`)")
    mm = Checkpoint(mm_ckpt, "multimodal")
    lang = Checkpoint(lang_ckpt, "language-only")
    base = Checkpoint(base_ckpt, "base") if base_ckpt is not None else None
    check_roles(mm, lang)
    schedule = AlphaSchedule(alpha, num_layers=mm.num_layers)
    if not allow_different_tokenizers:
        check_tokenizers(mm, lang)
    plan = make_plan(mm, lang, base, schedule, out_dtype)

    report = MergeReport(
        method=method,
        alpha=alpha,
        tensors_merged=sum(e.lang_key is not None for e in plan),
        tensors_kept=sum(e.lang_key is None for e in plan),
        params_merged=sum(e.numel for e in plan if e.lang_key is not None),
        params_kept=sum(e.numel for e in plan if e.lang_key is None),
        ignored_language_only=sorted(set(lang.tensors) - {e.lang_key for e in plan}),
    )
    sources = (mm, lang, base)
    if out is None:
        check_fits(memory_needed(plan, merge_method), f"merging {mm.path} and {lang.path} in memory")
    bar = tqdm(plan, desc=f"merging ({method})", unit="tensor", disable=not progress)
    with one_thread_per_chunk(merge_method):
        if out is None:
            scratch = Scratch()
            report.model = merge_into_model(
                mm, plan, bar, lambda e: merged_chunks(e, *sources, merge_method, options, scratch)
            )
            check_unchanged(sources)
            if keep_sources:
                report.remerge = Remerger(report.model, plan, sources, merge_method, options)
        else:
            report.out = write_checkpoint(
                out, plan, sources, merge_method, options, out_dtype=out_dtype, max_shard_size=max_shard_size,
                overwrite=overwrite, recipe=recipe(report, sources, options), bar=bar,
            )  # fmt: skip
    if report.remerge is None:
        for ckpt in filter(None, sources):
            ckpt.close()
    report.seconds = time.perf_counter() - start
    return report
