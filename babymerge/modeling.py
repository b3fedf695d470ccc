"""BabyLLaVA: ``LlavaForConditionalGeneration`` with one pooled DINOv2 image token.

Built on transformers' Llava classes (subclassed, not forked), with three differences:

* **No vision tower in the checkpoint.** DINOv2 is frozen and its features are normally
  precomputed, so the model holds only the projector and the Llama decoder. When it is given
  images or ``pixel_values`` it loads the encoder named by ``config.vision_encoder`` once,
  outside its state dict (so merging and saving never touch 300M frozen weights), and pools
  its output as the config records (``image_features.py``).
* **One image token.** The image is one pooled DINOv2 vector (``[batch, 1024]`` for
  DINOv2-large), projected by the 2-layer MLP into the embedding of the single ``<image>``
  token.
* **Black image for text.** As in the paper's training, language-only text is preceded by a
  black image: an ``<image>`` token given no image gets ``black_image_features``, the
  encoder's feature of an all-black picture, computed once and saved with the weights as a
  buffer, so text-only use never needs the encoder.

Checkpoints are self-contained: ``save_pretrained`` writes ``auto_map`` into config.json and
this file, its siblings and a processor beside the weights (``remote_code.py``), so plain
transformers loads them with ``trust_remote_code=True``. This file therefore imports nothing
from babymerge but its sibling files.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel, LlavaForConditionalGeneration, LlavaModel
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector, LlavaPreTrainedModel

from .configuration import BabyLlavaConfig
from .errors import BabyMergeError
from .image_features import BLACK_IMAGE_SIZE, black_image, image_features  # noqa: F401  (BLACK_IMAGE_SIZE: re-exported)
from .processing import BabyLlavaProcessor  # noqa: F401  (copied with the model code: transformers follows relative imports)
from .prompt import IMAGE_TOKEN  # noqa: F401  (re-exported)
from .remote_code import AUTO_MAP, write_remote_code


def load_vision_encoder(name_or_path: str):
    """Load a DINOv2 encoder and its image processor from a hub id or a local directory."""
    from transformers import AutoImageProcessor  # image processing is only needed with images

    try:
        encoder = AutoModel.from_pretrained(name_or_path)
        processor = AutoImageProcessor.from_pretrained(name_or_path)
    except (OSError, ValueError) as err:
        raise BabyMergeError(
            f"could not load the vision encoder {name_or_path!r} ({err}). Pass precomputed "
            "`image_features` instead of images, or point `config.vision_encoder` (or the "
            "`vision_encoder` argument) at a local copy of a DINOv2 model."
        ) from err
    return encoder.eval(), processor


def mean_pooled_features(encoder, processor, images=None, pixel_values=None) -> torch.Tensor:
    """DINOv2's last hidden state averaged over all tokens: the pooling babymerge used before it
    became a recorded choice (``image_pooling="mean"``, ``vision_feature_layer=-1``)."""
    return image_features(encoder, processor, images=images, pixel_values=pixel_values, layer=-1, pooling="mean")


class BabyLlavaModel(LlavaModel):
    """``LlavaModel`` whose vision input is one precomputed (or lazily encoded) feature vector."""

    config_class = BabyLlavaConfig

    def __init__(self, config: BabyLlavaConfig):
        # Skip LlavaModel.__init__: it would build (and save) a full vision tower.
        LlavaPreTrainedModel.__init__(self, config)
        self.multi_modal_projector = LlavaMultiModalProjector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.register_buffer("black_image_features", torch.zeros(config.image_feature_size))
        self._vision = None  # (encoder, image_processor) once loaded; deliberately not a submodule
        self.post_init()

    # -- the vision side -------------------------------------------------------------------
    def set_vision_encoder(self, encoder, image_processor, update_black_image: bool = True) -> None:
        """Attach a DINOv2 encoder (kept outside the state dict) and, by default, recompute the
        black-image feature with it (pooled as the config records)."""
        if encoder.config.hidden_size != self.config.image_feature_size:
            raise BabyMergeError(
                f"vision encoder width {encoder.config.hidden_size} does not match the projector's "
                f"input width {self.config.image_feature_size} (config.vision_config.hidden_size)"
            )
        self._vision = (encoder.eval(), image_processor)
        if update_black_image:
            feature = self.pool(encoder, image_processor, images=[black_image()])[0]
            self.black_image_features.copy_(feature.to(self.black_image_features.dtype))

    def pool(self, encoder, processor, images=None, pixel_values=None) -> torch.Tensor:
        """``image_features`` with this checkpoint's recorded layer and pooling."""
        layer, pooling = self.config.vision_feature_layer, self.config.image_pooling
        return image_features(
            encoder, processor, images=images, pixel_values=pixel_values, layer=layer, pooling=pooling
        )

    def vision_encoder(self):
        """The (encoder, image_processor) pair, loaded from ``config.vision_encoder`` on first use."""
        if self._vision is None:
            config = self.config
            if config.image_features_source != "encoder" or not config.vision_encoder:
                raise BabyMergeError(
                    f"this model was trained on precomputed image features ({config.precomputed_features or 'unknown origin'}) "
                    "whose encoder and pooling are not recorded, so it cannot encode raw images or pixel_values: "
                    "set vision_encoder, vision_feature_layer and image_pooling in its config.json to what made "
                    'those features and image_features_source to "encoder" (or pass vision_encoder=... to '
                    "lm_eval --model babymerge), or give it precomputed image_features"
                )
            encoder, processor = load_vision_encoder(config.vision_encoder)
            self.set_vision_encoder(encoder.to(self.device), processor, update_black_image=False)
        return self._vision

    def encode_images(self, images=None, pixel_values=None) -> torch.Tensor:
        """Pooled DINOv2 features ``[batch, feature_size]`` of PIL images or pixel values, made
        as the config records (``vision_encoder``, ``vision_feature_layer``, ``image_pooling``)."""
        encoder, processor = self.vision_encoder()
        return self.pool(encoder, processor, images=images, pixel_values=pixel_values)

    def project_image_features(self, image_features: torch.Tensor) -> torch.Tensor:
        """``[n, feature_size]`` features -> ``[n, 1, hidden]`` image-token embeddings."""
        if image_features.dim() != 2 or image_features.shape[-1] != self.config.image_feature_size:
            raise BabyMergeError(
                f"image features are {image_features.shape[-1] if image_features.dim() else 0}-d "
                f"(shape {list(image_features.shape)}) but the projector takes "
                f"{self.config.image_feature_size}-d features ([batch, {self.config.image_feature_size}]): "
                "they were made with another encoder than this checkpoint's (config.vision_config.hidden_size)"
            )
        weight = self.multi_modal_projector.linear_1.weight
        return self.multi_modal_projector(image_features.to(weight.device, weight.dtype)).unsqueeze(1)

    def get_image_features(self, pixel_values=None, image_features=None, **kwargs):
        if image_features is None:
            image_features = self.encode_images(pixel_values=pixel_values)
        projected = self.project_image_features(image_features)
        return BaseModelOutputWithPooling(last_hidden_state=projected, pooler_output=list(projected))

    def forward(self, input_ids=None, image_features=None, pixel_values=None, mm_encoder_outputs=None, **kwargs):
        """Like ``LlavaModel.forward``; ``image_features`` (``[n_images, feature_size]``) or
        ``pixel_values`` fill the ``<image>`` tokens in order, and ``<image>`` tokens given no
        image get the black-image feature."""
        if mm_encoder_outputs is None and input_ids is not None:
            n_images = int((input_ids == self.config.image_token_id).sum())
            if n_images:
                if image_features is None and pixel_values is not None:
                    image_features = self.encode_images(pixel_values=pixel_values)
                if image_features is None:
                    image_features = self.black_image_features.unsqueeze(0).expand(n_images, -1)
                mm_encoder_outputs = {"image": self.get_image_features(image_features=image_features)}
        return super().forward(input_ids=input_ids, mm_encoder_outputs=mm_encoder_outputs, **kwargs)


class BabyLlavaForConditionalGeneration(LlavaForConditionalGeneration):
    """The BabyLM multimodal model: projector + Llama decoder + LM head, one image token."""

    config_class = BabyLlavaConfig

    def __init__(self, config: BabyLlavaConfig):
        LlavaPreTrainedModel.__init__(self, config)
        self.model = BabyLlavaModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def set_vision_encoder(self, encoder, image_processor, update_black_image: bool = True) -> None:
        self.model.set_vision_encoder(encoder, image_processor, update_black_image)

    def encode_images(self, images=None, pixel_values=None) -> torch.Tensor:
        return self.model.encode_images(images=images, pixel_values=pixel_values)

    def forward(self, input_ids=None, image_features=None, pixel_values=None, **kwargs):
        """``LlavaForConditionalGeneration.forward`` plus ``image_features``: precomputed
        pooled DINOv2 vectors, ``[n_images, feature_size]``."""
        if image_features is not None:
            kwargs["image_features"] = image_features
        return super().forward(input_ids=input_ids, pixel_values=pixel_values, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """``PreTrainedModel.save_pretrained`` plus what makes the folder self-contained:
        ``auto_map`` in config.json, the code files beside the weights and a processor
        (``remote_code.write_remote_code``)."""
        self.config.auto_map = dict(AUTO_MAP)
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            write_remote_code(save_directory, self.config.to_dict())
