"""Read a mergekit YAML recipe as a babymerge merge (``babymerge merge --config recipe.yml``,
lm-eval's ``mergekit_config=``).

A recipe merges two models (the multimodal model and its language-only twin), optionally
with a ``base_model``, by any method babymerge shares with mergekit. Parameters mean what
mergekit makes of them: per-model values (``weight``, ``density``, ``gamma``, ``epsilon``)
are read from the model's ``parameters``, then from the recipe's; a value may be a number,
a gradient over the layers (a list: ``t = layer / (num_layers - 1)``, and ``t = 0`` for every
tensor outside the layers, the LM head included) or a list of ``{filter, value}`` conditions
where the first ``filter`` that is a substring of the tensor's name (in that model) wins.

Mapping onto babymerge (``alpha`` = weight of the language-only model, per tensor):

* ``linear``, ``nuslerp``: alpha = w_lang / (w_mm + w_lang) (``linear`` with
  ``normalize: false`` needs weights summing to 1);
* task-vector methods (``task_arithmetic``, ``ties``, ``dare_*``, ``breadcrumbs*``,
  ``della*``): alpha = w_lang / (w_mm + w_lang) and ``scale = lambda * (w_mm + w_lang)``
  (``lambda`` alone with ``normalize: true``). With the base being one of the two models,
  that model's weight is unused (as in mergekit) and alpha = w_lang;
* ``slerp``: the ``base_model`` is one of the two models; alpha = t (1 - t when the base is
  the language-only model);
* ``model_stock``, ``sce``: weights are not used (alpha is recorded as 0.5).

The multimodal model is the one whose config has a ``vision_config`` when only one does;
otherwise the ``base_model`` for ``slerp``, else the first model listed. Per-tensor alpha is
written as an exact ``{tensor name: alpha}`` mapping. Anything without a babymerge equivalent
(slices, modules, a third model, tokenizer merging, LoRA references...) is refused with the
field named. Per-model values that vary across tensors (a density gradient) become per-tensor
options (``{tensor name: value}``), as does ``scale`` when the weights' sum varies.

Slightly over our ~400 lines, and ``_Reader`` over ~200: one walker of mergekit's schema, so that
every error names the recipe file and the place in it.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from ...checkpoint import Checkpoint, layer_index
from ...errors import BabyMergeError
from ..plan import is_mergeable
from ..registry import PER_MODEL_OPTIONS, get_method

PER_MODEL = ("weight", *PER_MODEL_OPTIONS)
SHARED = (
    "normalize",
    "rescale",
    "lambda",
    "int8_mask",
    "t",
    "nuslerp_row_wise",
    "nuslerp_flatten",
    "filter_wise",
    "select_topk",
)
WEIGHTED_TASK_VECTOR = (
    "task_arithmetic",
    "ties",
    "dare_linear",
    "dare_ties",
    "breadcrumbs",
    "breadcrumbs_ties",
    "della",
    "della_linear",
)
UNWEIGHTED = ("model_stock", "sce")
TOP_LEVEL = ("merge_method", "models", "base_model", "parameters", "dtype", "out_dtype", "tokenizer_source")
# mergekit's defaults where they decide how weights become alpha
DEFAULT_NORMALIZE = {"linear": True, "ties": True, "della": True}


@dataclass
class MergekitRecipe:
    """A mergekit recipe resolved to ``merge()``'s arguments."""

    mm: Path
    lang: Path
    method: str
    alpha: Any
    base: Path | None = None
    dtype: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def merge_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``babymerge.merge`` (add ``out=...`` to write it)."""
        return {"mm_ckpt": self.mm, "lang_ckpt": self.lang, "method": self.method, "alpha": self.alpha,
                "base_ckpt": self.base, "dtype": self.dtype, **self.options}  # fmt: skip


def read_mergekit_config(path: str | Path) -> MergekitRecipe:
    """Parse the recipe at ``path``; see the module docstring for what maps to what."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except OSError as err:
        raise BabyMergeError(f"cannot read mergekit config {str(path)!r}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise BabyMergeError(f"mergekit config {str(path)!r} is not valid YAML: {err}") from None
    if not isinstance(config, Mapping):
        raise BabyMergeError(f"mergekit config {str(path)!r} must be a mapping with merge_method and models")
    return _Reader(config, path).recipe()


class _Reader:
    def __init__(self, config: Mapping, path: Path):
        self.config, self.path = config, path

    def fail(self, where: str, message: str):
        raise BabyMergeError(f"mergekit config {str(self.path)!r}: {where}: {message}")

    # -- structure ------------------------------------------------------------------------------
    def recipe(self) -> MergekitRecipe:
        config = self.config
        for key in config:
            if key in ("slices", "modules"):
                self.fail(
                    key, "babymerge merges whole models (no layer slices or modules); write the recipe with `models:`"
                )
            if key not in TOP_LEVEL and not (key == "chat_template" and config[key] is None):
                self.fail(key, f"not supported by babymerge (it reads {', '.join(TOP_LEVEL)})")
        method = config.get("merge_method")
        if not isinstance(method, str):
            self.fail("merge_method", "missing; name a method, e.g. linear, ties, slerp")
        self.method = get_method(method)
        if self.method.mergekit_name != method:
            self.fail("merge_method", f"{method!r} is not a mergekit method babymerge reproduces")
        tokenizer_source = config.get("tokenizer_source")
        if tokenizer_source not in (None, "base"):
            self.fail(
                "tokenizer_source",
                "babymerge keeps the multimodal model's tokenizer and refuses different ones; remove it",
            )
        compute_dtype, dtype = config.get("dtype"), config.get("out_dtype") or config.get("dtype")

        base_ref = config.get("base_model")
        models = config.get("models")
        if not isinstance(models, list) or not models:
            self.fail("models", "a list of {model: PATH, parameters: {...}} is required")
        refs = []
        for i, entry in enumerate(models):
            if not isinstance(entry, Mapping) or "model" not in entry:
                self.fail(f"models[{i}]", "must be a mapping with a `model` key")
            unknown = set(entry) - {"model", "parameters"}
            if unknown:
                self.fail(f"models[{i}].{sorted(unknown)[0]}", "not supported (babymerge reads model and parameters)")
            refs.append(self._path(f"models[{i}].model", entry["model"]))
        base = self._path("base_model", base_ref) if base_ref is not None else None
        others = [r for r in dict.fromkeys(refs) if r != base]
        if len(others) == 1 and base is not None:  # the base is one of the two merged models
            pair, base_is_member = [base, others[0]], True
        elif len(others) == 2:
            pair, base_is_member = others, False
        else:
            self.fail(
                "models",
                f"babymerge merges two models (plus an optional base_model); this recipe has {len(others)} besides the base",
            )
        self.names = {r: f"models[{refs.index(r)}]" if r in refs else "base_model" for r in {*pair, base} - {None}}
        self.params = {r: (models[refs.index(r)].get("parameters") or {}) if r in refs else {} for r in self.names}
        self.shared = config.get("parameters") or {}
        self._check_parameter_names()

        flags = [self._is_multimodal(p) for p in pair]
        if flags.count(True) == 1:
            mm, lang = (pair[0], pair[1]) if flags[0] else (pair[1], pair[0])
        else:
            mm, lang = pair
        self.mm_ckpt, self.lang_ckpt = Checkpoint(mm, "multimodal"), Checkpoint(lang, "language-only")
        if method == "slerp":
            if not base_is_member:
                self.fail(
                    "base_model", "slerp interpolates from the base_model towards the other model: name one of the two"
                )
            alpha, options = self._slerp(flipped=(base != mm)), {}
            base_out = None
        else:
            if self.method.uses_base and method != "nuslerp" and base is None:
                self.fail(
                    "base_model", f"mergekit's {method} needs one (a shared ancestor, or the multimodal model itself)"
                )
            if base_is_member and method in ("nuslerp", "model_stock"):
                self.fail(
                    "base_model",
                    f"{method}'s base_model must be a third model (a shared ancestor), not one of the two merged",
                )
            if base_is_member and base == lang:
                self.fail(
                    "base_model",
                    "the language-only model as base has no babymerge equivalent; use the multimodal model or a shared ancestor",
                )
            base_out = None if base_is_member else base
            if method in ("linear",) and base_out is not None:
                self.fail("base_model", "linear does not use a base model; remove it")
            alpha, options = self._weighted(mm, lang, base_is_member or base is None)
        # mergekit computes in the recipe's dtype (else in the checkpoints' own): so do we, for the same tensors
        if compute_dtype is None:
            dtypes = {
                i.dtype for c in (self.mm_ckpt, self.lang_ckpt) for i in c.tensors.values() if i.dtype.is_floating_point
            }
            compute_dtype = (
                str(functools.reduce(torch.promote_types, dtypes)).removeprefix("torch.") if dtypes else None
            )
        if compute_dtype not in (None, "float32"):
            options["compute_dtype"] = compute_dtype
        return MergekitRecipe(mm=mm, lang=lang, method=method, alpha=alpha, base=base_out, dtype=dtype, options=options)

    def _path(self, where: str, ref) -> Path:
        if not isinstance(ref, str) or "+" in ref or "@" in ref:
            self.fail(
                where, f"{ref!r}: babymerge reads local checkpoint directories (no LoRA '+' or revision '@' references)"
            )
        for candidate in (Path(ref), self.path.parent / ref):
            if candidate.is_dir():
                return candidate.resolve()
        self.fail(
            where, f"{ref!r} is not a local checkpoint directory (nothing is downloaded: save the model locally first)"
        )

    def _is_multimodal(self, path: Path) -> bool:
        try:
            return "vision_config" in json.loads((path / "config.json").read_text())
        except (OSError, ValueError):
            return False

    def _check_parameter_names(self) -> None:
        valid = set(self.method.options) | {"int8_mask"} | ({"lambda"} if "scale" in self.method.options else set())
        valid |= {"t"} if self.method.name == "slerp" else set() if self.method.name in UNWEIGHTED else {"weight"}
        if self.method.name in WEIGHTED_TASK_VECTOR or self.method.name == "linear":
            valid |= {"normalize"}
        valid &= {*PER_MODEL, *SHARED}  # mergekit's names only (not seed, scale, compute_dtype, ...)
        for ref, params in self.params.items():
            for name in params:
                if name not in PER_MODEL or name not in valid:
                    self.fail(
                        f"{self.names[ref]}.parameters.{name}",
                        f"not a per-model parameter of {self.method.name} that babymerge supports",
                    )
        for name in self.shared:
            if name not in valid:
                self.fail(
                    f"parameters.{name}", f"not a parameter of mergekit's {self.method.name} that babymerge supports"
                )

    # -- parameter values --------------------------------------------------------------------------
    def _evaluate(self, where: str, setting, tensor: str, t: float):
        """mergekit's ``evaluate_setting``: filters (substring, first match), gradients, scalars."""
        if isinstance(setting, Mapping):
            setting = [setting]
        if isinstance(setting, (bool, int, float, str)):
            return setting
        if (
            isinstance(setting, list)
            and setting
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in setting)
        ):
            scaled = t * (len(setting) - 1)
            i0 = int(scaled)
            i1 = min(len(setting) - 1, i0 + 1)
            frac = scaled - i0
            return (1 - frac) * setting[i0] + frac * setting[i1]
        if isinstance(setting, list) and all(isinstance(c, Mapping) for c in setting):
            for cond in setting:
                if set(cond) - {"filter", "value"} or "value" not in cond:
                    self.fail(where, f"a condition takes `filter` and `value`, got {dict(cond)}")
                f = cond.get("filter")
                if f is None or f == "*" or f in tensor:
                    return self._evaluate(where, cond["value"], tensor, t)
            return None
        self.fail(where, f"{setting!r} is not a number, a gradient (list of numbers) or a list of {{filter, value}}")

    def _value(self, name: str, ref: Path | None, tensor: str, t: float, default=None):
        scopes = [(f"{self.names[ref]}.parameters.{name}", self.params[ref])] if ref is not None else []
        scopes.append((f"parameters.{name}", self.shared))
        for where, scope in scopes:
            if name in scope:
                value = self._evaluate(where, scope[name], tensor, t)
                if value is not None:
                    return value
        return default

    def _tensors(self):
        """(mm name, language-only name, t) of every tensor both models share, as mergekit plans them."""
        n = self.mm_ckpt.num_layers
        lang_names = {self.lang_ckpt.text_key(k): k for k in self.lang_ckpt.tensors}
        for key, info in self.mm_ckpt.tensors.items():
            lang_key = lang_names.get(self.mm_ckpt.text_key(key))
            if lang_key is None or not is_mergeable(key, info.dtype):
                continue
            layer = layer_index(self.mm_ckpt.text_key(key))
            yield key, lang_key, (0.0 if layer is None else (layer / (n - 1) if n > 1 else 1.0))

    def _constant(self, name: str, values: dict[str, Any]):
        distinct = set(values.values())
        if len(distinct) > 1:
            self.fail(
                name,
                f"takes {len(distinct)} different values across tensors (filters/gradients); babymerge applies one value per merge to everything but the weights",
            )
        return next(iter(distinct), None)

    def _shared_options(self, skip=()) -> dict[str, Any]:
        options = {}
        for name in self.shared:
            if name in ("weight", "t", "int8_mask", "normalize", *PER_MODEL, *skip):
                continue
            values = {k: self._value(name, None, k, t) for k, _, t in self._tensors()}
            options["scale" if name == "lambda" else name] = self._constant(f"parameters.{name}", values)
        return options

    def _slerp(self, flipped: bool):
        alphas = {}
        for key, _, t in self._tensors():
            value = self._value("t", None, key, t)
            if value is None:
                self.fail(
                    "parameters.t", "slerp needs t (the fraction of the way from the base_model to the other model)"
                )
            alphas[self.mm_ckpt.text_key(key)] = 1 - float(value) if flipped else float(value)
        return _compact(alphas)

    def _weighted(self, mm: Path, lang: Path, base_is_mm: bool):
        method = self.method.name
        if method in UNWEIGHTED:
            return 0.5, {**self._shared_options(), **self._per_model_options(mm, lang, base_is_mm)}
        normalize = self._constant(
            "parameters.normalize",
            {
                k: self._value("normalize", None, k, t, DEFAULT_NORMALIZE.get(method, False))
                for k, _, t in self._tensors()
            },
        )
        alphas, factors = {}, {}
        for key, lang_key, t in self._tensors():
            w_lang = self._value("weight", lang, lang_key, t)
            w_mm = (
                None
                if (base_is_mm and method != "linear" and method != "nuslerp")
                else self._value("weight", mm, key, t)
            )
            for ref, w in ((lang, w_lang), (mm, w_mm)):
                if w is None and not (
                    ref == mm and w_mm is None and base_is_mm and method not in ("linear", "nuslerp")
                ):
                    self.fail(f"{self.names[ref]}.parameters.weight", "missing: every merged model needs a weight")
                if w is not None and (isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0):
                    self.fail(f"{self.names[ref]}.parameters.weight", f"must be a non-negative number, got {w!r}")
            alpha, factor = self._alpha(float(w_mm) if w_mm is not None else None, float(w_lang), normalize)
            alphas[self.mm_ckpt.text_key(key)], factors[key] = alpha, factor
        options = {**self._shared_options(), **self._per_model_options(mm, lang, base_is_mm)}
        if method != "linear" and method != "nuslerp":
            scale = float(options.get("scale", 1.0))
            scales = {self.mm_ckpt.text_key(k): scale * f for k, f in factors.items()}
            scale = _compact(scales, check=False)
            if scale != 1.0:
                options["scale"] = scale
        elif any(abs(f - 1) > 1e-6 for f in factors.values()):
            self.fail(
                "models[*].parameters.weight",
                "linear with normalize: false needs weights summing to 1 (babymerge's alpha and 1 - alpha)",
            )
        if "normalize" in self.method.options:
            options["normalize"] = bool(normalize)
        return _compact(alphas), options

    def _alpha(self, w_mm: float | None, w_lang: float, normalize: bool) -> tuple[float, float]:
        """(alpha, factor): babymerge's weights (1 - alpha, alpha) times factor are mergekit's."""
        if w_mm is None:  # the multimodal model is the base: only w_lang counts
            if normalize and self.method.name == "task_arithmetic":
                return (1.0 if w_lang > 0 else 0.0), 1.0
            alpha = min(w_lang, 1.0)
            return alpha, (w_lang / alpha if alpha and not normalize else 1.0)
        total = w_mm + w_lang
        if total <= 0:
            return 0.5, 1.0  # mergekit: t = 0.5 (nuslerp); a zero divisor counts as 1
        return w_lang / total, (1.0 if normalize else total)

    def _per_model_options(self, mm: Path, lang: Path, base_is_mm: bool) -> dict[str, Any]:
        """density/gamma/epsilon: one value, a (multimodal, language-only) pair, or per tensor."""
        options = {}
        for name in PER_MODEL_OPTIONS:
            if name not in self.method.options:
                continue
            default, per_tensor = float(self.method.options[name]), {}
            for key, lang_key, t in self._tensors():
                v_lang = self._value(name, lang, lang_key, t)
                v_mm = v_lang if base_is_mm else self._value(name, mm, key, t)  # the base's own value is never used
                for ref, v in ((mm, v_mm), (lang, v_lang)):
                    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                        self.fail(f"{self.names[ref]}.parameters.{name}", f"must be a number, got {v!r}")
                pair = tuple(default if v is None else float(v) for v in (v_mm, v_lang))
                per_tensor[self.mm_ckpt.text_key(key)] = pair[0] if pair[0] == pair[1] else pair
            if set(per_tensor.values()) != {default}:
                options[name] = _compact(per_tensor, check=False)
        return options


def _compact(values: dict[str, Any], check: bool = True):
    """One value when every tensor gets the same, else the exact per-tensor mapping."""
    distinct = set(values.values())
    if len(distinct) == 1:
        value = next(iter(distinct))
        return float(value) if isinstance(value, (int, float)) else value
    for v in distinct:
        if check and (not 0.0 <= v <= 1.0 or math.isnan(v)):
            raise BabyMergeError(f"a mergekit weight maps to alpha={v} outside [0, 1]")
    return dict(values)
