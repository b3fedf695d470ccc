"""Sparsification of task vectors, as mergekit does it (``mergekit/sparsify.py``).

The task-vector methods (``ties``, ``dare_*``, ``breadcrumbs*``, ``della*``) differ only in
how each task vector is thinned before the vectors are combined:

* ``magnitude`` (TIES): keep the ``density`` fraction of entries largest in magnitude;
* ``bernoulli`` (DARE): keep each entry with probability ``density``;
* ``magnitude_outliers`` (Model Breadcrumbs): drop the ``gamma`` fraction largest in
  magnitude (outliers) and then the smallest, so that ``density`` of the entries remain;
* ``della_magprune`` (DELLA): keep each entry with a probability that grows linearly with its
  magnitude rank within its row, from ``density - epsilon`` to ``density + epsilon``.

With ``rescale`` the kept entries are multiplied so that the tensor keeps its L1 norm:
mergekit's ``RescaleNorm.l1`` (not DARE's paper factor ``1 / density``, which only equals it
in expectation). The formulas, orders of operations and random draws are mergekit's own, so
a tensor sparsified here from the same torch RNG state equals mergekit's bit for bit.
"""

from __future__ import annotations

import torch


def rescaled_masked_tensor(tensor: torch.Tensor, mask: torch.Tensor, rescale: bool, eps: float = 1e-7) -> torch.Tensor:
    """``tensor * mask``, rescaled to the L1 norm of ``tensor`` when ``rescale`` (and both norms are not tiny)."""
    masked = tensor * mask
    if not rescale:
        return masked
    before, after = tensor.abs().sum(), masked.abs().sum()
    if before < eps or after < eps:
        return masked
    return masked * (before / after)


def magnitude(tensor: torch.Tensor, density: float, rescale: bool = False) -> torch.Tensor:
    """Keep the ``max(1, int(density * n))`` entries largest in magnitude."""
    if density >= 1:
        return tensor
    if density <= 0 or tensor.numel() == 0:
        return torch.zeros_like(tensor)
    k = max(1, int(density * tensor.numel()))
    mask = torch.zeros(tensor.numel(), dtype=tensor.dtype, device=tensor.device)
    top = torch.argsort(tensor.abs().reshape(-1).float(), descending=True)[:k]
    mask[top] = 1
    return rescaled_masked_tensor(tensor, mask.reshape_as(tensor), rescale)


def magnitude_outliers(
    tensor: torch.Tensor, density: float, gamma: float = 0.01, rescale: bool = False
) -> torch.Tensor:
    """Drop the ``gamma`` fraction largest in magnitude, then the smallest, keeping ``int(density * n)``."""
    if density >= 1:
        return tensor
    n = tensor.numel()
    keep, top = int(density * n), int(gamma * n)
    bottom = max(0, n - keep - top)  # fewer outliers dropped when density asks for more entries
    order = torch.sort(tensor.abs().reshape(-1).float(), descending=False).indices
    mask = torch.zeros(n, dtype=tensor.dtype, device=tensor.device)
    mask[order[bottom : bottom + keep]] = 1
    return rescaled_masked_tensor(tensor, mask.reshape_as(tensor), rescale)


def bernoulli(tensor: torch.Tensor, density: float, rescale: bool = False) -> torch.Tensor:
    """Keep each entry with probability ``density`` (one ``torch.bernoulli`` draw, global RNG)."""
    if density >= 1:
        return tensor
    work = torch.bfloat16 if tensor.dtype == torch.bfloat16 else torch.float32  # mergekit's CPU rule
    mask = torch.bernoulli(torch.full_like(tensor, density, dtype=work))
    return rescaled_masked_tensor(tensor.to(work), mask, rescale).to(tensor.dtype)


def della_magprune(tensor: torch.Tensor, density: float, epsilon: float = 0.15, rescale: bool = False) -> torch.Tensor:
    """Keep each entry with probability ``density - epsilon + 2 * epsilon * r``, ``r`` its magnitude
    rank in its row scaled to [0, 1] (a 1-D tensor is one row)."""
    if density >= 1:
        return tensor
    if density <= 0:
        return torch.zeros_like(tensor)
    if density + epsilon >= 1 or density - epsilon <= 0:
        from ..errors import BabyMergeError

        raise BabyMergeError(
            f"della: epsilon={epsilon} must leave density +/- epsilon inside (0, 1) (density={density})"
        )
    shape = tensor.shape
    rows = tensor.unsqueeze(0) if tensor.dim() < 2 else tensor
    work = torch.bfloat16 if tensor.dtype == torch.bfloat16 else torch.float32  # mergekit's CPU rule
    ranks = torch.argsort(rows.abs(), dim=1, descending=False).argsort(dim=1).to(work) + 1
    low, high = ranks.min(dim=1, keepdim=True).values, ranks.max(dim=1, keepdim=True).values
    rank_norm = ((ranks - low) / (high - low)).clamp(0, 1)
    mask = torch.bernoulli((density - epsilon) + rank_norm * 2 * epsilon).to(work)
    return rescaled_masked_tensor(rows.to(work), mask, rescale).to(tensor.dtype).reshape(shape)


def sign_consensus_mask(deltas: torch.Tensor, mask_dtype: torch.dtype | None = None) -> torch.Tensor:
    """TIES' sign election (mergekit's ``get_mask(method="sum")``): per entry, the sign of the sum
    of the (weighted) deltas, zero counting as positive; True where a delta has that sign."""
    mask_dtype = mask_dtype or deltas.dtype
    sign = deltas.sign().to(mask_dtype)
    majority = (deltas.sum(dim=0) >= 0).to(mask_dtype) * 2 - 1
    return sign == majority
