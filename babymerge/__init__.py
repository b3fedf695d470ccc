"""babymerge: merge a BabyLM vision-language model with its language-only twin.

``import babymerge`` registers BabyLLaVA with the transformers Auto classes (``auto.py``), so
``AutoConfig`` / ``AutoModelForImageTextToText`` / ``AutoModelForCausalLM`` ``.from_pretrained``
load our checkpoints like any other. The registration runs as soon as transformers is
imported (at once if it already is): merging to disk never imports transformers, which
keeps ``babymerge merge`` fast to start and light on memory.
"""

import functools
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


# The modules that define BabyLLaVA's classes. Each imports transformers, so transformers'
# import may end while one of them is still executing: registration then waits for it.
_MODEL_MODULES = ("babymerge.configuration", "babymerge.modeling", "babymerge.processing", "babymerge.auto")


def _register_with_transformers(finished: str | None = None) -> None:
    """Import ``babymerge.auto``, which registers BabyLLaVA with the Auto classes, as soon as
    transformers and every model module being imported have finished executing: anyone about
    to load a model through transformers gets BabyLLaVA registered, whatever was imported first.
    ``finished``: the model module whose body has just run (it still counts as importing)."""
    for name in _MODEL_MODULES:
        module = sys.modules.get(name)
        if name != finished and module is not None and getattr(module.__spec__, "_initializing", False):
            return  # called again when that module's body has run (after_import below)
    importlib.import_module("babymerge.auto")


after_import("transformers", _register_with_transformers)
for _name in _MODEL_MODULES[:-1]:
    after_import(_name, functools.partial(_register_with_transformers, _name))


def __getattr__(name: str):
    """The model classes, imported on first use (they need transformers)."""
    if name == "BabyLlavaConfig":
        from .configuration import BabyLlavaConfig

        return BabyLlavaConfig
    if name in ("BabyLlavaForConditionalGeneration", "BabyLlavaModel"):
        from . import modeling

        return getattr(modeling, name)
    raise AttributeError(f"module 'babymerge' has no attribute {name!r}")
