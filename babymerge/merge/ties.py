"""TIES-merging (Yadav et al., 2023): trim, elect sign, disjoint merge of task vectors.

``ties`` is mergekit's: each task vector keeps its top-``density`` fraction of entries by
magnitude; per entry the sign of the sum of the weighted, trimmed vectors is elected; the
weighted entries that agree with it are summed and, with ``normalize`` (mergekit's default),
divided by the sum of the agreeing entries' *weights*::

    merged = base + scale * sum_i w_i d_i m_i / sum_i w_i m_i

``ties_peft`` is peft's variant (``peft.utils.merge_utils.ties``), which divides by the
*number* of agreeing entries instead; it gives a different model whenever the weights are not
equal, and is kept under its own name for comparisons with peft.
"""

from . import sparsify
from .generalized_task_arithmetic import generalized_task_arithmetic
from .registry import check_fraction, register
from .task_arithmetic import peft_merge_utils, task_vectors


@register("ties", uses_base=True, mergekit_name="ties")
def ties(mm, lang, base, alpha, key, *, density=1.0, normalize: bool = True, rescale: bool = False, scale: float = 1.0):
    """merged = base + scale * sum_i w_i d_i m_i / sum_i w_i m_i, d_i the top-density entries, m_i sign agreement"""
    return generalized_task_arithmetic(
        mm, lang, base, alpha, sparsify=sparsify.magnitude, consensus=True, normalize=normalize, scale=scale,
        density=density, rescale=rescale, key=key,
    )  # fmt: skip


@register("ties_peft", uses_base=True)
def ties_peft(
    mm, lang, base, alpha, key, *, density: float = 0.5, majority_sign_method: str = "total", scale: float = 1.0
):
    """merged = base + scale * peft ties([mm - base, lang - base], [1 - alpha, alpha], density) (mean over agreeing count)"""
    check_fraction("density", density)
    tensors, weights = task_vectors(mm, lang, base, alpha)
    return base + scale * peft_merge_utils().ties(tensors, weights, density, majority_sign_method)
