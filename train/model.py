"""The randomly initialised models the paper trains: BabyLLaVA and its language-only twin."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from babymerge.configuration import DINOV2_LARGE, BabyLlavaConfig
from babymerge.errors import BabyMergeError
from babymerge.modeling import BabyLlavaForConditionalGeneration
from babymerge.prompt import IMAGE_TOKEN

from .config import TrainConfig
from .features import describe_features


def text_config(config: TrainConfig, tokenizer) -> dict:
    m = config.model
    return dict(
        model_type="llama",
        vocab_size=len(tokenizer),
        hidden_size=m.hidden_size,
        intermediate_size=m.intermediate_size,
        num_hidden_layers=m.num_layers,
        num_attention_heads=m.num_heads,
        num_key_value_heads=m.num_heads,
        max_position_embeddings=m.context_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


# DINOv2-base's shape: the nominal vision_config of 768-d features whose encoder is not recorded.
DINOV2_BASE = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "mlp_ratio": 4,
    "patch_size": 14,
    "image_size": 518,
}


def vision_config(config: TrainConfig, width: int | None = None, encoder: str | None = None) -> dict:
    """The encoder's config: read from a local copy, or DINOv2-large's (or, for other widths,
    DINOv2-base's shape) without downloading anything. Its ``hidden_size`` is the projector's
    input width: ``width``, the width of the training features."""
    width = width or config.model.feature_size
    encoder = encoder or config.model.vision_encoder
    if encoder and Path(encoder).is_dir():
        from transformers import AutoConfig

        vision = AutoConfig.from_pretrained(encoder).to_dict()
        if vision.get("hidden_size") != width:
            raise BabyMergeError(
                f"model.vision_encoder {encoder!r} is {vision.get('hidden_size')}-d but the image features are {width}-d"
            )
        return vision
    shape = DINOV2_LARGE if width == DINOV2_LARGE["hidden_size"] else {**DINOV2_BASE, "hidden_size": width}
    return {"model_type": "dinov2", **shape}


def build_model(config: TrainConfig, tokenizer, black: np.ndarray | None):
    """A fresh model from ``config.seed``: identical on every rank, so runs are reproducible."""
    torch.manual_seed(config.seed)
    if config.model.kind == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        text = text_config(config, tokenizer)
        text.pop("model_type")
        return LlamaForCausalLM(LlamaConfig(**text))
    made = describe_features(config)  # how the image features were made, recorded in the config
    width = len(black) if black is not None else config.model.feature_size  # the features' width
    known = made["image_features_source"] == "encoder"
    model = BabyLlavaForConditionalGeneration(
        BabyLlavaConfig(
            text_config=text_config(config, tokenizer),
            vision_config=vision_config(config, width, made["vision_encoder"] if known else None),
            image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
            **made,
        )
    )
    if black is not None:
        model.model.black_image_features.copy_(torch.from_numpy(black))
    return model
