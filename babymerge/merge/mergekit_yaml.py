"""Write a babymerge recipe as a mergekit config, for the merges mergekit can express.

mergekit (github.com/arcee-ai/mergekit) merges models whose tensors have the same names, so
it can reproduce a babymerge merge when the twin is the same class as the multimodal model
(not a ``LlamaForCausalLM`` with differently named tensors). It has no per-pattern alpha
with shell-style patterns, so only a single alpha or a layer gradient is written.

Mapping (alpha = weight of the language-only model):
  linear           -> linear, weights 1 - alpha (mm) and alpha (lang)
  task_arithmetic  -> task_arithmetic with base_model, lambda = scale
  ties, dare_*     -> the mergekit method of the same name; note that mergekit's
                      normalisation and random masks differ from peft's, so results are
                      close but not identical (a comment in the file says so)
  slerp            -> slerp with base_model = the multimodal model and t = alpha
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ..checkpoint import Checkpoint
from ..errors import BabyMergeError
from ..output import write_file_atomic
from .alpha import AlphaSchedule
from .registry import get_method


def mergekit_config(mm_ckpt, lang_ckpt, method="linear", alpha=0.3, *, base_ckpt=None, dtype=None, **options) -> tuple[dict, list[str]]:
    """The mergekit config (as a dict) and the caveats to write beside it."""
    merge_method = get_method(method)
    options = merge_method.resolve_options(options)
    mm, lang = Checkpoint(mm_ckpt, "multimodal"), Checkpoint(lang_ckpt, "language-only")
    schedule = AlphaSchedule(alpha, mm.num_layers)
    if len(schedule.rules) != 1 or schedule.rules[0][0] != "*":
        raise BabyMergeError("mergekit cannot express per-module alpha patterns; export a single alpha or a layer gradient")
    value = schedule.rules[0][1]
    lang_weight = list(value) if isinstance(value, tuple) else value
    mm_weight = [1 - v for v in value] if isinstance(value, tuple) else 1 - value
    if set(mm.tensors) != set(lang.tensors):
        raise BabyMergeError(
            f"mergekit needs both models to have the same tensor names; {mm.architecture} and "
            f"{lang.architecture} differ (babymerge maps them, mergekit cannot). Export with a twin of the same class."
        )
    caveats = []
    config: dict = {"merge_method": merge_method.mergekit_name}
    if method == "slerp":
        config["base_model"] = str(mm.path)
        config["models"] = [{"model": str(mm.path)}, {"model": str(lang.path)}]
        config["parameters"] = {"t": lang_weight}
    else:
        config["models"] = [
            {"model": str(mm.path), "parameters": {"weight": mm_weight}},
            {"model": str(lang.path), "parameters": {"weight": lang_weight}},
        ]
        params = {}
        if merge_method.uses_base:
            config["base_model"] = str(Path(base_ckpt) if base_ckpt else mm.path)
            params["lambda"] = options.get("scale", 1.0)
            params["normalize"] = False
            if "density" in options:
                for model in config["models"]:
                    model["parameters"]["density"] = options["density"]
            if method != "task_arithmetic":
                caveats.append(f"mergekit's {method} is not peft's (normalisation, random masks): close results, not identical")
        else:
            params["normalize"] = False
        config["parameters"] = params
    if dtype:
        config["dtype"] = str(dtype).removeprefix("torch.")
    return config, caveats


def write_mergekit_yaml(path, mm_ckpt, lang_ckpt, method="linear", alpha=0.3, **kwargs) -> Path:
    """Write the config to ``path`` (atomically) and return it."""
    config, caveats = mergekit_config(mm_ckpt, lang_ckpt, method, alpha, **kwargs)
    header = "# written by babymerge: run with `mergekit-yaml THIS_FILE OUTPUT_DIR`\n"
    header += "".join(f"# note: {c}\n" for c in caveats)
    return write_file_atomic(path, header + yaml.safe_dump(config, sort_keys=False))
