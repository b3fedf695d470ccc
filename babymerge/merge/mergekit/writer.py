"""Write a babymerge recipe as a mergekit config, for the merges mergekit can express.

mergekit (github.com/arcee-ai/mergekit) merges models whose tensors have the same names, so
it can reproduce a babymerge merge when the twin is the same class as the multimodal model
(not a ``LlamaForCausalLM`` with differently named tensors). The methods that carry a
``mergekit_name`` are mergekit's own formulas, so the written recipe gives the same tensors
(the random masks of ``dare_*``/``della*`` aside: mergekit draws them from its own RNG state).

Mapping (alpha = weight of the language-only model):
  linear               -> linear, weights 1 - alpha (mm) and alpha (lang), normalize: false
  slerp                -> slerp with base_model = the multimodal model and t = alpha
  nuslerp              -> nuslerp, weights 1 - alpha and alpha (+ base_model if given)
  task-vector methods  -> the same method with base_model (the base, or the multimodal model),
                          weights, per-model densities, lambda = scale
  model_stock, sce     -> the same method with the base_model, no weights

Per-tensor alpha (a layer gradient, per-module patterns) becomes mergekit's per-tensor
parameters: a gradient over the layers where it is one, and ``filter`` conditions naming
each tensor whose alpha differs (mergekit gives the tensors outside the layers t = 0, where
babymerge gives those after the layers the gradient's last value).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import yaml

from ...checkpoint import Checkpoint, layer_index, parse_dtype
from ...errors import BabyMergeError
from ...publish import check_outside_inputs, output_errors, write_file_atomic
from ..alpha import AlphaSchedule
from ..plan import is_mergeable
from ..registry import PER_MODEL_OPTIONS, check_flag, get_method, parse_compute_dtype

UNWEIGHTED = ("model_stock", "sce")
RANDOM = ("dare_linear", "dare_ties", "della", "della_linear")


def mergekit_config(
    mm_ckpt, lang_ckpt, method="linear", alpha=0.3, *, base_ckpt=None, dtype=None, **options
) -> tuple[dict, list[str]]:
    """The mergekit config (as a dict) and the caveats to write beside it."""
    merge_method = get_method(method)
    if merge_method.mergekit_name is None:
        raise BabyMergeError(
            f"merge method {method!r} has no mergekit equivalent; export one of mergekit's methods instead"
        )
    options = merge_method.parse_options(options)
    compute_dtype = parse_compute_dtype(options.pop("compute_dtype", None))
    mm, lang = Checkpoint(mm_ckpt, "multimodal"), Checkpoint(lang_ckpt, "language-only")
    if set(mm.tensors) != set(lang.tensors):
        raise BabyMergeError(
            f"mergekit needs both models to have the same tensor names; {mm.architecture} and "
            f"{lang.architecture} differ (babymerge maps them, mergekit cannot). Export with a twin of the same class."
        )
    keys = [k for k, info in mm.tensors.items() if is_mergeable(k, info.dtype)]
    schedule = AlphaSchedule(alpha, mm.num_layers)
    schedule.check_covers([mm.text_key(k) for k in keys])
    lang_weight = _setting(schedule, mm, keys, lambda a: a)
    mm_weight = _setting(schedule, mm, keys, lambda a: 1 - a)

    caveats = []
    config: dict = {"merge_method": merge_method.mergekit_name}
    base = str(Path(base_ckpt)) if base_ckpt else None
    if method == "slerp":
        config["base_model"] = str(mm.path)
        config["models"] = [{"model": str(mm.path)}, {"model": str(lang.path)}]
        config["parameters"] = {"t": lang_weight}
    elif method in UNWEIGHTED:
        if method == "model_stock" and base is None:
            raise BabyMergeError("model_stock needs a base checkpoint (`base_ckpt`) distinct from both models")
        config["base_model"] = base or str(mm.path)
        config["models"] = [{"model": str(mm.path)}, {"model": str(lang.path)}]
        config["parameters"] = dict(options)
    else:
        models = [
            {"model": str(mm.path), "parameters": {"weight": mm_weight}},
            {"model": str(lang.path), "parameters": {"weight": lang_weight}},
        ]
        params = {}
        if method == "linear":
            params["normalize"] = False
        elif method == "nuslerp":
            if base:
                config["base_model"] = base
            params.update(options)
        else:
            config["base_model"] = base or str(mm.path)
            for name in PER_MODEL_OPTIONS:
                if name in options:
                    values = _pair(options[name])
                    for model, value in zip(models, values):
                        model["parameters"][name] = value
            params["lambda"] = options.get("scale", 1.0)
            params["normalize"] = check_flag("normalize", options.get("normalize", False))
            if "rescale" in options:
                params["rescale"] = check_flag("rescale", options["rescale"])
            if method in RANDOM:
                caveats.append(f"{method} draws random masks: mergekit draws them from its own RNG state, babymerge from "
                               f"a per-tensor seed (seed={options['seed']}); same distribution, different draws")  # fmt: skip
        config["models"] = models
        config["parameters"] = params
    # mergekit computes in `dtype` (babymerge: float32 unless compute_dtype) and writes `out_dtype`
    config["dtype"] = str(compute_dtype or "float32").removeprefix("torch.")
    if dtype:
        config["out_dtype"] = str(parse_dtype(dtype)).removeprefix("torch.")
    return config, caveats


def _pair(value) -> list[float]:
    from ..generalized_task_arithmetic import per_model

    return list(per_model("option", value, fraction=False))


def _setting(schedule: AlphaSchedule, ckpt: Checkpoint, keys: list[str], f):
    """The mergekit parameter setting giving each tensor ``f(alpha)`` exactly as babymerge does."""
    values = {k: float(f(schedule(ckpt.text_key(k)))) for k in keys}
    if len(set(values.values())) == 1:
        return next(iter(values.values()))
    conditions, default = [], None
    rule = schedule.rules[0][1] if len(schedule.rules) == 1 else None
    if isinstance(rule, tuple):  # one gradient: mergekit's own gradient over the layers, t = 0 elsewhere
        default = [float(f(v)) for v in rule]
        exceptions = {k: v for k, v in values.items() if layer_index(ckpt.text_key(k)) is None and v != default[0]}
    else:
        default = Counter(values.values()).most_common(1)[0][0]
        exceptions = {k: v for k, v in values.items() if v != default}
    # mergekit's filters are substrings, first match wins: longer names first so none shadows another
    for key in sorted(exceptions, key=len, reverse=True):
        conditions.append({"filter": key, "value": exceptions[key]})
    return conditions + [{"value": default}] if conditions else default


def write_mergekit_yaml(path, mm_ckpt, lang_ckpt, method="linear", alpha=0.3, **kwargs) -> Path:
    """Write the config to ``path`` (atomically, never inside an input checkpoint) and return it."""
    check_outside_inputs(path, [mm_ckpt, lang_ckpt, kwargs.get("base_ckpt")], argument="`path`")
    config, caveats = mergekit_config(mm_ckpt, lang_ckpt, method, alpha, **kwargs)
    header = "# written by babymerge: run with `mergekit-yaml THIS_FILE OUTPUT_DIR`\n"
    header += "".join(f"# note: {c}\n" for c in caveats)
    with output_errors(path, argument="`path`"):
        return write_file_atomic(path, header + yaml.safe_dump(config, sort_keys=False))
