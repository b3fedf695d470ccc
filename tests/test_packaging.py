"""What `pip install .` ships, and what the library imports.

The full check, a clean venv with the wheel installed and `lm_eval --model babymerge` run from
outside the checkout, is `.ci/wheel_smoke.py` in `.ci/run` (it installs every dependency, too
slow for the test suite). Here: the wheel's contents, built from a copy of the sources.
"""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import babymerge

from conftest import REPO

SOURCES = [
    "setup.py",
    "setup.cfg",
    "pyproject.toml",
    "MANIFEST.in",
    "README.md",
    "LICENSE",
    "babymerge-lm-eval.pth",
    "_babymerge_hooks.py",
    "babymerge",
    "train",
    "lm_eval_tasks",
]
JUNK = shutil.ignore_patterns("__pycache__", "*.pyc")


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def test_wheel_ships_every_task_file_the_start_up_hook_and_no_demo(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        (
            shutil.copytree(REPO / name, src / name, ignore=JUNK)
            if (REPO / name).is_dir()
            else shutil.copy(REPO / name, src / name)
        )
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        str(tmp_path / "dist"),
        str(src),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("babymerge-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    packaged = {n.removeprefix("babymerge/lm_eval_tasks/") for n in names if n.startswith("babymerge/lm_eval_tasks/")}
    assert packaged == files_under(REPO / "lm_eval_tasks")  # every folder under lm_eval_tasks/, without listing them
    assert {
        "babymerge-lm-eval.pth",
        "_babymerge_hooks.py",
        "babymerge/tasks.py",
        "train/configs/ds_zero2.json",
    } <= names
    assert not any(n.startswith(("demo/", "tests/", "bench/", "babymerge/demo", "babymerge/toy")) for n in names)
    dist_info = {n.split("/", 1)[1] for n in names if ".dist-info/" in n}
    assert {"licenses/LICENSE", "entry_points.txt"} <= dist_info
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "babymerge = babymerge.cli:main" in entry_points


def test_tasks_path_is_the_source_folder_in_a_checkout():
    """An editable install (this venv) uses lm_eval_tasks/ itself: a task added there is seen at once."""
    assert Path(babymerge.tasks_path()) == REPO / "lm_eval_tasks"
    result = subprocess.run([sys.executable, "-m", "babymerge", "tasks-path"], capture_output=True, text=True, cwd="/")
    assert result.returncode == 0 and result.stdout.strip() == str(REPO / "lm_eval_tasks")


def test_the_library_imports_neither_train_nor_the_demo():
    code = "import sys, babymerge\nprint(sorted(m for m in sys.modules if m.split('.')[0] in ('train', 'demo')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr[-2000:]
    grep = subprocess.run(
        ["grep", "-rnE", r"^\s*(from|import) (train|demo)\b", str(REPO / "babymerge")], capture_output=True, text=True
    )
    assert grep.stdout == ""
