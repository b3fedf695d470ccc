"""Prefix-tree packing lives in ``babymerge.scoring.prefix_tree``; this name stays importable."""

from .scoring.prefix_tree import Row, pack_prefix_tree

__all__ = ["Row", "pack_prefix_tree"]
