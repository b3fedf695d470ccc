"""SCE (Wan et al., 2024, FuseChat), mergekit's ``sce``: Select, Calculate, Erase.

    Select:    with select_topk < 1, keep only the entries whose variance across the task
               vectors is in the top select_topk fraction;
    Calculate: each task vector's weight is its mean squared entry, normalised to sum 1;
    Erase:     entries disagreeing with the elected sign (TIES) are dropped;
    merged = base + sum_i c_i d_i m_i / sum_i c_i m_i

The weights come from the task vectors themselves: alpha is not used. Without a base
checkpoint the multimodal model is the base and the only task vector is ``lang - mm``
(mergekit then has a single vector, whose variance is zero: select_topk < 1 keeps nothing).
"""

import torch

from .generalized_task_arithmetic import base_is_multimodal
from .registry import check_fraction, register
from .sparsify import sign_consensus_mask


@register("sce", uses_base=True, mergekit_name="sce")
def sce(mm, lang, base, alpha, key, *, select_topk: float = 1.0):
    """merged = base + sum_i c_i d_i m_i / sum_i c_i m_i, c_i ~ mean square of d_i, m_i sign agreement; alpha unused"""
    check_fraction("select_topk", select_topk)
    tensors = [lang] if base_is_multimodal(mm, base) else [mm, lang]
    task_vectors = torch.stack([t - base for t in tensors], dim=0)
    if select_topk < 1:
        task_vectors = task_vectors * _select_mask(task_vectors, select_topk, base.dtype).unsqueeze(0)
    erase = sign_consensus_mask(task_vectors, base.dtype)
    weights = task_vectors.square().reshape(task_vectors.shape[0], -1).mean(dim=1)
    total = torch.sum(weights).item()
    weights = torch.ones_like(weights) / weights.shape[0] if abs(total) < 1e-6 else weights / total
    while weights.dim() < task_vectors.dim():
        weights = weights.unsqueeze(-1)
    erased = weights * erase
    return base + (task_vectors * erased).sum(dim=0) / torch.sum(erased, dim=0).clamp(min=1e-6)


def _select_mask(task_vectors: torch.Tensor, density: float, dtype) -> torch.Tensor:
    """1 on the ``int(nonzero * density)`` entries of largest variance across the task vectors."""
    if density <= 0:
        return torch.zeros_like(task_vectors[0], dtype=dtype)
    var = torch.var(task_vectors, dim=0, unbiased=False)
    k = int(torch.count_nonzero(var) * density)
    mask = torch.zeros_like(var, dtype=dtype)
    if k == 0:
        return mask
    _, indices = torch.topk(var.abs().view(-1), k=k, largest=True)
    mask.view(-1)[indices] = 1
    return mask
