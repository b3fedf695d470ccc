"""Which alpha each parameter gets.

alpha is the weight of the **language-only** model (merged = alpha*lang + (1-alpha)*mm for
the linear method). It can be given as

* a number: the same alpha everywhere, e.g. ``0.3`` (the paper's sweet spot);
* a list: a gradient over the decoder layers, as in mergekit (``[0, 0.5]`` goes from 0 at
  the first layer to 0.5 at the last, linearly). Parameters before the layers (embeddings)
  take the first value, those after them (final norm, LM head, projector) the last;
* a mapping from name patterns to numbers or lists, for per-module alpha, e.g.
  ``{"model.embed_tokens.*": 0.5, "*": 0.3}``. Patterns are shell-style (``fnmatch``) on the
  parameter's ``LlamaForCausalLM`` name (``model.layers.3.mlp.up_proj.weight``,
  ``lm_head.weight``; the projector keeps its Llava name); the first matching one wins.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence

from ..checkpoint import layer_index
from ..errors import BabyMergeError

Value = float | tuple[float, ...]


def parse_alpha(text: str) -> Value:
    """``"0.3"`` -> 0.3 and ``"0,0.5,1"`` -> (0.0, 0.5, 1.0), for command lines and lm-eval model_args."""
    try:
        values = tuple(float(v) for v in text.replace(";", ",").split(","))
    except ValueError:
        raise BabyMergeError(f"alpha must be a number or comma-separated numbers, got {text!r}") from None
    return values[0] if len(values) == 1 else values


def _check_value(where: str, value) -> Value:
    if isinstance(value, bool) or not isinstance(value, (int, float, Sequence)) or isinstance(value, str):
        raise BabyMergeError(f"{where}: alpha must be a number in [0, 1] or a list of them, got {value!r}")
    values = (value,) if isinstance(value, (int, float)) else tuple(value)
    if isinstance(value, Sequence) and len(values) < 2:
        raise BabyMergeError(
            f"{where}: a gradient needs at least two values (first and last layer), got {list(values)}; "
            "for one alpha everywhere give a number"
        )
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
            raise BabyMergeError(
                f"{where}: alpha must be in [0, 1] (the weight of the language-only model; 0 = multimodal "
                f"model unchanged, 1 = language-only), got {v!r}"
            )
    return float(values[0]) if len(values) == 1 else tuple(float(v) for v in values)


class AlphaSchedule:
    """Resolves the alpha of each parameter from a number, a gradient or a pattern mapping."""

    def __init__(self, spec: float | Sequence[float] | Mapping[str, float | Sequence[float]], num_layers: int):
        if isinstance(spec, Mapping):
            if not spec:
                raise BabyMergeError("alpha mapping is empty; give at least a default, e.g. {'*': 0.3}")
            self.rules = [(str(pattern), _check_value(f"alpha[{pattern!r}]", v)) for pattern, v in spec.items()]
        else:
            self.rules = [("*", _check_value("alpha", spec))]
        self.num_layers = num_layers

    @property
    def constant(self) -> float | None:
        """The single alpha if every parameter gets the same one, else None."""
        if len(self.rules) == 1 and self.rules[0][0] == "*" and isinstance(self.rules[0][1], float):
            return self.rules[0][1]
        return None

    def __call__(self, key: str) -> float:
        for pattern, value in self.rules:
            if fnmatch.fnmatchcase(key, pattern):
                return self._evaluate(value, key)
        raise BabyMergeError(f"no alpha pattern matches parameter {key!r}; add a default such as '*': 0.3")

    def _evaluate(self, value: Value, key: str) -> float:
        if isinstance(value, float):
            return value
        layer = layer_index(key)
        if layer is None:
            position = 0.0 if "embed" in key else 1.0
        else:
            position = layer / max(self.num_layers - 1, 1)
        x = position * (len(value) - 1)
        i = min(int(x), len(value) - 2)
        return value[i] + (x - i) * (value[i + 1] - value[i])

    def check_covers(self, keys: Iterable[str]) -> None:
        """Refuse patterns that match nothing (a typo would silently merge with the default)
        and parameters no pattern matches."""
        keys = list(keys)
        for pattern, _ in self.rules:
            if not any(fnmatch.fnmatchcase(k, pattern) for k in keys):
                example = keys[0] if keys else "?"
                raise BabyMergeError(
                    f"alpha pattern {pattern!r} matches no merged parameter (names look like {example!r})"
                )
        for key in keys:
            self(key)
