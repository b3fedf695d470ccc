"""Spherical linear interpolation from the multimodal towards the language-only weights.

Each tensor is treated as one vector; the result moves along the great circle between the
two directions by the fraction alpha (Shoemake, 1985; mergekit's ``slerp``). Nearly parallel
tensors fall back to linear interpolation, where slerp's formula is numerically unstable.
"""

import math

import torch

from .linear import linear
from .registry import register


@register("slerp", mergekit_name="slerp", float32_inside=True)
def slerp(mm, lang, base, alpha, key, *, dot_threshold: float = 0.9995, eps: float = 1e-8):
    """merged = sin((1 - alpha) * theta) / sin(theta) * mm + sin(alpha * theta) / sin(theta) * lang"""
    if alpha in (0, 1):
        return linear(mm, lang, base, alpha, key)
    a, b = mm.flatten(), lang.flatten()
    dot = float(torch.dot(a / (a.norm() + eps), b / (b.norm() + eps)))
    if abs(dot) > dot_threshold:
        return linear(mm, lang, base, alpha, key)
    theta = math.acos(dot)
    sin_theta = math.sin(theta)
    return (math.sin((1 - alpha) * theta) / sin_theta) * mm + (math.sin(alpha * theta) / sin_theta) * lang
