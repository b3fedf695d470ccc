"""Image features for training: reading the feature files, the table the batches draw rows from,
how the features were made (recorded in the model's config), and the black-image feature.

Feature files are ``[n_images, width]`` arrays (``.npy``, memory-mapped; ``.npz`` or
``.safetensors`` with an array named ``features`` and optionally ``ids``), written by
``train.encode_images`` (with a ``features.json`` beside them saying how) or precomputed, e.g. the
BabyLM 2025 organisers' ``*_dino_v2_states*.npy``. They are never copied: rows are read when a
batch needs them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from babymerge.errors import BabyMergeError

from .config import TrainConfig


def read_feature_file(path: Path) -> tuple[np.ndarray, list | None]:
    """A ``[n, width]`` feature array (memory-mapped for ``.npy``) and its row ids, if stored."""
    if not path.is_file():
        raise BabyMergeError(f"features file {str(path)!r} not found (python -m train.encode_images writes them)")
    ids = None
    if path.suffix == ".npy":
        array = np.load(path, mmap_mode="r")
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            names = [n for n in z.files if n != "ids"]
            name = "features" if "features" in names else (names[0] if len(names) == 1 else None)
            if name is None:
                raise BabyMergeError(
                    f"{path}: expected an array named 'features' (and optionally 'ids'), found {z.files}"
                )
            array, ids = z[name], (z["ids"].tolist() if "ids" in z.files else None)
    elif path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        tensors = load_file(path)
        name = "features" if "features" in tensors else (next(iter(tensors)) if len(tensors) == 1 else None)
        if name is None:
            raise BabyMergeError(f"{path}: expected a tensor named 'features', found {sorted(tensors)}")
        array = tensors[name]
    else:
        raise BabyMergeError(f"{path}: unsupported feature format (use .npy, .npz or .safetensors)")
    if array.ndim != 2:
        raise BabyMergeError(f"{path}: features must be a 2-D array [n_images, width], got shape {array.shape}")
    return array, ids


class FeatureTable:
    """All multimodal sources' features as one row-indexed table, read lazily."""

    def __init__(self, arrays: list[np.ndarray]):
        self.arrays = arrays
        self.offsets = np.cumsum([0] + [len(a) for a in arrays])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def rows(self, index: np.ndarray) -> np.ndarray:
        which = np.searchsorted(self.offsets, index, side="right") - 1
        return np.stack([self.arrays[w][i - self.offsets[w]] for w, i in zip(which, index)]).astype(np.float32)


def describe_features(config: TrainConfig) -> dict:
    """How the training features were made, for the model's config: the ``features.json``
    that ``train.encode_images`` writes beside its features (encoder, layer, pooling), when
    every feature file has one and they agree; otherwise ``precomputed`` with the file names
    (the BabyLM 2025 organisers' DINOv2 states do not say which encoder or pooling made them).
    Without multimodal data: the encoder named by the config, with the default pooling."""
    from babymerge.image_features import DEFAULT_LAYER, DEFAULT_POOLING

    files = [
        Path(p)
        for spec in config.data.multimodal
        for p in ([spec["features"]] if isinstance(spec["features"], str) else spec["features"])
    ]
    if not files:
        return {"image_features_source": "encoder", "vision_encoder": config.model.vision_encoder,
                "vision_feature_layer": DEFAULT_LAYER, "image_pooling": DEFAULT_POOLING}  # fmt: skip
    sidecars = [
        json.loads((f.parent / "features.json").read_text()) if (f.parent / "features.json").is_file() else None
        for f in files
    ]
    if all(sidecars) and all(s == sidecars[0] for s in sidecars):
        meta = sidecars[0]
        return {"image_features_source": "encoder", "vision_encoder": meta["vision_encoder"],
                "vision_feature_layer": meta["vision_feature_layer"], "image_pooling": meta["image_pooling"]}  # fmt: skip
    width = int(np.load(files[0], mmap_mode="r").shape[1]) if files[0].suffix == ".npy" else None
    return {
        "image_features_source": "precomputed",
        "vision_encoder": config.model.vision_encoder,
        "precomputed_features": {"files": [f.name for f in files], "width": width,
                                 "note": "encoder, layer and pooling not recorded with the features"},
    }  # fmt: skip


def load_black_feature(config: TrainConfig, width: int | None = None) -> np.ndarray:
    """The encoder's feature of an all-black image: from ``data.black_image_feature`` (a
    ``.npy``, or ``zeros``: a zero vector, for precomputed features whose encoder is unknown)
    or computed with ``model.vision_encoder`` and the default pooling."""
    width = width or config.model.feature_size
    if config.data.black_image_feature == "zeros":
        if not width:
            raise BabyMergeError(
                "data.black_image_feature: zeros needs the feature width: set model.feature_size or give multimodal features"
            )
        black = np.zeros(width, dtype=np.float32)
    elif config.data.black_image_feature:
        path = Path(config.data.black_image_feature)
        if not path.is_file():
            raise BabyMergeError(
                f"data.black_image_feature {str(path)!r} not found (python -m train.encode_images writes black.npy)"
            )
        black = np.load(path).reshape(-1).astype(np.float32)
    else:
        from babymerge.image_features import black_image, image_features
        from babymerge.modeling import load_vision_encoder

        made = describe_features(config)  # pooled like the training features
        if made["image_features_source"] != "encoder":
            raise BabyMergeError(
                "the image features are precomputed and their encoder is not recorded, so the black-image feature cannot "
                "be computed to match: set data.black_image_feature to a .npy made with their encoder, or to zeros"
            )
        encoder, processor = load_vision_encoder(made["vision_encoder"])
        black = image_features(
            encoder,
            processor,
            images=[black_image()],
            layer=made["vision_feature_layer"],
            pooling=made["image_pooling"],
        )
        black = black[0].numpy()
    if width and black.shape != (width,):
        raise BabyMergeError(
            f"the black-image feature has {black.shape[0]} values but the image features are {width}-d"
        )
    return black
