"""The randomly initialised models the paper trains: BabyLLaVA and its language-only twin."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from babymerge.configuration import DINOV2_LARGE, BabyLlavaConfig
from babymerge.errors import BabyMergeError
from babymerge.modeling import BabyLlavaForConditionalGeneration
from babymerge.special_tokens import IMAGE_TOKEN

from .config import TrainConfig


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


def vision_config(config: TrainConfig) -> dict:
    """The encoder's config: read from a local copy, or DINOv2-large's without downloading it."""
    m = config.model
    if not Path(m.vision_encoder).is_dir() and m.feature_size == DINOV2_LARGE["hidden_size"]:
        return {"model_type": "dinov2", **DINOV2_LARGE}
    from transformers import AutoConfig

    vision = AutoConfig.from_pretrained(m.vision_encoder).to_dict()
    if vision.get("hidden_size") != m.feature_size:
        raise BabyMergeError(f"model.vision_encoder {m.vision_encoder!r} is {vision.get('hidden_size')}-d but model.feature_size is {m.feature_size}")
    return vision


def build_model(config: TrainConfig, tokenizer, black: np.ndarray | None):
    """A fresh model from ``config.seed``: identical on every rank, so runs are reproducible."""
    torch.manual_seed(config.seed)
    if config.model.kind == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        text = text_config(config, tokenizer)
        text.pop("model_type")
        return LlamaForCausalLM(LlamaConfig(**text))
    model = BabyLlavaForConditionalGeneration(
        BabyLlavaConfig(
            text_config=text_config(config, tokenizer),
            vision_config=vision_config(config),
            vision_encoder=config.model.vision_encoder,
            image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        )
    )
    if black is not None:
        model.model.black_image_features.copy_(torch.from_numpy(black))
    return model
