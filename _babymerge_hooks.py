"""Run code when a module is first imported, without importing it (or anything heavy) now.

Two things in babymerge must happen "as soon as X is imported" rather than at start-up:

* ``lm_eval --model babymerge``: lm-eval 0.4.13 has no plugin entry point for models; its
  registry is filled when ``lm_eval.models`` is imported. The ``babymerge-lm-eval.pth`` file
  that ``pip install`` puts in site-packages calls ``install_lm_eval_hook()`` at interpreter
  start-up, which registers ``babymerge`` as a *lazy* entry once ``lm_eval.models`` has been
  imported (registering earlier would be wrong: lm-eval imports its own models only while
  the registry is empty). torch and transformers load only when the model is asked for.
* ``import babymerge`` registers BabyLLaVA with the transformers Auto classes when those
  are imported, so that merging to disk never pays for importing transformers at all.

This module imports only the standard library.
"""

import sys
from importlib.abc import MetaPathFinder
from importlib.machinery import PathFinder

_callbacks: dict[str, list] = {}


class _AfterImport(MetaPathFinder):
    """Find watched modules the normal way and run their callbacks once they have executed."""

    def find_spec(self, name, path, target=None):
        if name not in _callbacks:
            return None
        spec = PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            exec_module = spec.loader.exec_module

            def exec_and_call(module):
                exec_module(module)
                for callback in _callbacks.pop(name, []):
                    callback()

            spec.loader.exec_module = exec_and_call
        return spec


def after_import(module: str, callback) -> None:
    """Call ``callback()`` once ``module`` is imported (now, if it already is)."""
    if module in sys.modules:
        callback()
        return
    _callbacks.setdefault(module, []).append(callback)
    if not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport())


def register_lm_eval_model() -> None:
    """Register ``--model babymerge`` lazily with lm-eval's model registry (idempotent)."""
    from lm_eval.api.registry import model_registry

    if "babymerge" not in model_registry:
        model_registry.register("babymerge", target="babymerge.lm_eval_model:BabyMergeLM")


def install_lm_eval_hook() -> None:
    try:
        after_import("lm_eval.models", register_lm_eval_model)
    except Exception as err:  # never break interpreter start-up
        print(f"babymerge: could not install the lm-eval hook: {err}", file=sys.stderr)
