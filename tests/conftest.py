"""Shared fixtures: tiny random checkpoints built locally (no hub, no downloads)."""

import importlib.util
import json
from pathlib import Path

import pytest
from lm_eval.api.instance import Instance

from babymerge.toy import build_toy_checkpoints

# The official BLiMP files, read in place from ../shared (never copied into the project).
BLIMP = Path(__file__).resolve().parents[2] / "shared" / "data" / "blimp"
needs_blimp = pytest.mark.skipif(not BLIMP.is_dir(), reason=f"the official BLiMP files are not at {BLIMP}")


def blimp_sentences(paradigm="anaphor_gender_agreement", n=12):
    if BLIMP.is_dir():
        rows = [json.loads(line) for line in (BLIMP / f"{paradigm}.jsonl").read_text().splitlines()[:n]]
    else:  # a few minimal pairs of our own, so the API tests run without the data
        rows = [{"sentence_good": "The dog sees a cat.", "sentence_bad": "The dog see a cat."}] * n
    return [s for row in rows for s in (row["sentence_good"], row["sentence_bad"])]


def requests(sentences, visual=None):
    extra = ({"visual": visual},) if visual is not None else ()
    return [Instance("loglikelihood", {}, ("", " " + s, *extra), i) for i, s in enumerate(sentences)]


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
