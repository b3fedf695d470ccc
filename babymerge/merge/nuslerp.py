"""NuSLERP, mergekit's ``nuslerp``: spherical interpolation by the weight alpha, of the two
models, or of their task vectors when a base checkpoint is given.

    t = alpha  (mergekit: w_lang / (w_mm + w_lang))
    merged = slerp(t, mm, lang)                         # no base checkpoint
    merged = base + slerp(t, mm - base, lang - base)    # with one

The tensor is one flattened vector (``nuslerp_flatten``, the default), or each row
(``nuslerp_row_wise``) / each column is interpolated separately. Unlike ``slerp`` (which
falls back to linear interpolation when |cos| > 0.9995), only exactly colinear vectors are
interpolated linearly.
"""

import torch

from .generalized_task_arithmetic import base_is_multimodal
from .registry import check_flag, register


def nuslerp_vectors(
    t: float, v0: torch.Tensor, v1: torch.Tensor, dim: int = -1, eps: float = 1e-8, flatten: bool = False
):
    """mergekit's ``nuslerp`` of two tensors along ``dim`` (or flattened)."""
    shape = v0.shape
    if flatten:
        v0, v1 = v0.reshape(-1), v1.reshape(-1)
    elif dim != -1:
        v0, v1 = v0.transpose(dim, -1), v1.transpose(dim, -1)
    u0 = v0 / torch.norm(v0, dim=-1, keepdim=True).clamp(min=1e-7)
    u1 = v1 / torch.norm(v1, dim=-1, keepdim=True).clamp(min=1e-7)
    cos_theta = torch.sum(u0 * u1, dim=-1, keepdim=True).clamp(-1, 1)
    colinear = (1 - cos_theta.square()) <= eps**2
    theta = torch.acos(torch.where(colinear, 0, cos_theta))
    sin_theta = torch.sin(theta)
    result = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / sin_theta
    result = torch.where(colinear, (1 - t) * v0 + t * v1, result)
    if dim != -1 and not flatten:
        result = result.transpose(dim, -1)
    return result.reshape(shape)


@register("nuslerp", mergekit_name="nuslerp")
def nuslerp(mm, lang, base, alpha, key, *, nuslerp_row_wise: bool = False, nuslerp_flatten: bool = True):
    """merged = [base +] slerp(alpha, mm [- base], lang [- base]), flattened, row- or column-wise"""
    nuslerp_flatten = check_flag("nuslerp_flatten", nuslerp_flatten)
    dim = 0 if check_flag("nuslerp_row_wise", nuslerp_row_wise) else -1
    if base_is_multimodal(mm, base):
        return nuslerp_vectors(alpha, mm, lang, dim=dim, flatten=nuslerp_flatten)
    return base + nuslerp_vectors(alpha, mm - base, lang - base, dim=dim, flatten=nuslerp_flatten)
