"""Task arithmetic (Ilharco et al., 2023): add weighted task vectors to a shared base.

Task vectors are ``mm - base`` and ``lang - base``, weighted ``1 - alpha`` and ``alpha``:
merged = base + scale * ((1 - alpha) * (mm - base) + alpha * (lang - base)).
With scale = 1 this equals the linear merge; scale > 1 extrapolates. Without a base
checkpoint the multimodal model is the base, so the only task vector is ``lang - mm``.
Computed as mergekit's ``task_arithmetic`` (``generalized_task_arithmetic``).
"""

import torch

from .registry import register


def task_vectors(mm, lang, base, alpha):
    """The two task vectors and their weights, as peft's merge utilities take them (the ``*_peft`` methods)."""
    return [mm - base, lang - base], torch.tensor([1.0 - alpha, alpha], dtype=mm.dtype)


def peft_merge_utils():
    """peft's merge functions, imported on first use (peft imports transformers)."""
    from peft.utils import merge_utils

    return merge_utils


@register("task_arithmetic", uses_base=True, elementwise=True, mergekit_name="task_arithmetic")
def task_arithmetic(mm, lang, base, alpha, key, *, scale: float = 1.0):
    """merged = base + scale * ((1 - alpha) * (mm - base) + alpha * (lang - base))"""
    from .generalized_task_arithmetic import generalized_task_arithmetic

    return generalized_task_arithmetic(
        mm, lang, base, alpha, sparsify=None, consensus=False, normalize=False, scale=scale, key=key
    )
