"""Metadata lives in setup.cfg. This file adds two things setuptools cannot say declaratively.

* ``babymerge-lm-eval.pth`` at the top of site-packages: it makes the plain ``lm_eval``
  command find ``--model babymerge`` (see ``_babymerge_hooks.py``). ``build_py`` copies it
  there: into the wheel for normal installs, and into the editable wheel for ``pip install -e .``
  (whose install_lib is the wheel's root).
* The lm-eval tasks: ``lm_eval_tasks/`` (YAMLs and their ``utils.py``) is copied whole into the
  built package as ``babymerge/lm_eval_tasks/``, so every task folder there ships without being
  listed. Not in editable mode: ``babymerge.tasks_path()`` then returns the source folder itself.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "babymerge-lm-eval.pth"
TASKS = "lm_eval_tasks"


class build_py_with_pth_and_tasks(build_py):
    def run(self):
        super().run()
        root = self.get_finalized_command("install").install_lib if self.editable_mode else self.build_lib
        self.copy_file(PTH, str(Path(root) / PTH))
        if not self.editable_mode:
            target = Path(self.build_lib) / "babymerge" / TASKS
            shutil.rmtree(target, ignore_errors=True)  # a task deleted from the source must not linger in build/
            shutil.copytree(TASKS, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


setup(cmdclass={"build_py": build_py_with_pth_and_tasks})
