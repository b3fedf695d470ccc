"""Reading checkpoints (``babymerge.checkpoint``): a weights file changed while a merge or a sweep
reads it ends the merge in one line naming the file, exit 2, nothing published; the finiteness
check of a tensor.

Real processes for the merge, because what is tested is what happens to a process: an input
truncated or rewritten while it is read, a ~256 MB pair (``large_pair``) so that the merge can be
stopped mid-way.
"""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from demo.toy import build_random_llama

from helpers.commands import error_lines
from helpers.models import LARGE_CONFIG, weights_bytes


def _merge_command(mm, lang, out) -> list[str]:
    return [sys.executable, "-m", "babymerge", "merge", "--mm", str(mm), "--lang", str(lang), "--out", str(out), "--no-progress"]  # fmt: skip


@pytest.mark.parametrize("change", ["truncate", "rewrite"])
def test_an_input_changed_mid_merge_ends_it_in_one_line_naming_it_and_leaves_nothing(large_pair, tmp_path, change):
    """The merge is stopped (SIGSTOP) once a quarter of its output is written, the
    language-only weights are truncated to half (or rewritten in place: same size, new
    content, finite values that no NaN check catches), and it is continued: one line naming the
    file, no output and no ``.out.tmp-*`` (the merge would be 250 MB here)."""
    mm, lang = large_pair[0], build_random_llama(tmp_path / "lang", LARGE_CONFIG, seed=1)
    weights = lang / "model.safetensors"
    out, expected = tmp_path / "out", weights_bytes(mm)
    child = subprocess.Popen(_merge_command(mm, lang, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while True:
        shards = list(tmp_path.glob(".out.tmp-*/model.safetensors"))
        if shards and shards[0].stat().st_blocks * 512 >= expected // 4:
            break
        assert child.poll() is None and time.monotonic() < deadline, "the merge ended before it could be stopped"
        time.sleep(0.001)
    os.kill(child.pid, signal.SIGSTOP)
    size = weights.stat().st_size
    if change == "truncate":
        os.truncate(weights, size // 2)
    else:
        with open(weights, "r+b") as f:
            f.seek(size - 4096)
            f.write(torch.randn(1024).numpy().tobytes())  # finite float32s: only the change itself can tell
    os.kill(child.pid, signal.SIGCONT)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 2, stderr
    errors = error_lines(stderr)
    assert len(errors) == 1, stderr
    assert (
        f"language-only checkpoint file {weights} changed while it was being read ({size:,} bytes when opened"
        in errors[0]
    )
    assert errors[0].endswith("another process rewrote or truncated it. Run again once it is complete")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lang"]  # no output, no temporary


def test_an_input_changed_between_two_alphas_of_a_sweep_is_refused(large_pair, tmp_path):
    """A sweep reads the checkpoints again for each alpha (set_alpha): a file changed since
    the first merge is refused instead of mixing two models."""
    from babymerge import BabyMergeError, merge

    lang = build_random_llama(tmp_path / "lang", LARGE_CONFIG, seed=1)
    remerge = merge(large_pair[0], lang, alpha=0.3, keep_sources=True, dtype="bfloat16", progress=False).remerge
    with open(lang / "model.safetensors", "r+b") as f:
        f.seek(-4, os.SEEK_END)
        f.write(b"\0\0\0\0")
    with pytest.raises(BabyMergeError, match="language-only checkpoint file .* changed while it was being read"):
        remerge.set_alpha(0.6)


def test_finiteness_check_survives_an_overflowing_sum():
    from babymerge.checkpoint import all_finite

    assert all_finite(torch.tensor([3e38, 3e38]))  # the float32 sum overflows, the entries are fine
    assert not all_finite(torch.tensor([1.0, float("nan")]))
    assert not all_finite(torch.tensor([1.0, float("-inf")], dtype=torch.bfloat16))
