"""The merge-method registry: one module per method registers one tensor function.

A method is a function ``fn(mm, lang, base, alpha, **options) -> Tensor`` on float32 tensors
of one parameter: ``mm`` and ``lang`` are the two models' values, ``base`` the shared
ancestor's (the multimodal model itself when no base checkpoint is given) and ``alpha`` the
weight of the language-only model for this parameter. Options are keyword arguments with
defaults; ``merge(..., density=0.5)`` passes them through and unknown ones are refused.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..checkpoint import parse_dtype
from ..errors import BabyMergeError


@dataclass(frozen=True)
class MergeMethod:
    name: str
    fn: Callable[..., torch.Tensor]
    uses_base: bool  # a task-vector method: meaningful with a shared base checkpoint
    elementwise: bool  # each output entry depends only on the same entry of the inputs
    mergekit_name: str | None  # the same method's name in mergekit, if it has one
    # fn's result for one chunk, computed into preallocated buffers (see register)
    into: Callable[..., torch.Tensor] | None = None

    @property
    def options(self) -> dict[str, Any]:
        """Method options and their defaults, read from the function's keyword-only arguments."""
        params = inspect.signature(self.fn).parameters.values()
        return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}

    def parse_options(self, given: dict[str, Any]) -> dict[str, Any]:
        """Every option of the method, ``given`` ones typed: the one parser of method options,
        whether they come from the command line, lm-eval's model_args (text) or a mergekit
        recipe (YAML values). Unknown names are refused; text takes the type of the option's
        default (``density=abc`` is refused here, in words, not deep inside torch), or is a
        per-model pair (``PER_MODEL_OPTIONS``); other values (numbers, pairs, per-tensor
        mappings) pass as given."""
        return {**self.options, **self.typed_options(given)}

    def typed_options(self, given: dict[str, Any]) -> dict[str, Any]:
        """Only the ``given`` options, checked and typed as ``parse_options`` does."""
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            valid = ", ".join(self.options) or "none"
            raise BabyMergeError(f"merge method {self.name!r} has no option(s) {unknown}; its options are: {valid}")
        return {name: self._typed(name, value) for name, value in given.items()}

    def _typed(self, name: str, value: Any) -> Any:
        default = self.options[name]
        kind = type(default)
        if kind is int and isinstance(value, float):
            value = str(value)
        if not isinstance(value, str) or kind not in (int, float, bool):
            return value
        text = value.strip().lower()
        try:
            if kind is float and self.mergekit_name and name in PER_MODEL_OPTIONS and any(c in text for c in ",;"):
                return tuple(float(v) for v in text.replace(";", ",").split(","))  # (multimodal, language-only)
            if kind is bool:
                flag = parse_flag(text)
                if flag is None:
                    raise ValueError(text)
                return flag
            if kind is int:
                number = float(text)
                if not number.is_integer():
                    raise ValueError(text)
                return int(number)
            return float(text)
        except ValueError:
            what = {int: "an integer", float: "a number", bool: "true or false"}[kind]
            raise BabyMergeError(
                f"option {name} of merge method {self.name!r} must be {what} (default {default}), got {value!r}"
            ) from None

    @property
    def doc(self) -> str:
        return inspect.getdoc(self.fn) or ""


METHODS: dict[str, MergeMethod] = {}
# mergekit's per-model parameters: the methods that reproduce mergekit's take one value or a
# (multimodal, language-only) pair, written "0.3,0.5" (or "0.3;0.5" in lm-eval's model_args).
PER_MODEL_OPTIONS = ("density", "gamma", "epsilon")


def register(
    name: str,
    *,
    uses_base: bool = False,
    elementwise: bool = False,
    mergekit_name: str | None = None,
    float32_inside: bool = False,
    into: Callable[..., torch.Tensor] | None = None,
):
    """Register ``fn`` as merge method ``name``. ``elementwise`` methods are applied to
    tensors in chunks (less peak memory); the others see whole tensors (norms, top-k, RNG).

    An elementwise method may also give ``into(mm, lang, base, alpha, key, *, out)``: the
    same result, bit for bit, written into ``out`` and returned (or one of its inputs returned
    as ``fn`` would). The inputs and ``out`` share one dtype: float32, or the checkpoints'
    bfloat16 / float16 where the output keeps it, in which case ``into`` computes in float32
    inside and rounds once, as casting ``fn``'s result would (``torch.lerp`` does). Streaming
    merges use it, with its options at their defaults, to merge chunks of the files as read
    without a float32 copy of them and allocate nothing per chunk.

    A method with a ``mergekit_name`` also takes ``compute_dtype``: mergekit computes in its
    recipe's ``dtype`` (inputs are cast to it), babymerge in float32; with ``compute_dtype``
    the inputs are rounded to that dtype first and, unless mergekit's method itself works in
    float32 (``float32_inside``: linear, slerp), the formula runs in it, as in mergekit."""

    def decorator(fn):
        method = _with_compute_dtype(fn, float32_inside) if mergekit_name else fn
        METHODS[name] = MergeMethod(name, method, uses_base, elementwise, mergekit_name, into)
        return fn

    return decorator


def _with_compute_dtype(fn, float32_inside: bool):
    @functools.wraps(fn)
    def method(mm, lang, base, alpha, key, *, compute_dtype=None, **options):
        dtype = parse_compute_dtype(compute_dtype)
        if dtype is None:
            return fn(mm, lang, base, alpha, key, **options)
        same = base is mm
        mm, lang = (t.to(dtype) for t in (mm, lang))
        base = mm if same else base.to(dtype)
        if float32_inside:
            mm, lang = mm.float(), lang.float()
            base = mm if same else base.float()
        return fn(mm, lang, base, alpha, key, **options).float()

    signature = inspect.signature(fn)
    extra = inspect.Parameter("compute_dtype", inspect.Parameter.KEYWORD_ONLY, default=None)
    method.__signature__ = signature.replace(parameters=[*signature.parameters.values(), extra])
    return method


def parse_compute_dtype(value) -> torch.dtype | None:
    """None (float32, babymerge's own) or a lower precision mergekit would compute in."""
    try:
        dtype = parse_dtype(value)
    except BabyMergeError:
        dtype = "unknown"
    if dtype not in (None, torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise BabyMergeError(f"compute_dtype must be float32, bfloat16, float16 or float64, got {value!r}")
    return None if dtype == torch.float32 else dtype


def get_method(name: str) -> MergeMethod:
    try:
        return METHODS[name]
    except KeyError:
        raise BabyMergeError(f"unknown merge method {name!r}; available: {', '.join(sorted(METHODS))}") from None


def check_fraction(name: str, value: float) -> None:
    """Options like density are fractions; say so clearly instead of failing inside torch."""
    if not 0.0 <= float(value) <= 1.0:
        raise BabyMergeError(f"{name} must be in [0, 1], got {value}")


def parse_flag(value) -> bool | None:
    """A boolean given as a bool or as text (command lines, model_args, recipes): true/1/yes,
    false/0/no; None for anything else. The one word list for booleans."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    return True if text in ("true", "1", "yes") else False if text in ("false", "0", "no") else None


def check_flag(name: str, value) -> bool:
    """Options like normalize are booleans; command lines and model_args give them as text."""
    flag = parse_flag(value)
    if flag is None:
        raise BabyMergeError(f"{name} must be true or false, got {value!r}")
    return flag


def methods_markdown() -> str:
    """The methods table of docs/merging.md, made from the registry (tests/test_docs_tables.py
    fails when the docs drift from it): ``babymerge methods --markdown``."""
    from . import METHODS as methods  # the package registers every method module

    rows = [
        "| method | mergekit | base | chunked | options (defaults) | what it does |",
        "|---|---|---|---|---|---|",
    ]
    for name, method in sorted(methods.items()):
        options = ", ".join(f"`{k}={v}`" for k, v in method.options.items()) or "none"
        summary = method.doc.splitlines()[0].replace("|", "\\|") if method.doc else ""
        rows.append(
            f"| `{name}` | {method.mergekit_name or '-'} | {'yes' if method.uses_base else '-'} "
            f"| {'yes' if method.elementwise else '-'} | {options} | {summary} |"
        )
    return "\n".join(rows) + "\n"
