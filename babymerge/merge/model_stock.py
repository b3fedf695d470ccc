"""Model Stock (Jang et al., 2024), mergekit's ``model_stock``: how far to move from the base
towards the two models' average is set by the angle between their task vectors.

    cos = <mm - base, lang - base> / (|mm - base| |lang - base|)
    t = 2 cos / (1 + cos)                 (t = 0 when 1 + cos ~ 0)
    merged = t * (mm + lang) / 2 + (1 - t) * base

per tensor, or per row with ``filter_wise``. It needs a base checkpoint distinct from both
models (a shared ancestor) and does not use alpha: the geometry decides the weights.
"""

import torch

from ..errors import BabyMergeError
from .generalized_task_arithmetic import base_is_multimodal
from .registry import check_flag, register


@register("model_stock", uses_base=True, mergekit_name="model_stock")
def model_stock(mm, lang, base, alpha, key, *, filter_wise: bool = False):
    """merged = t * (mm + lang) / 2 + (1 - t) * base, t = 2 cos / (1 + cos) of the task vectors; alpha unused"""
    if base_is_multimodal(mm, base):
        raise BabyMergeError(
            f"model_stock needs a base checkpoint (a shared ancestor of both models, e.g. the random init): pass "
            f"`base_ckpt`; without one the multimodal model is the base and there is nothing to average ({key})"
        )
    shape = base.shape
    if check_flag("filter_wise", filter_wise):
        w0, ws = (base, [mm, lang]) if base.dim() > 1 else (base.unsqueeze(0), [mm.unsqueeze(0), lang.unsqueeze(0)])
    else:
        w0, ws = base.reshape(-1), [mm.reshape(-1), lang.reshape(-1)]
    a, b = (w - w0 for w in ws)
    norms = torch.norm(a, dim=-1) * torch.norm(b, dim=-1)
    cos_theta = torch.stack([((a * b).sum(dim=-1) / norms.clamp(min=1e-6)).clamp(-1, 1)]).mean(dim=0).unsqueeze(-1)
    denominator = 1 + cos_theta  # 1 + (count - 1) * cos with count = 2
    singular = denominator.abs() < 1e-6
    t = torch.where(singular, torch.zeros_like(cos_theta), (2 * cos_theta) / torch.where(singular, 1, denominator))
    average = sum(ws) / 2
    return (t * average + (1 - t) * w0).reshape(shape)
