"""Encode the images of an image-caption corpus once: pooled DINOv2 features on disk.

    python -m train.encode_images --captions data/mm/captions.jsonl --encoder facebook/dinov2-large --out features/

``--captions`` is JSONL with an ``image`` field per row (a path relative to the JSONL file)
and a ``caption``. Each distinct image is encoded once (``babymerge.image_features``, the one
function the model is also evaluated with; ``--layer``/``--pooling`` default to the paper's
authors': ``hidden_states[-2]``, CLS dropped, patch mean), in chunks that are saved as they
finish, so an interrupted run resumes where it stopped. The result, aligned row by row with
the captions file, is

    features/features.npy   [n_captions, width] float32
    features/features.json  how they were made: encoder, layer, pooling, width (training
                            records it in the model's config, so evaluation pools the same way)
    features/black.npy      the feature of an all-black image (language-only input)

which the training config names as ``data.multimodal: [{captions: ..., features:
features/features.npy}]`` and ``data.black_image_feature: features/black.npy``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from babymerge.errors import BabyMergeError
from babymerge.image_features import (
    DEFAULT_LAYER,
    DEFAULT_POOLING,
    POOLINGS,
    VISION_ENCODER,
    black_image,
    check_pooling,
    image_features,
)
from babymerge.modeling import load_vision_encoder

SIDECAR = "features.json"  # beside features.npy: how the features were made


def read_image_paths(captions: Path) -> list[Path]:
    if not captions.is_file():
        raise BabyMergeError(f"captions file {str(captions)!r} not found")
    paths = []
    for n, line in enumerate(captions.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            row = json.loads(line)
            if not isinstance(row, dict) or "image" not in row:
                raise BabyMergeError(f"{captions}:{n}: expected a JSON object with an 'image' path")
            path = captions.parent / row["image"]
            if not path.is_file():
                raise BabyMergeError(f"{captions}:{n}: image {str(path)!r} not found")
            paths.append(path)
    if not paths:
        raise BabyMergeError(f"{captions}: no rows")
    return paths


def encode(
    captions: Path, encoder_name: str, out: Path, batch_size: int = 32, chunk: int = 1024, device: str = "cpu",
    layer: int = DEFAULT_LAYER, pooling: str = DEFAULT_POOLING,
) -> Path:  # fmt: skip
    check_pooling(layer, pooling)
    paths = read_image_paths(captions)
    unique = sorted(set(paths))
    encoder, processor = load_vision_encoder(encoder_name)
    encoder.to(device)
    parts = out / ".parts"
    parts.mkdir(parents=True, exist_ok=True)
    n_chunks = (len(unique) + chunk - 1) // chunk
    bar = tqdm(total=len(unique), desc="encoding images", unit="img")
    for c in range(n_chunks):
        part = parts / f"part-{c:06d}.npy"
        todo = unique[c * chunk : (c + 1) * chunk]
        if not part.is_file():  # done chunks are kept: a rerun resumes here
            feats = []
            for s in range(0, len(todo), batch_size):
                images = [Image.open(p).convert("RGB") for p in todo[s : s + batch_size]]
                feats.append(
                    image_features(encoder, processor, images=images, layer=layer, pooling=pooling)
                    .float()
                    .cpu()
                    .numpy()
                )
            np.save(part.with_suffix(".tmp.npy"), np.concatenate(feats))
            part.with_suffix(".tmp.npy").rename(part)
        bar.update(len(todo))
    bar.close()
    # Assemble the per-caption table on disk, a slice at a time (it can be larger than memory).
    chunks = [np.load(parts / f"part-{c:06d}.npy", mmap_mode="r") for c in range(n_chunks)]
    where = {p: divmod(i, chunk) for i, p in enumerate(unique)}
    tmp = out / ".features.npy"
    features = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(paths), chunks[0].shape[1]))
    for i, path in enumerate(paths):
        c, r = where[path]
        features[i] = chunks[c][r]
    features.flush()
    del features
    tmp.rename(out / "features.npy")
    black = (
        image_features(encoder, processor, images=[black_image()], layer=layer, pooling=pooling)[0]
        .float()
        .cpu()
        .numpy()
    )
    np.save(out / ".black.npy", black)
    (out / ".black.npy").rename(out / "black.npy")
    sidecar = {
        "vision_encoder": encoder_name,
        "vision_feature_layer": layer,
        "image_pooling": pooling,
        "width": int(black.shape[0]),
    }
    (out / f".{SIDECAR}").write_text(json.dumps(sidecar, indent=2) + "\n")
    (out / f".{SIDECAR}").rename(out / SIDECAR)
    shutil.rmtree(parts)
    return out / "features.npy"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.encode_images", description=__doc__.split("\n\n")[0])
    p.add_argument("--captions", required=True, type=Path, help="JSONL with an 'image' path per row")
    p.add_argument(
        "--encoder", default=VISION_ENCODER, help=f"DINOv2 hub id or local directory (default {VISION_ENCODER})"
    )
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--layer", type=int, default=DEFAULT_LAYER, help="hidden layer to pool (default -2, the authors')")
    p.add_argument(
        "--pooling", choices=POOLINGS, default=DEFAULT_POOLING, help="patch_mean (CLS dropped; default), mean, cls"
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    try:
        path = encode(
            args.captions,
            args.encoder,
            args.out,
            args.batch_size,
            device=args.device,
            layer=args.layer,
            pooling=args.pooling,
        )
    except BabyMergeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"features: {path}  black image: {args.out / 'black.npy'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
