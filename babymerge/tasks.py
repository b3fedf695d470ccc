"""Where this project's lm-eval tasks (``blimp_*``, ``winoground*``, ...) are.

They live in ``lm_eval_tasks/`` at the top of the repository. ``pip install .`` (or a wheel)
ships a copy of that folder as ``babymerge/lm_eval_tasks/`` (``setup.py`` copies it while
building); an editable install and a plain checkout use the folder itself, so a task added
there is seen at once. Give the folder to lm-eval explicitly:

    lm_eval --model babymerge ... --include_path "$(babymerge tasks-path)"
    lm_eval.simple_evaluate(..., task_manager=TaskManager(include_path=babymerge.tasks_path()))

The tasks are not registered with every ``TaskManager`` behind the user's back: our
``blimp_<UID>`` tasks replace lm-eval's own of the same names (local files instead of the
hub), which must not happen to someone who merely has babymerge installed.
This module imports only the standard library.
"""

from __future__ import annotations

from pathlib import Path

PACKAGED = Path(__file__).resolve().parent / "lm_eval_tasks"  # in an installed wheel
CHECKOUT = Path(__file__).resolve().parents[1] / "lm_eval_tasks"  # editable install, source tree


def tasks_path() -> str:
    """The folder of the project's lm-eval task YAMLs, to pass as lm-eval's ``include_path``."""
    for folder in (PACKAGED, CHECKOUT):
        if folder.is_dir():
            return str(folder)
    from .errors import BabyMergeError

    raise BabyMergeError(f"the lm-eval tasks are neither at {PACKAGED} nor at {CHECKOUT}: reinstall babymerge")
