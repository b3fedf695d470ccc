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

It also quiets one lm-eval message the user can do nothing about: building its task index,
lm-eval warns once per task that an ``--include_path`` task replaces, and our ``blimp_<UID>``
tasks replace lm-eval's own of the same names on purpose (hundreds of lines a run).
Those overrides, and only those (one of our shipped task files over one of lm-eval's own),
are logged at DEBUG instead: ``LMEVAL_LOG_LEVEL=DEBUG`` shows them; any other override
(a user's task over another task) stays a warning.

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


_OVERRIDE = "Task '%s' from %s overrides existing task from %s"  # lm_eval.tasks._index (0.4.x)


def _is_under(path, folders) -> bool:
    from pathlib import Path

    return any(Path(path).resolve().is_relative_to(folder) for folder in folders)


def _demote_own_task_overrides(record) -> bool:
    """A logging filter: our tasks overriding lm-eval's own become DEBUG records."""
    import logging
    from pathlib import Path

    if record.msg != _OVERRIDE or not isinstance(record.args, tuple) or len(record.args) != 3:
        return True
    import lm_eval.tasks

    from babymerge.tasks import CHECKOUT, PACKAGED

    ours, theirs = (PACKAGED, CHECKOUT), (Path(lm_eval.tasks.__file__).resolve().parent,)
    if not (_is_under(record.args[1], ours) and _is_under(record.args[2], theirs)):
        return True
    record.levelno, record.levelname = logging.DEBUG, "DEBUG"
    return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def quiet_own_task_overrides() -> None:
    """Install ``_demote_own_task_overrides`` on lm-eval's task-index logger (idempotent)."""
    import logging

    log = logging.getLogger("lm_eval.tasks._index")
    if _demote_own_task_overrides not in log.filters:
        log.addFilter(_demote_own_task_overrides)


def install_lm_eval_hook() -> None:
    try:
        after_import("lm_eval.models", register_lm_eval_model)
        after_import("lm_eval.tasks._index", quiet_own_task_overrides)
    except Exception as err:  # never break interpreter start-up
        print(f"babymerge: could not install the lm-eval hook: {err}", file=sys.stderr)
