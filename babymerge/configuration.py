"""Configuration of BabyLLaVA: LLaVA-1.5 with one pooled DINOv2 image token.

The paper (Takmaz, Bylinina & Dotlacil, BabyLM 2025) replaces LLaVA-1.5's CLIP tower with a
pooled DINOv2-large state: one 1024-d vector, projected by the usual 2-layer MLP into a
single image token in front of the text. The encoder is frozen and its features are usually
precomputed, so it is *named* in the config (``vision_encoder``) rather than stored in the
checkpoint, together with how its output is pooled (``vision_feature_layer``,
``image_pooling``: see ``image_features.py``); ``vision_config`` describes it (its
``hidden_size`` is the feature width the projector expects).

A checkpoint trained on features made elsewhere (the BabyLM 2025 organisers' 768-d DINOv2
states) records ``image_features_source="precomputed"`` and what it knows of them in
``precomputed_features``; such a model refuses to encode raw images until told which
encoder and pooling made its features.

This file is copied beside the weights of every checkpoint (``auto_map``), so it imports
nothing from babymerge but its sibling files; as in transformers, it never imports the
modeling file (registration with the Auto classes is ``babymerge/auto.py``'s).
"""

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, LlavaConfig
from transformers.configuration_utils import SubConfigSpec

from .image_features import DEFAULT_LAYER, DEFAULT_POOLING, LEGACY_LAYER, LEGACY_POOLING, VISION_ENCODER, check_pooling

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


IMAGE_TOKEN_ID = 4  # <image> in babymerge tokenizers (tokenization.SPECIAL_TOKENS: <pad> <s> </s> <unk> <image>)
LEGACY_IMAGE_TOKEN_INDEX = SMALL_LLAMA["vocab_size"] - 1  # the default before it was fixed to 4


@strict
class BabyLlavaConfig(LlavaConfig):
    """``LlavaConfig`` plus how an image becomes the one image-token feature.

    Args:
        vision_encoder: hub id or local directory of the DINOv2 model used when the model is
            given images or ``pixel_values`` instead of precomputed ``image_features``.
        vision_feature_layer: the encoder's hidden layer that is pooled (-2: the authors').
        image_pooling: ``patch_mean`` (CLS dropped, the authors'), ``mean`` (all tokens) or
            ``cls``.
        image_features_source: ``encoder`` (features made with the three settings above) or
            ``precomputed`` (made elsewhere; ``precomputed_features`` says what is known).
        image_token_index: id of ``<image>``: 4 in every babymerge tokenizer.
        image_seq_length: always 1 (one pooled vector per image).
    """

    model_type = "babyllava"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="dinov2", init_kwargs=DINOV2_LARGE),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama", init_kwargs=SMALL_LLAMA),
    }

    vision_encoder: str | None = VISION_ENCODER
    image_token_index: int = IMAGE_TOKEN_ID
    image_seq_length: int = 1
    vision_feature_select_strategy: str = "full"
    vision_feature_layer: int | list[int] = DEFAULT_LAYER
    image_pooling: str = DEFAULT_POOLING
    image_features_source: str = "encoder"
    precomputed_features: dict | None = None

    # Written to config.json even when equal to the defaults, so that a checkpoint says how its
    # features were made whatever later versions take as default.
    ALWAYS_SAVED = (
        "vision_encoder",
        "vision_feature_layer",
        "image_pooling",
        "image_features_source",
        "image_token_index",
    )

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        check_pooling(self.vision_feature_layer, self.image_pooling)
        if self.image_features_source not in ("encoder", "precomputed"):
            raise ValueError(
                f"image_features_source must be 'encoder' or 'precomputed', got {self.image_features_source!r}"
            )

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        """A config.json without ``image_pooling`` was written before the pooling was recorded:
        read it with the settings that code used (last layer, mean over all tokens, and the
        old ``image_token_index`` default where none is stored)."""
        if "image_pooling" not in config_dict:
            # that code pooled last_hidden_state whatever vision_feature_layer said
            config_dict = {**config_dict, "image_pooling": LEGACY_POOLING, "vision_feature_layer": LEGACY_LAYER}
            config_dict.setdefault("image_token_index", LEGACY_IMAGE_TOKEN_INDEX)
        return super().from_dict(config_dict, **kwargs)

    def to_diff_dict(self):
        out = super().to_diff_dict()
        out.update({key: getattr(self, key) for key in self.ALWAYS_SAVED})
        return out

    @property
    def hidden_size(self) -> int:
        """The language model's width: what ``AutoModel`` outputs per token (``last_hidden_state``).
        Code written for plain causal LMs sizes heads by it (the BabyLM pipeline's fine-tuner)."""
        return self.text_config.hidden_size

    @property
    def image_feature_size(self) -> int:
        """Width of one image feature (1024 for DINOv2-large)."""
        return self.vision_config.hidden_size
