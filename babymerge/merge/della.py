"""DELLA (Deep, Bhardwaj & Ganesh, 2024), as mergekit's ``della`` and ``della_linear``.

MagPrune: each entry of a task vector is kept with a probability that grows linearly with
its magnitude rank within its row, from ``density - epsilon`` (smallest) to
``density + epsilon`` (largest); with ``rescale`` (default) the kept entries are scaled so
the tensor keeps its L1 norm. The vectors are then combined TIES-style with a sign election
and normalised by the agreeing weights (``della``), or summed with weights (``della_linear``).
Masks are seeded per tensor from ``seed`` and the tensor's name, as for DARE.
"""

from . import sparsify
from .generalized_task_arithmetic import generalized_task_arithmetic, seeded
from .registry import register


def _della(mm, lang, base, alpha, key, consensus, density, epsilon, normalize, rescale, scale, seed):
    with seeded(seed, key):
        return generalized_task_arithmetic(
            mm, lang, base, alpha, sparsify=sparsify.della_magprune, consensus=consensus, normalize=normalize,
            scale=scale, density=density, epsilon=epsilon, rescale=rescale, key=key,
        )  # fmt: skip


@register("della", uses_base=True, mergekit_name="della")
def della(
    mm,
    lang,
    base,
    alpha,
    key,
    *,
    density=1.0,
    epsilon=0.15,
    normalize: bool = True,
    rescale: bool = True,
    scale: float = 1.0,
    seed: int = 0,
):
    """merged = base + scale * sum_i w_i M(d_i) m_i / sum_i w_i m_i, M MagPrune, m_i sign agreement"""
    return _della(mm, lang, base, alpha, key, True, density, epsilon, normalize, rescale, scale, seed)


@register("della_linear", uses_base=True, mergekit_name="della_linear")
def della_linear(
    mm,
    lang,
    base,
    alpha,
    key,
    *,
    density=1.0,
    epsilon=0.15,
    normalize: bool = False,
    rescale: bool = True,
    scale: float = 1.0,
    seed: int = 0,
):
    """merged = base + scale * sum_i w_i M(d_i), M MagPrune (rank-dependent random drop)"""
    return _della(mm, lang, base, alpha, key, False, density, epsilon, normalize, rescale, scale, seed)
