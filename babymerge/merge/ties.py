"""TIES-merging (Yadav et al., 2023): trim, elect sign, disjoint merge of task vectors.

Each task vector keeps its top-``density`` fraction of entries by magnitude, a sign is
elected per entry, and only the entries agreeing with it are averaged. peft's
``merge_utils.ties`` does the work; we add the base back and scale.
"""


from .registry import check_fraction, register
from .task_arithmetic import peft_merge_utils, task_vectors


@register("ties", uses_base=True, mergekit_name="ties")
def ties(mm, lang, base, alpha, key, *, density: float = 0.5, majority_sign_method: str = "total", scale: float = 1.0):
    """merged = base + scale * ties([mm - base, lang - base], [1 - alpha, alpha], density)"""
    check_fraction("density", density)
    tensors, weights = task_vectors(mm, lang, base, alpha)
    return base + scale * peft_merge_utils().ties(tensors, weights, density, majority_sign_method)
