"""DARE (Yu et al., 2024): drop task-vector entries at random, rescale the rest.

Each entry of a task vector is kept with probability ``density`` and divided by it, then the
vectors are combined linearly (``dare_linear``) or TIES-style (``dare_ties``), by peft's
``merge_utils``. The random mask is seeded per tensor from ``seed`` and the tensor's name,
so a merge is reproducible and independent of the order tensors are processed in.
"""

import zlib

import torch

from .registry import check_fraction, register
from .task_arithmetic import peft_merge_utils, task_vectors


def _dare(combine, mm, lang, base, alpha, key, density, seed, scale, **extra):
    check_fraction("density", density)
    tensors, weights = task_vectors(mm, lang, base, alpha)
    with torch.random.fork_rng(devices=[]):  # a private RNG per tensor; the global one is untouched
        torch.manual_seed((seed * 1_000_003 + zlib.crc32(key.encode())) % 2**63)
        mixed = combine(tensors, weights, density, **extra)
    return base + scale * mixed


@register("dare_linear", uses_base=True, mergekit_name="dare_linear")
def dare_linear(mm, lang, base, alpha, key, *, density: float = 0.5, seed: int = 0, scale: float = 1.0):
    """merged = base + scale * dare_linear([mm - base, lang - base], [1 - alpha, alpha], density)"""
    return _dare(peft_merge_utils().dare_linear, mm, lang, base, alpha, key, density, seed, scale)


@register("dare_ties", uses_base=True, mergekit_name="dare_ties")
def dare_ties(mm, lang, base, alpha, key, *, density: float = 0.5, majority_sign_method: str = "total", seed: int = 0, scale: float = 1.0):
    """merged = base + scale * dare_ties([mm - base, lang - base], [1 - alpha, alpha], density)"""
    return _dare(peft_merge_utils().dare_ties, mm, lang, base, alpha, key, density, seed, scale, majority_sign_method=majority_sign_method)
