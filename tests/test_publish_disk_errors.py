"""A full or read-only disk under a merge's output (``babymerge.publish.output_errors``): one line
naming the problem and the output, exit 2, nothing left behind, an earlier output kept.

Real disks: a small tmpfs mounted in a private user and mount namespace (``unshare -rm``).
"""

import subprocess
import sys

import pytest


def unshare_available():
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0
    except OSError:
        return False


needs_unshare = pytest.mark.skipif(not unshare_available(), reason="needs `unshare -rm` (user and mount namespaces)")


def in_small_filesystem(script, mnt, size="64k"):
    """Run ``script`` (bash) in a private mount namespace where ``mnt`` is a tmpfs of ``size``."""
    mnt.mkdir()
    full = f"set -u; mount -t tmpfs -o size={size} tmpfs {mnt}; {script}"
    return subprocess.run(["unshare", "-rm", "bash", "-c", full], capture_output=True, text=True)


@needs_unshare
def test_full_disk(toy, tmp_path):
    """A real ENOSPC (a 64 KiB tmpfs): one line "no space left on the device", exit 2, nothing left."""
    mnt = tmp_path / "mnt"
    babymerge = f"{sys.executable} -m babymerge merge --mm {toy.mm} --lang {toy.lang} --no-progress"
    result = in_small_filesystem(f"{babymerge} --out {mnt}/out; echo rc=$?; ls -A {mnt}", mnt)
    assert "rc=2" in result.stdout and result.stdout.split("rc=2")[1].split() == [], result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("babymerge: error: no space left on the device")


@needs_unshare
def test_read_only_disk_keeps_the_old_output_and_leaves_no_old_dir(toy, tmp_path):
    """A read-only disk: one line naming it, exit 2; with --overwrite the old output stays and no
    `..old-*` directory is left."""
    mnt = tmp_path / "mnt"
    babymerge = f"{sys.executable} -m babymerge merge --mm {toy.mm} --lang {toy.lang} --no-progress"
    script = (
        f"{babymerge} --out {mnt}/out >/dev/null && mount -o remount,ro {mnt} && "
        f"{babymerge} --out {mnt}/out --overwrite; echo rc=$?; {babymerge} --out {mnt}/new; echo rc=$?; ls -A {mnt}"
    )
    result = in_small_filesystem(script, mnt, size="16m")
    assert result.stdout.split() == ["rc=2", "rc=2", "out"], result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("babymerge: error:")]
    assert len(errors) == 2 and all("the file system is read-only; choose another --out" in e for e in errors)


@needs_unshare
@pytest.mark.parametrize("name", ["recipe.yml", "sub/recipe.yml"])
def test_mergekit_yaml_on_a_read_only_disk(toy_same_class, tmp_path, name):
    """--mergekit-yaml on a read-only disk: one line naming the file, exit 2, nothing written.
    (mergekit needs a twin of the same class.)"""
    mnt, toy = tmp_path / "mnt", toy_same_class
    babymerge = f"{sys.executable} -m babymerge merge --mm {toy.mm} --lang {toy.lang} --no-progress"
    script = f"mount -o remount,ro {mnt} && {babymerge} --mergekit-yaml {mnt}/{name}; echo rc=$?; ls -A {mnt}"
    result = in_small_filesystem(script, mnt)
    assert result.stdout.split() == ["rc=2"], result.stdout + result.stderr  # and nothing in mnt
    assert result.stderr.strip().splitlines() == [
        f"babymerge: error: cannot write output '{mnt}/{name}': the file system is read-only; choose another --mergekit-yaml"
    ]
