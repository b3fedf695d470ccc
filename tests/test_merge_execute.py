"""Executing a merge (``babymerge.merge.execute``): chunks read into buffers, two merging threads,
one torch thread.

merge() computes elementwise methods on the inputs' rows read (``pread``) chunk by chunk into
reused buffers, checks NaN/inf once per merged chunk and writes each chunk at its place in
the file, from two threads that each take whole tensors. These tests pin what that must not
change: the numbers (against the formula by hand, across chunk boundaries), which input a
NaN is reported in, errors of a merging thread, that no input is mapped, and the caller's
torch thread count.
"""

import errno
import importlib
import json
import os
import re
import threading

import pytest
import torch
from safetensors.torch import load_file, save_file

from babymerge import BabyMergeError, merge
from babymerge.checkpoint import Checkpoint
from demo.toy import build_toy_checkpoints

from helpers.models import as_llama_name as lang_name
from helpers.models import interpolated, weights

execute = importlib.import_module("babymerge.merge.execute")


@pytest.fixture(scope="module")
def toy_bf16(tmp_path_factory):
    return build_toy_checkpoints(tmp_path_factory.mktemp("toy_bf16"), dtype=torch.bfloat16)


@pytest.mark.parametrize("inputs, dtype", [("fp32", None), ("bf16", None), ("bf16", "float32"), ("fp32", "bfloat16")])
def test_chunked_merge_is_the_formula_rounded_once(toy, toy_bf16, tmp_path, monkeypatch, inputs, dtype):
    """Chunks of 100 elements (every tensor split, rows of 64 and more), two threads each
    merging and writing their own tensors at their places in the file: each entry is the
    interpolation computed by hand (``interpolated``), cast once to the output dtype."""
    monkeypatch.setattr(execute, "CHUNK", 100)
    monkeypatch.setattr(execute, "THREADED_CHUNK", 100)
    monkeypatch.setattr(execute, "threads_for", lambda method: 2)  # also where only one CPU is free
    t = toy if inputs == "fp32" else toy_bf16
    merge(t.mm, t.lang, alpha=0.3, out=tmp_path / "m", dtype=dtype, progress=False)
    mm, lang, out = weights(t.mm), weights(t.lang), weights(tmp_path / "m")
    for key, value in out.items():
        want = mm[key].dtype if dtype is None else getattr(torch, dtype)
        if lang_name(key) in lang:
            expected = interpolated(mm[key], lang[lang_name(key)], 0.3)
        else:
            expected = mm[key]
        assert value.dtype == want and torch.equal(value, expected.to(want)), key
    model = merge(t.mm, t.lang, alpha=0.3, dtype=dtype, progress=False).model  # in memory: the same chunks
    assert all(torch.equal(model.state_dict()[k], v) for k, v in out.items())


def test_nan_in_an_input_the_result_ignores_is_still_refused(toy, tmp_path):
    """At alpha 0 the result is the multimodal tensor itself: its finiteness says nothing of
    the twin, which is then checked on its own (one check per merged chunk otherwise)."""
    lang = tmp_path / "lang"
    lang.mkdir()
    for f in toy.lang.iterdir():
        (lang / f.name).write_bytes(f.read_bytes())
    tensors = load_file(lang / "model.safetensors")
    tensors["model.layers.0.mlp.down_proj.weight"][1, 2] = float("nan")
    save_file(tensors, lang / "model.safetensors", metadata={"format": "pt"})
    for alpha in (0.0, 0.3, 1.0):
        with pytest.raises(
            BabyMergeError, match=r"language-only checkpoint .*'model.layers.0.mlp.down_proj.weight' contains 1 NaN"
        ):
            merge(toy.mm, lang, alpha=alpha, out=tmp_path / "out", progress=False)
        assert not (tmp_path / "out").exists()


def test_inf_in_the_multimodal_model_is_reported_in_its_rows(toy, tmp_path, monkeypatch):
    monkeypatch.setattr(execute, "CHUNK", 64 * 10)  # 10 rows of 64 per chunk
    monkeypatch.setattr(execute, "THREADED_CHUNK", 64 * 10)
    mm = tmp_path / "mm"
    mm.mkdir()
    for f in toy.mm.iterdir():
        (mm / f.name).write_bytes(f.read_bytes())
    key = "model.language_model.layers.1.self_attn.q_proj.weight"
    tensors = load_file(mm / "model.safetensors")
    tensors[key][33, 5] = float("-inf")
    save_file(tensors, mm / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(
        BabyMergeError, match=rf"multimodal checkpoint .*rows 30:40 of tensor '{re.escape(key)}' contains 1 NaN/inf"
    ):
        merge(mm, toy.lang, alpha=0.3, out=tmp_path / "out", progress=False)


def test_a_write_error_in_a_merging_thread_reaches_the_caller(toy, tmp_path, monkeypatch):
    """The disk fills up while two threads merge and write: the merge fails with the one-line
    error, no output and no temporary are left, and the threads are gone."""

    real_pwrite, written = os.pwrite, []

    def full_disk(fd, data, offset):
        written.append(len(memoryview(data).cast("B")))
        if sum(written) > 20_000:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", full_disk)
    monkeypatch.setattr(execute, "threads_for", lambda method: 2)
    with pytest.raises(BabyMergeError, match="no space left on the device"):
        merge(toy.mm, toy.lang, alpha=0.3, out=tmp_path / "out", progress=False)
    assert list(tmp_path.iterdir()) == []
    assert not any(t.name.startswith("babymerge-merge") for t in threading.enumerate())


def test_reads_give_the_rows_of_the_file_into_one_buffer_and_map_nothing(tmp_path):
    """A 16 MiB tensor read in 1 MiB chunks into one reused buffer: each chunk equals the
    rows safetensors loads, and no page of the file is ever mapped into this process."""
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    save_file({"w": torch.randn(2048, 2048), "b": torch.randn(3).bfloat16()}, tmp_path / "model.safetensors")
    expected = {k: v.clone() for k, v in load_file(tmp_path / "model.safetensors").items()}  # load_file maps
    ckpt = Checkpoint(tmp_path)
    buffer = torch.empty(128, 2048)
    for start in range(0, 2048, 128):
        assert ckpt.read_into("w", buffer, (start, start + 128)) is buffer
        assert torch.equal(buffer, expected["w"][start : start + 128])
        assert _mapped_kib(tmp_path / "model.safetensors") == 0
    assert torch.equal(ckpt.read("b"), expected["b"])
    ckpt.close()


def _mapped_kib(path) -> int:
    """Resident KiB of this process's mappings of ``path`` (/proc/self/smaps)."""
    total, current = 0, None
    for line in open("/proc/self/smaps"):
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            current = line.split()[-1] if len(line.split()) >= 6 else None
        elif line.startswith("Rss:") and current == str(path):
            total += int(line.split()[1])
    return total


def test_the_callers_torch_thread_count_is_restored(toy, tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        merge(toy.mm, toy.lang, alpha=0.3, out=tmp_path / "m", progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
