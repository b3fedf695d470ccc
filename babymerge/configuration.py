"""Configuration of BabyLLaVA: LLaVA-1.5 with a mean-pooled DINOv2 image token.

The paper (Takmaz, Bylinina & Dotlacil, BabyLM 2025) replaces LLaVA-1.5's CLIP tower with the
mean-pooled last hidden state of DINOv2-large: one 1024-d vector, projected by the usual
2-layer MLP into a single image token in front of the text. The encoder is frozen and its
features are usually precomputed, so it is *named* in the config (``vision_encoder``) rather
than stored in the checkpoint; ``vision_config`` describes it (its ``hidden_size`` is the
feature width the projector expects).
"""

import importlib

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, LlavaConfig
from transformers.configuration_utils import SubConfigSpec

# DINOv2-large (facebook/dinov2-large): 24 layers, width 1024, 16 heads, patch 14.
DINOV2_LARGE = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "mlp_ratio": 4,
    "patch_size": 14,
    "image_size": 518,
}

# A 6-layer Llama decoder as in the paper. Width, heads and context length are set by the
# training configs (train/configs/*.yaml), which cite their sources; these are defaults only.
SMALL_LLAMA = {
    "hidden_size": 512,
    "intermediate_size": 2048,
    "num_hidden_layers": 6,
    "num_attention_heads": 8,
    "num_key_value_heads": 8,
    "max_position_embeddings": 512,
    "vocab_size": 16000,
}


@strict
class BabyLlavaConfig(LlavaConfig):
    """``LlavaConfig`` plus the name of the DINOv2 encoder whose mean-pooled output is the image token.

    Args:
        vision_encoder: hub id or local directory of the DINOv2 model used when the model is
            given images or ``pixel_values`` instead of precomputed ``image_features``.
        image_seq_length: always 1 (one mean-pooled vector per image).
    """

    model_type = "babyllava"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="dinov2", init_kwargs=DINOV2_LARGE),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama", init_kwargs=SMALL_LLAMA),
    }

    vision_encoder: str = "facebook/dinov2-large"
    image_token_index: int = SMALL_LLAMA["vocab_size"] - 1
    image_seq_length: int = 1
    vision_feature_select_strategy: str = "full"
    vision_feature_layer: int | list[int] = -1

    @property
    def image_feature_size(self) -> int:
        """Width of one image feature (1024 for DINOv2-large)."""
        return self.vision_config.hidden_size


AutoConfig.register(BabyLlavaConfig.model_type, BabyLlavaConfig, exist_ok=True)
# The model classes register themselves in modeling.py; import it so that loading a
# checkpoint through AutoModel... works whichever babymerge module was imported first.
importlib.import_module("babymerge.modeling")
