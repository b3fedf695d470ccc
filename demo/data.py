"""Small training corpora the project writes itself, for the training tests and benchmarks.

    python -m demo.data --out data/demo

* ``text/corpus.train``: sentences of a toy English grammar (``demo.toy``), one per
  line, in the layout of BabyLM's ``.train`` files;
* ``multimodal/captions.jsonl`` + ``multimodal/images/*.png``: coloured shapes in spatial
  relations with their captions ("a red square above a blue circle"), drawn like the
  synthetic Winoground items, so a model trained on them has seen the kind of scene that set
  asks about. Encode the images with ``python -m train.encode_images``.

Deterministic from the seed. A stand-in for BabyLM's data in shape only.

``prepare_workspace`` lays out everything a training run reads under one folder (corpora,
tokenizer, a tiny random DINOv2, its features) and ``tiny_config`` is a training config for
a tiny model on it: the one layout and config the demo, the tests and ``bench/train.py``
share.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import yaml

import train
from babymerge.data.synthetic_winoground import COLOURS, RELATIONS, SHAPES, caption, draw_scene
from babymerge.publish import atomic_output_dir
from demo.toy import synthetic_sentences


def write_demo_corpora(
    out: str | Path, n_sentences: int = 4000, n_captions: int = 1000, seed: int = 0, overwrite: bool = True
) -> Path:
    rng = random.Random(seed)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        (tmp / "text").mkdir()
        (tmp / "text" / "corpus.train").write_text("\n".join(synthetic_sentences(n_sentences, seed)) + "\n")
        (tmp / "multimodal" / "images").mkdir(parents=True)
        with open(tmp / "multimodal" / "captions.jsonl", "w") as f:
            for i in range(n_captions):
                c1, c2 = rng.sample(sorted(COLOURS), 2)
                scene = ((c1, rng.choice(SHAPES)), rng.choice(sorted(RELATIONS)), (c2, rng.choice(SHAPES)))
                name = "images/" + "_".join([*scene[0], scene[1].replace(" ", "-"), *scene[2]]) + ".png"
                if not (tmp / "multimodal" / name).is_file():
                    draw_scene(*scene).save(tmp / "multimodal" / name)
                f.write(json.dumps({"id": i, "image": name, "caption": caption(*scene)}) + "\n")
    return Path(out)


FEATURE_SIZE = 32  # the tiny DINOv2's width
ZERO2 = str(Path(train.__file__).resolve().parent / "configs" / "ds_zero2.json")


def prepare_workspace(root: str | Path, n_sentences: int, n_captions: int, vocab_size: int, seed: int = 0) -> Path:
    """``root/corpora``, ``root/tokenizer``, ``root/encoder`` and ``root/features``, built in-process
    (the demo runs the same steps as the CLI commands a user would type)."""
    from demo.toy import build_toy_encoder
    from train import tokenizer as tokenizer_cli
    from train.encode_images import encode

    root = Path(root)
    write_demo_corpora(root / "corpora", n_sentences=n_sentences, n_captions=n_captions, seed=seed)
    if tokenizer_cli.main(
        [
            "--data",
            str(root / "corpora"),
            "--vocab-size",
            str(vocab_size),
            "--out",
            str(root / "tokenizer"),
            "--overwrite",
        ]
    ):
        raise RuntimeError(f"tokenizer training failed for {root / 'corpora'}")
    build_toy_encoder(root / "encoder", feature_size=FEATURE_SIZE)
    encode(root / "corpora" / "multimodal" / "captions.jsonl", str(root / "encoder"), root / "features")
    return root


def tiny_config(
    root: str | Path, name: str, *, multimodal: bool = True, model: dict | None = None, optim: dict | None = None, **top
) -> dict:
    """A training config (as a dict) for a tiny BabyLLaVA on ``prepare_workspace(root)``'s data,
    writing to ``root/runs/<name>``. ``model`` entries override the model's defaults, ``optim``
    replaces the optimiser section (``{}``: the config defaults), and top-level keys (whole
    sections included) replace the defaults'."""
    root = Path(root)
    config = {
        "output_dir": str(root / "runs" / name),
        "tokenizer": str(root / "tokenizer"),
        "deepspeed": ZERO2,
        "seed": 0, "epochs": 3, "micro_batch_size": 8, "global_batch_size": 32, "log_every_steps": 10,
        "model": {"kind": "babyllava", "num_layers": 2, "hidden_size": 64, "intermediate_size": 256, "num_heads": 4,
                  "context_length": 64, "feature_size": FEATURE_SIZE, "vision_encoder": str(root / "encoder"), **(model or {})},
        "data": {"text": [str(root / "corpora" / "text")],
                 "multimodal": [{"captions": str(root / "corpora" / "multimodal" / "captions.jsonl"),
                                 "features": str(root / "features" / "features.npy")}] if multimodal else [],
                 "text_image_prefix": "black", "black_image_feature": str(root / "features" / "black.npy"),
                 "cache_dir": str(root / "cache")},
        "optim": {"lr": 1.0e-2, "warmup_steps": 5} if optim is None else optim,
    }  # fmt: skip
    config.update(top)
    return config


def write_config(path: str | Path, config: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m demo.data", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="data/demo")
    p.add_argument("--sentences", type=int, default=4000)
    p.add_argument("--captions", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    print(f"wrote {write_demo_corpora(args.out, args.sentences, args.captions, args.seed)}")


if __name__ == "__main__":
    main()
