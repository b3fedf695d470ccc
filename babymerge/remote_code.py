"""What makes a checkpoint folder self-contained: ``auto_map``, the code files, a processor.

The hub's custom-code convention: ``config.json`` maps each Auto class to a class in a
``.py`` file beside the weights, and ``from_pretrained(..., trust_remote_code=True)`` imports
it from there. BabyLLaVA's files (``CODE_FILES``: configuration, modeling, image features,
prompt, processor, errors and this file) import only transformers, torch, PIL and each
other, never babymerge, so a checkpoint loads where babymerge is not installed (the
official BabyLM pipeline, the hub). ``processor_config.json`` and
``preprocessor_config.json`` (DINOv2's image processor) make ``AutoProcessor`` work.

Everything that writes a model calls ``write_remote_code``: ``BabyLlavaForConditionalGeneration.
save_pretrained`` (training checkpoints, toy models) and the merge (``merge.write.write_side_files``).
``python -m babymerge.remote_code DIR`` adds the files to a checkpoint written before they
existed; ``--check`` only checks. Standard library only: the merge writes files without
importing transformers.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

CODE_FILES = (
    "configuration.py",
    "modeling.py",
    "image_features.py",
    "prompt.py",
    "processing.py",
    "errors.py",
    "remote_code.py",
)
AUTO_MAP = {
    "AutoConfig": "configuration.BabyLlavaConfig",
    "AutoModel": "modeling.BabyLlavaModel",
    "AutoModelForCausalLM": "modeling.BabyLlavaForConditionalGeneration",
    "AutoModelForImageTextToText": "modeling.BabyLlavaForConditionalGeneration",
    "AutoProcessor": "processing.BabyLlavaProcessor",
}
PROCESSOR_CONFIG = {
    "processor_class": "BabyLlavaProcessor", "add_image_prompt": True, "auto_map": {"AutoProcessor": AUTO_MAP["AutoProcessor"]},
}  # fmt: skip
# facebook/dinov2-large's (and -base's) preprocessor_config.json, for encoders given by hub id.
DINOV2_IMAGE_PROCESSOR = {
    "image_processor_type": "BitImageProcessor", "do_convert_rgb": True, "do_resize": True, "size": {"shortest_edge": 256},
    "resample": 3, "do_center_crop": True, "crop_size": {"height": 224, "width": 224}, "do_rescale": True,
    "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
}  # fmt: skip


def is_babyllava(config: dict) -> bool:
    return config.get("model_type") == "babyllava"


def with_auto_map(config: dict) -> dict:
    """``config`` (a config.json dict) with BabyLLaVA's ``auto_map``."""
    return {**config, "auto_map": dict(AUTO_MAP)} if is_babyllava(config) else config


def write_remote_code(directory, config: dict) -> None:
    """Copy the code files and write the processor files into ``directory`` (config.json is the
    caller's: give it ``with_auto_map``). Existing processor files are kept."""
    directory = Path(directory)
    if not is_babyllava(config):
        return
    here = Path(__file__).resolve().parent
    for name in CODE_FILES:
        if (here / name).is_file() and (here / name).resolve() != (directory / name).resolve():
            shutil.copyfile(here / name, directory / name)
    if not (directory / "processor_config.json").is_file():
        (directory / "processor_config.json").write_text(json.dumps(PROCESSOR_CONFIG, indent=2) + "\n")
    if not (directory / "preprocessor_config.json").is_file():
        encoder = config.get("vision_encoder")
        local = Path(encoder) / "preprocessor_config.json" if encoder else None
        if local is not None and local.is_file():
            shutil.copyfile(local, directory / "preprocessor_config.json")
        else:
            (directory / "preprocessor_config.json").write_text(json.dumps(DINOV2_IMAGE_PROCESSOR, indent=2) + "\n")


def missing_files(directory) -> list[str]:
    """What a BabyLLaVA checkpoint lacks to load without babymerge (empty: nothing)."""
    directory = Path(directory)
    config = json.loads((directory / "config.json").read_text())
    if not is_babyllava(config):
        return []
    missing = [] if config.get("auto_map") == AUTO_MAP else ["auto_map in config.json"]
    names = (*CODE_FILES, "processor_config.json", "preprocessor_config.json", "tokenizer.json")
    return missing + [name for name in names if not (directory / name).is_file()]


def check_remote_code(directory) -> None:
    """Refuse, in one line, a checkpoint that plain transformers could not load."""
    from .errors import BabyMergeError

    if not (Path(directory) / "config.json").is_file():
        raise BabyMergeError(f"{directory}: no config.json: not a Hugging Face checkpoint folder")
    missing = missing_files(directory)
    if missing:
        raise BabyMergeError(
            f"{directory} cannot be loaded with trust_remote_code=True where babymerge is not installed: it lacks "
            f"{', '.join(missing)}. Add them with: python -m babymerge.remote_code {directory}"
        )


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m babymerge.remote_code", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+", help="BabyLLaVA checkpoint folders")
    p.add_argument("--check", action="store_true", help="only check; exit 2 if something is missing")
    args = p.parse_args(argv)
    from .errors import BabyMergeError

    try:
        for directory in map(Path, args.checkpoints):
            if not args.check:
                config = json.loads((directory / "config.json").read_text())
                if not is_babyllava(config):
                    raise BabyMergeError(
                        f"{directory}: not a BabyLLaVA checkpoint (model_type {config.get('model_type')!r})"
                    )
                tmp = directory / ".config.json.tmp"
                tmp.write_text(json.dumps(with_auto_map(config), indent=2) + "\n")
                write_remote_code(directory, config)
                tmp.replace(directory / "config.json")
            check_remote_code(directory)
            print(f"{directory}: self-contained")
    except BabyMergeError as err:
        print(f"babymerge: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
