"""The merge-method registry: one module per method registers one tensor function.

A method is a function ``fn(mm, lang, base, alpha, **options) -> Tensor`` on float32 tensors
of one parameter: ``mm`` and ``lang`` are the two models' values, ``base`` the shared
ancestor's (the multimodal model itself when no base checkpoint is given) and ``alpha`` the
weight of the language-only model for this parameter. Options are keyword arguments with
defaults; ``merge(..., density=0.5)`` passes them through and unknown ones are refused.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import BabyMergeError


@dataclass(frozen=True)
class MergeMethod:
    name: str
    fn: Callable[..., torch.Tensor]
    uses_base: bool  # a task-vector method: meaningful with a shared base checkpoint
    elementwise: bool  # each output entry depends only on the same entry of the inputs
    mergekit_name: str | None  # the same method's name in mergekit, if it has one

    @property
    def options(self) -> dict[str, Any]:
        """Method options and their defaults, read from the function's keyword-only arguments."""
        params = inspect.signature(self.fn).parameters.values()
        return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}

    def resolve_options(self, given: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            valid = ", ".join(self.options) or "none"
            raise BabyMergeError(f"merge method {self.name!r} has no option(s) {unknown}; its options are: {valid}")
        return {**self.options, **given}

    @property
    def doc(self) -> str:
        return inspect.getdoc(self.fn) or ""


METHODS: dict[str, MergeMethod] = {}


def register(name: str, *, uses_base: bool = False, elementwise: bool = False, mergekit_name: str | None = None):
    """Register ``fn`` as merge method ``name``. ``elementwise`` methods are applied to
    tensors in chunks (less peak memory); the others see whole tensors (norms, top-k, RNG)."""

    def decorator(fn):
        METHODS[name] = MergeMethod(name, fn, uses_base, elementwise, mergekit_name)
        return fn

    return decorator


def get_method(name: str) -> MergeMethod:
    try:
        return METHODS[name]
    except KeyError:
        raise BabyMergeError(f"unknown merge method {name!r}; available: {', '.join(sorted(METHODS))}") from None


def check_fraction(name: str, value: float) -> None:
    """Options like density are fractions; say so clearly instead of failing inside torch."""
    if not 0.0 <= float(value) <= 1.0:
        raise BabyMergeError(f"{name} must be in [0, 1], got {value}")
