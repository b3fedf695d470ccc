"""Shared fixtures: tiny random checkpoints built locally (no hub, no downloads)."""

import importlib.util
from pathlib import Path

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


def load_task_module(task_dir: str):
    """Import ``lm_eval_tasks/<task_dir>/utils.py`` under a unique name.

    Every task folder names its helpers ``utils.py`` (lm-eval's convention), so importing
    them as ``utils`` from ``sys.path`` would hand the second test module the first one's.
    """
    path = Path(__file__).resolve().parents[1] / "lm_eval_tasks" / task_dir / "utils.py"
    spec = importlib.util.spec_from_file_location(f"lm_eval_tasks_{task_dir}_utils", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
