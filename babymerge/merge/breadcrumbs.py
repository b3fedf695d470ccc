"""Model Breadcrumbs (Davari & Belilovsky, 2023), as mergekit's ``breadcrumbs`` and ``breadcrumbs_ties``.

Each task vector loses its ``gamma`` fraction of largest-magnitude entries (outliers) and
its smallest ones, so that ``density`` of the entries remain; the vectors are then summed
with weights (``breadcrumbs``) or TIES-style with a sign election (``breadcrumbs_ties``)::

    merged = base + scale * sum_i w_i B(d_i) [m_i] [/ sum_i w_i [m_i]  if normalize]
"""

from . import sparsify
from .generalized_task_arithmetic import generalized_task_arithmetic
from .registry import register


def _breadcrumbs(mm, lang, base, alpha, key, consensus, density, gamma, normalize, rescale, scale):
    return generalized_task_arithmetic(
        mm, lang, base, alpha, sparsify=sparsify.magnitude_outliers, consensus=consensus, normalize=normalize,
        scale=scale, density=density, gamma=gamma, rescale=rescale, key=key,
    )  # fmt: skip


@register("breadcrumbs", uses_base=True, mergekit_name="breadcrumbs")
def breadcrumbs(
    mm,
    lang,
    base,
    alpha,
    key,
    *,
    density=1.0,
    gamma=0.01,
    normalize: bool = False,
    rescale: bool = False,
    scale: float = 1.0,
):
    """merged = base + scale * sum_i w_i B(d_i), B dropping the gamma largest and the smallest entries"""
    return _breadcrumbs(mm, lang, base, alpha, key, False, density, gamma, normalize, rescale, scale)


@register("breadcrumbs_ties", uses_base=True, mergekit_name="breadcrumbs_ties")
def breadcrumbs_ties(
    mm,
    lang,
    base,
    alpha,
    key,
    *,
    density=1.0,
    gamma=0.01,
    normalize: bool = False,
    rescale: bool = False,
    scale: float = 1.0,
):
    """merged = base + scale * sum_i w_i B(d_i) m_i, m_i TIES' sign agreement mask"""
    return _breadcrumbs(mm, lang, base, alpha, key, True, density, gamma, normalize, rescale, scale)
