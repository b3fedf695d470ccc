"""Shared fixtures: tiny random checkpoints built locally (no hub, no downloads)."""

import pytest

from babymerge.toy import build_toy_checkpoints


@pytest.fixture(scope="session")
def toy(tmp_path_factory):
    """Multimodal model + LlamaForCausalLM twin + shared base, one tokenizer, tiny DINOv2."""
    return build_toy_checkpoints(tmp_path_factory.mktemp("toy"), with_base=True)


@pytest.fixture(scope="session")
def toy_same_class(tmp_path_factory):
    """Multimodal model + a language-only twin of the same BabyLLaVA class."""
    return build_toy_checkpoints(tmp_path_factory.mktemp("toy_same"), lang_class="babyllava", seed=10)
