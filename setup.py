"""Metadata lives in setup.cfg. This file only ships ``babymerge-lm-eval.pth``.

The .pth file makes the plain ``lm_eval`` command find ``--model babymerge`` (see
``_babymerge_hooks.py``). setuptools has no declarative way to put a file at the top of
site-packages, so ``build_py`` copies it there: into the wheel for normal installs, and into
the editable wheel for ``pip install -e .`` (whose install_lib is the wheel's root).
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "babymerge-lm-eval.pth"


class build_py_with_pth(build_py):
    def run(self):
        super().run()
        root = self.get_finalized_command("install").install_lib if self.editable_mode else self.build_lib
        self.copy_file(PTH, str(Path(root) / PTH))


setup(cmdclass={"build_py": build_py_with_pth})
