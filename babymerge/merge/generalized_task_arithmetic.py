"""mergekit's generalized task arithmetic, for a (multimodal, language-only[, base]) triple.

Every task-vector method of mergekit (``task_arithmetic``, ``ties``, ``dare_*``,
``breadcrumbs*``, ``della*``) is one formula with two switches, a sparsification and a sign
consensus (``mergekit/merge_methods/generalized_task_arithmetic.py``)::

    d_i   = sparsify(model_i - base, density_i)          # each task vector thinned
    mixed = sum_i w_i * d_i * m_i                       # m_i = 1, or TIES' sign agreement mask
    mixed = mixed / sum_i w_i * m_i    if normalize     # a zero divisor counts as 1
    merged = base + scale * mixed                       # scale is mergekit's `lambda`

with weights ``w_mm = 1 - alpha`` and ``w_lang = alpha``. As in mergekit, a base that *is*
one of the models (here: no base checkpoint, so the multimodal model is the base) is not a
task vector: only ``lang - mm`` enters the sums (its weight is alpha; the multimodal
model's weight is then unused, exactly as mergekit ignores the base model's weight).

Per-model options (``density``, ``gamma``, ``epsilon``) take one number for both models or a
pair ``(multimodal, language-only)`` (``"0.3,0.5"`` on command lines, ``"0.3;0.5"`` in
lm-eval model_args), as mergekit recipes give them per model; from Python (and mergekit
recipes whose values vary with filters or gradients) also a ``{tensor name: value}`` mapping.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager

import torch

from ..errors import BabyMergeError
from .registry import check_flag, check_fraction


def base_is_multimodal(mm: torch.Tensor, base: torch.Tensor) -> bool:
    """No base checkpoint: merge() then passes the multimodal tensor itself as the base (the
    same object; a base checkpoint's tensor is another object even where its values are equal,
    e.g. norm weights still at their init, and then counts as a third model, as in mergekit)."""
    return base is mm


def per_model(name: str, value, *, fraction: bool = True) -> tuple[float, float]:
    """An option given once or per model, as ``(multimodal value, language-only value)``
    (text is typed by ``MergeMethod.parse_options``)."""
    values = list(value) if isinstance(value, Sequence) else [value, value]
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError):
        raise BabyMergeError(
            f"{name} must be a number or two numbers (multimodal, language-only), got {value!r}"
        ) from None
    if len(values) != 2:
        raise BabyMergeError(f"{name} takes one number or two (multimodal, language-only), got {value!r}")
    if fraction:
        for v in values:
            check_fraction(name, v)
    return values[0], values[1]


def for_tensor(name: str, value, key: str):
    """An option's value for tensor ``key``: the value itself, or its entry in a per-tensor
    ``{tensor name: value}`` mapping (what a mergekit recipe with filters/gradients becomes)."""
    if not isinstance(value, Mapping):
        return value
    try:
        return value[key]
    except KeyError:
        raise BabyMergeError(f"{name} is given per tensor but not for {key!r}") from None


def tensor_seed(seed: int, key: str) -> int:
    """The torch seed of one tensor's random masks: from ``seed`` and the tensor's name, so a
    merge is reproducible whatever order tensors are processed in."""
    return (int(seed) * 1_000_003 + zlib.crc32(key.encode())) % 2**63


@contextmanager
def seeded(seed: int | None, key: str):
    """Run the block on torch's global RNG seeded for this tensor, restoring it afterwards
    (mergekit draws its masks from the global RNG; so do we, from a known state)."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(tensor_seed(seed, key))
        yield


def generalized_task_arithmetic(
    mm: torch.Tensor,
    lang: torch.Tensor,
    base: torch.Tensor,
    alpha: float,
    *,
    sparsify: Callable[..., torch.Tensor] | None,
    consensus: bool,
    normalize: bool,
    scale: float,
    density=1.0,
    key: str = "",
    **sparsify_options,
) -> torch.Tensor:
    """The merged tensor (see the module docstring). ``sparsify_options`` are per-model values
    (``gamma``, ``epsilon``) or shared ones (``rescale``). ``density``, ``gamma``, ``epsilon``
    and ``scale`` may also be ``{tensor name: value}`` mappings, looked up with ``key``."""
    density, scale = for_tensor("density", density, key), float(for_tensor("scale", scale, key))
    sparsify_options = {k: for_tensor(k, v, key) for k, v in sparsify_options.items()}
    normalize = check_flag("normalize", normalize)
    if "rescale" in sparsify_options:
        sparsify_options["rescale"] = check_flag("rescale", sparsify_options["rescale"])
    densities = per_model("density", density)
    per = {k: per_model(k, v) for k, v in sparsify_options.items() if k in ("gamma", "epsilon")}
    shared = {k: v for k, v in sparsify_options.items() if k not in per}
    models = [(1, lang, alpha)] if base_is_multimodal(mm, base) else [(0, mm, 1.0 - alpha), (1, lang, alpha)]

    deltas = base.new_empty((len(models), *base.shape))
    for row, (i, model, _) in enumerate(models):
        delta = model - base
        if sparsify is not None:
            delta = sparsify(delta, densities[i], **{k: v[i] for k, v in per.items()}, **shared)
        deltas[row] = delta
    weights = torch.tensor([w for _, _, w in models], dtype=deltas.dtype)
    while deltas.dim() > weights.dim():
        weights.unsqueeze_(-1)
    deltas.mul_(weights)

    if consensus:
        from .sparsify import sign_consensus_mask

        mask = sign_consensus_mask(deltas)
        mixed = (deltas * mask).sum(dim=0)
        divisor = (weights * mask).sum(dim=0)
        divisor[divisor == 0] = 1
    else:
        mixed = deltas.sum(dim=0)
        divisor = weights.sum(dim=0)
        divisor[divisor.abs() < 1e-8] = 1
    if normalize:
        mixed /= divisor
    if scale != 1:
        mixed *= scale
    return base + mixed
