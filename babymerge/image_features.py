"""How an image becomes BabyLLaVA's one feature vector: the single place that decides it.

Training features (``python -m train.encode_images``), the black-image feature, the model's
``encode_images`` (used by ``pixel_values`` in ``forward``, the lm-eval adapter and
Winoground) all call ``image_features`` below with the settings recorded in the checkpoint's
config (``vision_encoder``, ``vision_feature_layer``, ``image_pooling``), so training and
evaluation cannot disagree.

Poolings (of ``hidden_states[vision_feature_layer]``, ``[batch, 1 + patches, width]``):

* ``patch_mean``: CLS dropped, mean over the patch tokens. The paper's authors' choice, with
  ``vision_feature_layer=-2`` (their evaluation code: ``hidden_states[-2][:, 1:].mean(1)``).
  The default.
* ``mean``: mean over all tokens, CLS included. What babymerge did before this was a
  recorded choice, with ``vision_feature_layer=-1`` (the final layer-normed state); a
  checkpoint whose config.json has no ``image_pooling`` is read with these settings.
* ``cls``: the CLS token alone.

``vision_feature_layer=-1`` is DINOv2's ``last_hidden_state`` (after its final layer norm),
other layers are ``hidden_states[layer]`` as transformers returns them (before that norm).

This file is copied beside the weights of every checkpoint (the hub's custom-code
convention), so it imports nothing from babymerge but its sibling files.
"""

from __future__ import annotations

import torch

from .errors import BabyMergeError

VISION_ENCODER = "facebook/dinov2-large"  # the default image encoder (hub id): configs, training, encode_images
POOLINGS = ("patch_mean", "mean", "cls")
DEFAULT_LAYER, DEFAULT_POOLING = -2, "patch_mean"  # the paper's authors'
LEGACY_LAYER, LEGACY_POOLING = -1, "mean"  # babymerge before the choice was recorded
# Size of the black picture whose feature stands in for "no image". The image processor
# resizes it anyway; a black image is black at any size.
BLACK_IMAGE_SIZE = (224, 224)


def check_pooling(layer, pooling) -> None:
    """Refuse settings that are not a known pooling of one hidden layer."""
    if pooling not in POOLINGS:
        raise BabyMergeError(f"image_pooling must be one of {POOLINGS}, got {pooling!r}")
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise BabyMergeError(f"vision_feature_layer must be one integer (a hidden layer index), got {layer!r}")


def pool_hidden_states(hidden_states, last_hidden_state: torch.Tensor, layer: int, pooling: str) -> torch.Tensor:
    """``[batch, width]`` from an encoder's outputs: the recorded layer, then the recorded pooling."""
    check_pooling(layer, pooling)
    hidden = last_hidden_state if layer == -1 else hidden_states[layer]
    if pooling == "patch_mean":
        return hidden[:, 1:].mean(dim=1)
    if pooling == "cls":
        return hidden[:, 0]
    return hidden.mean(dim=1)


@torch.no_grad()
def image_features(
    encoder, processor, images=None, pixel_values=None, layer: int = DEFAULT_LAYER, pooling: str = DEFAULT_POOLING
) -> torch.Tensor:
    """One feature vector per image, ``[batch, width]``: PIL ``images`` (through ``processor``)
    or ready ``pixel_values`` through ``encoder`` (a DINOv2 ``AutoModel``)."""
    if pixel_values is None:
        if images is None:
            raise BabyMergeError("image_features needs `images` or `pixel_values`")
        pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
    param = next(encoder.parameters())
    pixel_values = torch.as_tensor(pixel_values).to(param.device, param.dtype)
    out = encoder(pixel_values=pixel_values, output_hidden_states=layer != -1)
    return pool_hidden_states(out.hidden_states, out.last_hidden_state, layer, pooling)


def black_image():
    """The all-black picture whose feature stands for "no image" (language-only input)."""
    from PIL import Image

    return Image.new("RGB", BLACK_IMAGE_SIZE)
