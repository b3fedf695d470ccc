"""DARE (Yu et al., 2024): drop task-vector entries at random, rescale the rest.

``dare_linear`` and ``dare_ties`` are mergekit's: each entry of a task vector is kept with
probability ``density``; with ``rescale`` (the default) the kept entries are scaled so that the
tensor keeps its L1 norm (mergekit's rescaling, not the paper's ``1 / density``); the vectors
are then summed with weights (``dare_linear``) or TIES-style with a sign election
(``dare_ties``), divided by the weights' sum only with ``normalize`` (default off).

The random masks come from torch's RNG seeded per tensor from ``seed`` and the tensor's
name (``generalized_task_arithmetic.tensor_seed``), so a merge is reproducible and does not
depend on the order tensors are processed in. ``dare_*_peft`` are peft's variants
(``peft.utils.merge_utils``; rescaling by ``1 / density``), kept under their own names.
"""

from . import sparsify
from .generalized_task_arithmetic import generalized_task_arithmetic, seeded
from .registry import check_fraction, register
from .task_arithmetic import peft_merge_utils, task_vectors


def _dare(mm, lang, base, alpha, key, consensus, density, normalize, rescale, scale, seed):
    with seeded(seed, key):
        return generalized_task_arithmetic(
            mm, lang, base, alpha, sparsify=sparsify.bernoulli, consensus=consensus, normalize=normalize,
            scale=scale, density=density, rescale=rescale, key=key,
        )  # fmt: skip


@register("dare_linear", uses_base=True, mergekit_name="dare_linear")
def dare_linear(
    mm,
    lang,
    base,
    alpha,
    key,
    *,
    density=1.0,
    normalize: bool = False,
    rescale: bool = True,
    scale: float = 1.0,
    seed: int = 0,
):
    """merged = base + scale * sum_i w_i DARE(d_i): entries kept with probability density, L1 norm restored"""
    return _dare(mm, lang, base, alpha, key, False, density, normalize, rescale, scale, seed)


@register("dare_ties", uses_base=True, mergekit_name="dare_ties")
def dare_ties(
    mm,
    lang,
    base,
    alpha,
    key,
    *,
    density=1.0,
    normalize: bool = False,
    rescale: bool = True,
    scale: float = 1.0,
    seed: int = 0,
):
    """merged = base + scale * sum_i w_i DARE(d_i) m_i, m_i TIES' sign agreement mask"""
    return _dare(mm, lang, base, alpha, key, True, density, normalize, rescale, scale, seed)


def _dare_peft(combine, mm, lang, base, alpha, key, density, seed, scale, **extra):
    check_fraction("density", density)
    tensors, weights = task_vectors(mm, lang, base, alpha)
    with seeded(seed, key):
        mixed = combine(tensors, weights, density, **extra)
    return base + scale * mixed


@register("dare_linear_peft", uses_base=True)
def dare_linear_peft(mm, lang, base, alpha, key, *, density: float = 0.5, seed: int = 0, scale: float = 1.0):
    """merged = base + scale * peft dare_linear([mm - base, lang - base], [1 - alpha, alpha], density)"""
    return _dare_peft(peft_merge_utils().dare_linear, mm, lang, base, alpha, key, density, seed, scale)


@register("dare_ties_peft", uses_base=True)
def dare_ties_peft(
    mm,
    lang,
    base,
    alpha,
    key,
    *,
    density: float = 0.5,
    majority_sign_method: str = "total",
    seed: int = 0,
    scale: float = 1.0,
):
    """merged = base + scale * peft dare_ties([mm - base, lang - base], [1 - alpha, alpha], density)"""
    return _dare_peft(peft_merge_utils().dare_ties, mm, lang, base, alpha, key, density, seed, scale,
                      majority_sign_method=majority_sign_method)  # fmt: skip
