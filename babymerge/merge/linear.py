"""Linear merge, the paper's method: ``alpha * lang + (1 - alpha) * mm``.

Takmaz et al. (BabyLM 2025) interpolate the language-only and the multimodal weights;
alpha = 0.3 kept Winoground while recovering part of BLiMP. alpha = 0 returns the
multimodal weights bit for bit and alpha = 1 the language-only ones.
"""

import torch

from .registry import register


def linear_into(mm, lang, base, alpha, key, *, out, scratch):
    """``linear`` computed into ``out``, with ``scratch`` for ``(1 - alpha) * mm``: the same
    two products and one sum, rounded alike, and nothing allocated (see ``register``)."""
    if alpha == 0:
        return mm
    if alpha == 1:
        return lang
    torch.mul(lang, alpha, out=out)
    return out.add_(torch.mul(mm, 1 - alpha, out=scratch))


@register("linear", elementwise=True, mergekit_name="linear", float32_inside=True, into=linear_into)
def linear(mm, lang, base, alpha, key):
    """merged = alpha * lang + (1 - alpha) * mm"""
    if alpha == 0:
        return mm
    if alpha == 1:
        return lang
    merged = torch.mul(lang, alpha)  # the same two roundings as the formula, one temporary fewer
    return merged.add_(torch.mul(mm, 1 - alpha))
