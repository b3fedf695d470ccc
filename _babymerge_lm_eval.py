"""Make ``lm_eval --model babymerge`` work with the plain ``lm_eval`` command.

lm-eval 0.4.13 has no plugin entry point for models: its registry is filled when
``lm_eval.models`` is imported. The ``babymerge-lm-eval.pth`` file that ``pip install``
puts in site-packages imports this module at interpreter start-up. It imports nothing heavy:
it only watches for ``lm_eval.models`` to be imported and then registers ``babymerge`` as a
*lazy* entry (``"babymerge.lm_eval_model:BabyMergeLM"``), so torch and transformers are
loaded only when someone actually asks for ``--model babymerge``.

(Registering before ``lm_eval.models`` is imported would be wrong: lm-eval imports its own
models only while the registry is empty.)
"""

import sys
from importlib.abc import MetaPathFinder
from importlib.machinery import PathFinder

MODEL_NAME = "babymerge"
TARGET = "babymerge.lm_eval_model:BabyMergeLM"
WATCHED = "lm_eval.models"


def register() -> None:
    """Register the adapter lazily with lm-eval's model registry (idempotent)."""
    from lm_eval.api.registry import model_registry

    if MODEL_NAME not in model_registry:
        model_registry.register(MODEL_NAME, target=TARGET)


class _RegisterAfterImport(MetaPathFinder):
    """Find ``lm_eval.models`` the normal way, and register once its module has run."""

    def find_spec(self, name, path, target=None):
        if name != WATCHED:
            return None
        spec = PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            exec_module = spec.loader.exec_module

            def exec_and_register(module):
                exec_module(module)
                register()

            spec.loader.exec_module = exec_and_register
        return spec


def install() -> None:
    if WATCHED in sys.modules:
        register()
    elif not any(isinstance(f, _RegisterAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport())


try:
    install()
except Exception as err:  # never break interpreter start-up
    print(f"babymerge: could not install the lm-eval hook: {err}", file=sys.stderr)
