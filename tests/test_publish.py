"""Where a merge may write, and how it publishes (``babymerge.publish``): an output is never,
contains or lies inside an input or the current directory; ``overwrite`` replaces only an
earlier merge; publishing is atomic and exclusive, so a directory that appears at ``out``
meanwhile survives; outputs get the user's umask.

Checkpoints that a test could destroy are copies; inputs are checksummed before and after.
"""

import importlib
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import babymerge.publish as publish
from babymerge import BabyMergeError, merge

from helpers.commands import merge_cli as cli
from helpers.files import RECIPE, checksums, leftovers

merge_write = importlib.import_module("babymerge.merge.write")  # `babymerge.merge` is the function


@pytest.fixture
def runs(toy, tmp_path):
    """runs/mm and runs/lang: copies of the toy pair laid out like training runs (with
    trainer_state.json and deepspeed/, which a merge output never has)."""
    runs = tmp_path / "runs"
    for name, src in (("mm", toy.mm), ("lang", toy.lang)):
        shutil.copytree(src, runs / name)
        (runs / name / "trainer_state.json").write_text('{"words_seen": 1000}')
        (runs / name / "deepspeed").mkdir()
        (runs / name / "deepspeed" / "optim_states.pt").write_bytes(b"state")
    return runs


# -- --out is never an input --------------------------------------------------------------------


@pytest.mark.parametrize(
    "out, flag, how",
    [
        ("runs/mm", "--overwrite", "is the input"),  # the training checkpoint stays
        ("runs/mm", "--overwrite-any", "is the input"),
        ("runs", "--overwrite-any", "contains the input"),  # both runs stay
        ("runs/lang/merged", None, "lies inside the input"),  # nothing written into the checkpoint
    ],
)
def test_out_that_is_contains_or_lies_inside_an_input_is_refused(runs, tmp_path, capsys, out, flag, how):
    before = checksums(runs)
    rc, last = cli(
        capsys, "--mm", runs / "mm", "--lang", runs / "lang", "--out", tmp_path / out, *([flag] if flag else [])
    )
    assert rc == 2 and last.startswith("babymerge: error: output directory") and how in last
    assert "would destroy that input" in last
    assert checksums(runs) == before and not (runs / "lang" / "merged").exists()


def test_base_is_protected_too(toy, runs, capsys):
    base = runs / "base"
    shutil.copytree(toy.base, base)
    before = checksums(base)
    rc, last = cli(
        capsys,
        "--mm",
        runs / "mm",
        "--lang",
        runs / "lang",
        "--base",
        base,
        "--method",
        "ties",
        "--out",
        base,
        "--overwrite-any",
    )
    assert rc == 2 and "is the input" in last and checksums(base) == before


def test_mergekit_yaml_is_never_written_into_an_input(runs, capsys):
    """`--mergekit-yaml runs/mm/config.json`: refused in one line, exit 2, the checkpoint unchanged."""
    before = checksums(runs)
    rc, last = cli(capsys, "--mm", runs / "mm", "--lang", runs / "lang", "--mergekit-yaml", runs / "mm" / "config.json")
    assert rc == 2 and "--mergekit-yaml" in last and "lies inside the input" in last and checksums(runs) == before


@pytest.mark.parametrize("out", [".", "..", "{work}"])
def test_out_may_not_be_the_current_directory_or_contain_it(toy, tmp_path, out):
    """--out that is or contains the current directory, even with --overwrite-any: one line, exit 2,
    nothing touched."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    command = [
        sys.executable,
        "-m",
        "babymerge",
        "merge",
        "--mm",
        str(toy.mm),
        "--lang",
        str(toy.lang),
        "--no-progress",
    ]
    result = subprocess.run(
        [*command, "--out", out.format(work=work), "--overwrite-any"], cwd=work, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"babymerge: error: output directory {out.format(work=work)!r} is the current directory or contains it: "
        "the output replaces --out as a whole; choose a new directory, e.g. --out merged"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"] and os.listdir(work) == ["notes.txt"]


def test_overwrite_replaces_only_an_earlier_merge(runs, tmp_path, capsys):
    """--overwrite refuses a directory babymerge did not write (someone's notes); --overwrite-any replaces it."""
    out = tmp_path / "notes"
    out.mkdir()
    (out / "todo.txt").write_text("mine")
    rc, last = cli(capsys, "--mm", runs / "mm", "--lang", runs / "lang", "--out", out, "--overwrite")
    assert (
        rc == 2
        and "was not written by babymerge (it has no babymerge_recipe.json)" in last
        and "--overwrite-any" in last
    )
    assert (out / "todo.txt").read_text() == "mine"
    assert cli(capsys, "--mm", runs / "mm", "--lang", runs / "lang", "--out", out, "--overwrite-any")[0] == 0
    assert (out / RECIPE).is_file() and not (out / "todo.txt").exists()
    assert (
        cli(capsys, "--mm", runs / "mm", "--lang", runs / "lang", "--out", out, "--overwrite", "--alpha", "0.6")[0] == 0
    )
    assert json.loads((out / RECIPE).read_text())["alpha"] == 0.6 and leftovers(tmp_path, "notes") == []


# -- publishing is atomic and exclusive ---------------------------------------------------------


def during_merge(monkeypatch, action):
    """Run ``action`` after the merge has written everything, just before it publishes."""
    original = merge_write.write_recipe

    def write_recipe(*args, **kwargs):
        original(*args, **kwargs)
        action()

    monkeypatch.setattr(merge_write, "write_recipe", write_recipe)


@pytest.mark.parametrize("content", ["empty", "file"])
def test_a_directory_created_meanwhile_survives(toy, tmp_path, monkeypatch, content):
    """A directory created at --out while the merge writes (empty or not) is kept as it is, with
    or without --overwrite: the merge fails in one line and leaves nothing behind."""
    out = tmp_path / "out"

    def someone_else():
        out.mkdir()
        if content == "file":
            (out / "theirs.txt").write_text("theirs")

    during_merge(monkeypatch, someone_else)
    for overwrite in (False, True):  # --overwrite checked a directory that did not exist then
        with pytest.raises(BabyMergeError, match="was created by another process while this one was writing"):
            merge(toy.mm, toy.lang, out=out, overwrite=overwrite, progress=False)
        assert sorted(p.name for p in out.iterdir()) == ([] if content == "empty" else ["theirs.txt"])
        assert leftovers(tmp_path) == []
        shutil.rmtree(out)


def test_two_merges_to_one_out_one_wins_the_other_fails(toy, tmp_path, monkeypatch):
    """The second merge starts and finishes while the first is writing: the first fails in one
    line and the second's complete result stays."""
    out = tmp_path / "out"
    during_merge(monkeypatch, lambda: (monkeypatch.undo(), merge(toy.mm, toy.lang, alpha=0.7, out=out, progress=False)))
    with pytest.raises(BabyMergeError, match="was created by another process"):
        merge(toy.mm, toy.lang, alpha=0.2, out=out, progress=False)
    assert json.loads((out / RECIPE).read_text())["alpha"] == 0.7 and leftovers(tmp_path) == []
    expected = merge(toy.mm, toy.lang, alpha=0.7, progress=False).model.state_dict()
    assert all(torch.equal(expected[k], v) for k, v in load_file(out / "model.safetensors").items())


def test_overwrite_replaces_only_the_directory_it_checked(toy, tmp_path, monkeypatch):
    """Two --overwrite merges at once: the one that finishes second fails and does not replace
    the first one's fresh result."""
    out = tmp_path / "out"
    merge(toy.mm, toy.lang, alpha=0.1, out=out, progress=False)
    during_merge(
        monkeypatch,
        lambda: (monkeypatch.undo(), merge(toy.mm, toy.lang, alpha=0.7, out=out, overwrite=True, progress=False)),
    )
    with pytest.raises(BabyMergeError, match="was replaced or removed by another process"):
        merge(toy.mm, toy.lang, alpha=0.2, out=out, overwrite=True, progress=False)
    assert json.loads((out / RECIPE).read_text())["alpha"] == 0.7 and leftovers(tmp_path) == []


def test_exclusive_rename_never_replaces_an_empty_directory(tmp_path, monkeypatch):
    """Both paths of publish_exclusive: renameat2(RENAME_NOREPLACE) and the mkdir-claim fallback."""
    for fallback in (False, True):
        if fallback:
            monkeypatch.setattr(publish, "_renameat2", lambda *a: False)
        src, dst = tmp_path / f"src{fallback}", tmp_path / f"dst{fallback}"
        src.mkdir()
        (src / "a").write_text("a")
        dst.mkdir()
        with pytest.raises(FileExistsError):
            publish.publish_exclusive(src, dst)
        assert list(dst.iterdir()) == [] and (src / "a").is_file()
        dst.rmdir()
        publish.publish_exclusive(src, dst)
        assert (dst / "a").read_text() == "a" and not src.exists()


def test_outputs_get_the_users_umask(toy, tmp_path):
    """Outputs get the user's umask (0755 directories, 0644 files), not mkdtemp's 0700 or mkstemp's 0600."""
    old = os.umask(0o022)
    try:
        out = merge(toy.mm, toy.lang, out=tmp_path / "out", progress=False).out
        written = publish.write_file_atomic(tmp_path / "sub" / "results.csv", "a,b\n")
        with publish.atomic_output_dir(tmp_path / "other") as tmp:
            (tmp / "x").write_text("x")
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o755 and (tmp_path / "other").stat().st_mode & 0o777 == 0o755
    for f in [out / "model.safetensors", out / RECIPE, out / "config.json", written]:
        assert f.stat().st_mode & 0o777 == 0o644, f
