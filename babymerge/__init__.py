"""babymerge: merge a BabyLM vision-language model with its language-only twin.

``import babymerge`` registers BabyLLaVA with the transformers Auto classes, so
``AutoConfig`` / ``AutoModelForImageTextToText`` / ``AutoModelForCausalLM`` ``.from_pretrained``
load our checkpoints like any other. The registration runs as soon as transformers is
imported (at once if it already is): merging to disk never imports transformers, which
keeps ``babymerge merge`` fast to start and light on memory.
"""

import importlib
import sys

from _babymerge_hooks import after_import

from .errors import BabyMergeError
from .merge import merge
from .tasks import tasks_path

__version__ = "0.1.0"
__all__ = [
    "BabyLlavaConfig",
    "BabyLlavaForConditionalGeneration",
    "BabyLlavaModel",
    "BabyMergeError",
    "merge",
    "tasks_path",
]


def _register_with_transformers() -> None:
    """Import configuration.py and modeling.py, which register their classes with the Auto
    classes. Runs right after ``transformers`` itself is imported (or now, if it already is):
    anyone about to load a model through transformers gets BabyLLaVA registered."""
    for name in ("babymerge.configuration", "babymerge.modeling"):
        module = sys.modules.get(name)
        if module is not None and getattr(module.__spec__, "_initializing", False):
            return  # it is being imported right now and registers itself when its body ends
    importlib.import_module("babymerge.modeling")


after_import("transformers", _register_with_transformers)


def __getattr__(name: str):
    """The model classes, imported on first use (they need transformers)."""
    if name == "BabyLlavaConfig":
        from .configuration import BabyLlavaConfig

        return BabyLlavaConfig
    if name in ("BabyLlavaForConditionalGeneration", "BabyLlavaModel"):
        from . import modeling

        return getattr(modeling, name)
    raise AttributeError(f"module 'babymerge' has no attribute {name!r}")
