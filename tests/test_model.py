"""BabyLLaVA: Auto-class registration, save/load round trip, and the image token."""

import json
import subprocess
import sys

import pytest
import torch
from PIL import Image
from safetensors import safe_open
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoTokenizer,
    Dinov2Model,
)

from babymerge import BabyLlavaConfig, BabyLlavaForConditionalGeneration, BabyMergeError
from babymerge.prompt import IMAGE_TOKEN


def test_default_config_is_the_papers_shape():
    config = BabyLlavaConfig()
    assert config.vision_encoder == "facebook/dinov2-large"
    assert config.image_feature_size == 1024
    assert config.text_config.num_hidden_layers == 6
    assert config.image_seq_length == 1


def test_auto_classes_load_the_checkpoint(toy):
    assert isinstance(AutoConfig.from_pretrained(toy.mm), BabyLlavaConfig)
    for auto in (AutoModelForImageTextToText, AutoModelForCausalLM):
        model = auto.from_pretrained(toy.mm)
        assert type(model) is BabyLlavaForConditionalGeneration
    assert (toy.mm / "model.safetensors").is_file()
    with safe_open(toy.mm / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert "model.black_image_features" in keys
    assert not any("vision_tower" in k for k in keys), "the frozen encoder must not be in the checkpoint"


def test_save_load_round_trip(toy, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(toy.mm)
    model.save_pretrained(tmp_path / "again")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "again")
    ids = torch.tensor([[4, 11, 12, 13, 14]])
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, again(input_ids=ids).logits, rtol=0, atol=0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k


def _reference_features(encoder_dir, images):
    """The authors' pooling, computed without babymerge: hidden_states[-2], CLS dropped, patch mean."""
    encoder = Dinov2Model.from_pretrained(encoder_dir).eval()
    processor = AutoImageProcessor.from_pretrained(encoder_dir)
    with torch.no_grad():
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        return encoder(pixel_values=pixels, output_hidden_states=True).hidden_states[-2][:, 1:].mean(dim=1)


def _hand_forward(model, ids, image_feature):
    """Logits with the image token's embedding replaced by projector(feature), by hand."""
    embeds = model.model.language_model.embed_tokens(ids).clone()
    position = (ids[0] == model.config.image_token_id).nonzero()[0, 0]
    projector = model.model.multi_modal_projector
    embeds[0, position] = projector.linear_2(projector.act(projector.linear_1(image_feature)))
    hidden = model.model.language_model(inputs_embeds=embeds).last_hidden_state
    return model.lm_head(hidden)


def test_black_image_is_the_encoders_feature_of_a_black_picture(toy):
    model = AutoModelForCausalLM.from_pretrained(toy.mm)
    expected = _reference_features(toy.encoder, [Image.new("RGB", (224, 224))])[0]
    torch.testing.assert_close(model.model.black_image_features, expected)
    tokenizer = AutoTokenizer.from_pretrained(toy.mm)
    ids = tokenizer(IMAGE_TOKEN + "The dog sees a cat.", return_tensors="pt").input_ids
    assert ids[0, 0] == model.config.image_token_id
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, _hand_forward(model, ids, expected))


def test_features_pixels_and_images_give_the_same_output(toy):
    model = AutoModelForCausalLM.from_pretrained(toy.mm)  # encoder loaded from config.vision_encoder
    images = [Image.new("RGB", (50, 40), (200, 30, 30))]
    features = _reference_features(toy.encoder, images)
    torch.testing.assert_close(model.encode_images(images=images), features)
    ids = torch.tensor([[model.config.image_token_id, 20, 21, 22]])
    pixels = AutoImageProcessor.from_pretrained(toy.encoder)(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        by_features = model(input_ids=ids, image_features=features).logits
        by_pixels = model(input_ids=ids, pixel_values=pixels).logits
        torch.testing.assert_close(by_features, _hand_forward(model, ids, features[0]))
        torch.testing.assert_close(by_pixels, by_features)
        assert not torch.allclose(by_features, model(input_ids=ids).logits), "an image must change the output"


def test_image_features_of_the_wrong_width_are_refused(toy):
    model = AutoModelForCausalLM.from_pretrained(toy.mm)
    ids = torch.tensor([[model.config.image_token_id, 20]])
    with pytest.raises(BabyMergeError, match=r"image features are 1024-d .* projector takes 32-d"):
        model(input_ids=ids, image_features=torch.zeros(1, 1024))


def test_missing_vision_encoder_gives_a_clear_error(toy, tmp_path):
    config = json.loads((toy.mm / "config.json").read_text())
    config["vision_encoder"] = str(tmp_path / "no-such-encoder")
    model = AutoModelForCausalLM.from_pretrained(
        toy.mm,
        config=BabyLlavaConfig(
            **{k: v for k, v in config.items() if k not in ("architectures", "transformers_version")}
        ),
    )
    with pytest.raises(BabyMergeError, match="could not load the vision encoder .*no-such-encoder.*image_features"):
        model.encode_images(images=[Image.new("RGB", (28, 28))])


def test_import_registers_model_type(toy):
    """The checkpoint's config.json names the type docs/babylm2025.md documents, and AutoConfig maps it to our class."""
    assert json.loads((toy.mm / "config.json").read_text())["model_type"] == "babyllava"
    assert type(AutoConfig.from_pretrained(toy.mm)) is BabyLlavaConfig
    assert AutoConfig.for_model("babyllava").__class__ is BabyLlavaConfig


@pytest.mark.slow
@pytest.mark.parametrize(
    "first",
    ["import babymerge", "import transformers; import babymerge", "from babymerge import BabyLlavaConfig",
     "import babymerge.configuration", "from babymerge import BabyLlavaForConditionalGeneration"],
)  # fmt: skip
def test_auto_classes_work_whatever_is_imported_first(toy, first):
    """Registration is deferred until transformers is imported, so it must hold in every order."""
    code = f"{first}\nfrom transformers import AutoModelForCausalLM\nprint(type(AutoModelForCausalLM.from_pretrained({str(toy.mm)!r})).__name__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip().endswith("BabyLlavaForConditionalGeneration"), result.stderr[-2000:]


def test_import_babymerge_does_not_import_transformers():
    """Merging to disk needs no transformers: `babymerge merge` starts fast and stays light."""
    code = "import sys, babymerge\nprint(sorted(m for m in ('transformers', 'peft', 'lm_eval') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"
