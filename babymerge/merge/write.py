"""Writing a merge: the safetensors shards, filled as the tensors are computed, and the
side files that make the output a checkpoint (config, tokenizer, processor, remote code and
``babymerge_recipe.json``), all published atomically (``babymerge.publish``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path

from ..checkpoint import CONFIG_NAME, Checkpoint
from ..publish import atomic_output_dir
from ..safetensors_writer import StreamingSafetensorsWriter
from . import execute
from .plan import Entry
from .registry import MergeMethod

# Marks a directory as a merge output: ``overwrite=True`` replaces only directories with it.
RECIPE_NAME = "babymerge_recipe.json"
# Files copied from the multimodal checkpoint next to the merged weights.
SIDE_FILES = (
    "tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab.*", "merges.txt", "spiece.model",
    "chat_template*", "preprocessor_config.json", "processor_config.json", "image_processor*",
    "generation_config.json",
)  # fmt: skip


def write_checkpoint(
    out, plan: list[Entry], sources: tuple, method: MergeMethod, options: dict, *, out_dtype, max_shard_size,
    overwrite, recipe: dict, bar,
) -> Path:  # fmt: skip
    """Merge every tensor of ``plan`` straight into the shards of a new checkpoint at ``out``
    (on ``execute.threads_for`` threads), add the side files and publish it atomically.
    ``out`` may not be, contain or lie inside an input."""
    mm = sources[0]
    with atomic_output_dir(out, overwrite=overwrite, protect=[s.path for s in sources if s], owner_marker=RECIPE_NAME) as tmp:  # fmt: skip
        layout = [(e.key, e.dtype, e.shape) for e in plan]
        with StreamingSafetensorsWriter(tmp, layout, max_shard_size) as writer:

            def merge_and_write(entry: Entry, scratch: execute.Scratch) -> None:
                start = 0
                for chunk in execute.merged_chunks(entry, *sources, method, options, scratch):
                    writer.write(entry.key, start, chunk)
                    start += chunk.numel()

            execute.in_threads(plan, merge_and_write, execute.threads_for(method), bar)
            writer.close()
        execute.check_unchanged(sources)
        write_side_files(mm, tmp, out_dtype)
        write_recipe(tmp / RECIPE_NAME, recipe)
    return Path(out)


def write_side_files(mm: Checkpoint, directory: Path, out_dtype) -> None:
    """Config (dtype updated), tokenizer, processor and generation files of the multimodal model;
    for BabyLLaVA also ``auto_map`` and the code files, so the output loads with plain
    transformers (``trust_remote_code=True``) where babymerge is not installed."""
    from ..remote_code import with_auto_map, write_remote_code

    config = with_auto_map(json.loads(json.dumps(mm.config)))
    if out_dtype is not None:
        name = str(out_dtype).removeprefix("torch.")
        for cfg in (config, config.get("text_config")):
            if isinstance(cfg, dict):
                cfg["dtype"] = name
                cfg.pop("torch_dtype", None)
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    for pattern in SIDE_FILES:
        for path in mm.path.glob(pattern):
            if path.is_file():
                shutil.copy2(path, directory / path.name)
    write_remote_code(directory, config)


def recipe(report, sources: tuple, options: dict) -> dict:
    """How a checkpoint was made (``babymerge_recipe.json``): method, alpha, options, inputs and counts."""
    mm, lang, base = sources
    alpha = report.alpha if isinstance(report.alpha, (int, float, Mapping)) else list(report.alpha)
    return {
        "method": report.method,
        "alpha": alpha,
        "options": options,
        "multimodal": str(mm.path.resolve()),
        "language_only": str(lang.path.resolve()),
        "base": str(base.path.resolve()) if base else None,
        "tensors_merged": report.tensors_merged,
        "tensors_kept": report.tensors_kept,
        "params_merged": report.params_merged,
        "params_kept": report.params_kept,
    }


def write_recipe(path: Path, recipe: dict) -> None:
    """Record how the checkpoint was made, next to it."""
    path.write_text(json.dumps(recipe, indent=2) + "\n")
