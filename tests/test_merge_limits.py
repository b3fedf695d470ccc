"""A merge whose input changes under it, and merges near the memory limits.

Real processes, because what is tested is what happens to a process: an input truncated or
rewritten while a merge reads it (one line naming it, exit 2, no temporary output
left), and merges under an address-space limit (``ulimit -v``), set in the child after its
imports, in proportion to the ~256 MB models here (a merge to disk maps neither both inputs
at once nor the whole output; an in-memory merge that cannot fit is refused before loading).
"""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from safetensors.torch import load_file

from babymerge.memory import OVERHEAD
from demo.toy import build_random_llama, toy_text_config

# 3 layers of hidden 1024 and MLP 4096 with an 8192-token vocabulary: 63M parameters, 252 MB
# in float32. A merge of two takes a few tenths of a second: long enough to stop it mid-read.
CONFIG = toy_text_config(8192, hidden_size=1024, num_layers=3, intermediate_size=4096, heads=8)
MB = 1 << 20


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("pair")
    return build_random_llama(root / "mm", CONFIG, seed=0), build_random_llama(root / "lang", CONFIG, seed=1)


def _weights_bytes(path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


def _merge_command(mm, lang, out) -> list[str]:
    return [sys.executable, "-m", "babymerge", "merge", "--mm", str(mm), "--lang", str(lang), "--out", str(out), "--no-progress"]  # fmt: skip


def _errors(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("babymerge: error:")]


@pytest.mark.parametrize("change", ["truncate", "rewrite"])
def test_an_input_changed_mid_merge_ends_it_in_one_line_naming_it_and_leaves_nothing(pair, tmp_path, change):
    """The merge is stopped (SIGSTOP) once a quarter of its output is written, the
    language-only weights are truncated to half (or rewritten in place: same size, new
    content, finite values that no NaN check catches), and it is continued: one line naming the
    file, no output and no ``.out.tmp-*`` (the merge would be 250 MB here)."""
    mm, lang = pair[0], build_random_llama(tmp_path / "lang", CONFIG, seed=1)
    weights = lang / "model.safetensors"
    out, expected = tmp_path / "out", _weights_bytes(mm)
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
    errors = _errors(stderr)
    assert len(errors) == 1, stderr
    assert (
        f"language-only checkpoint file {weights} changed while it was being read ({size:,} bytes when opened"
        in errors[0]
    )
    assert errors[0].endswith("another process rewrote or truncated it. Run again once it is complete")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lang"]  # no output, no temporary


def test_an_input_changed_between_two_alphas_of_a_sweep_is_refused(pair, tmp_path):
    """A sweep reads the checkpoints again for each alpha (set_alpha): a file changed since
    the first merge is refused instead of mixing two models."""
    from babymerge import BabyMergeError, merge

    lang = build_random_llama(tmp_path / "lang", CONFIG, seed=1)
    remerge = merge(pair[0], lang, alpha=0.3, keep_sources=True, dtype="bfloat16", progress=False).remerge
    with open(lang / "model.safetensors", "r+b") as f:
        f.seek(-4, os.SEEK_END)
        f.write(b"\0\0\0\0")
    with pytest.raises(BabyMergeError, match="language-only checkpoint file .* changed while it was being read"):
        remerge.set_alpha(0.6)


# -- memory ------------------------------------------------------------------------------------
# The child imports all a merge imports, then limits its address space to what it uses now
# plus sys.argv[1] bytes, and merges with the keyword arguments in sys.argv[2].
LIMITED_MERGE = textwrap.dedent("""
    import json, resource, sys
    import torch
    import transformers.initialization
    from transformers import LlamaForCausalLM
    from babymerge import BabyMergeError, merge
    from babymerge.memory import _proc_values

    used = _proc_values("/proc/self/status")["VmSize"]
    resource.setrlimit(resource.RLIMIT_AS, (used + int(sys.argv[1]), resource.RLIM_INFINITY))
    try:
        report = merge(**json.loads(sys.argv[2]), progress=False)
    except BabyMergeError as err:
        sys.exit(f"babymerge: error: {err}")
    if report.model is not None:  # one tensor, for the parent to check (saving the model would need another)
        torch.save(report.model.state_dict()[sys.argv[4]].clone(), sys.argv[3])
""")


def _limited_merge(limit: int, saved=None, key=None, **kwargs) -> subprocess.CompletedProcess:
    kwargs = {k: str(v) for k, v in kwargs.items()}
    command = [sys.executable, "-c", LIMITED_MERGE, str(limit), json.dumps(kwargs), str(saved), str(key)]
    return subprocess.run(command, capture_output=True, text=True)


def _interpolated(mm, lang, alpha, key) -> torch.Tensor:
    m, l = load_file(mm / "model.safetensors")[key].double(), load_file(lang / "model.safetensors")[key].double()
    return (1 - alpha) * m + alpha * l


def test_a_merge_to_disk_fits_an_address_space_of_half_a_model(pair, tmp_path):
    """A merge to disk succeeds in an address space of half one model (neither both inputs nor
    the whole output are mapped at once), its result equal to the formula by hand."""
    mm, lang = pair
    limit = _weights_bytes(mm) // 2
    result = _limited_merge(limit, mm_ckpt=mm, lang_ckpt=lang, alpha=0.3, out=tmp_path / "out")
    assert result.returncode == 0, result.stderr
    key = "model.layers.1.mlp.down_proj.weight"
    merged = load_file(tmp_path / "out" / "model.safetensors")[key].double()
    torch.testing.assert_close(merged, _interpolated(mm, lang, 0.3, key), rtol=0, atol=1e-7)


def test_an_in_memory_merge_that_cannot_fit_is_refused_before_loading_naming_the_ways_out(pair, tmp_path):
    """Float32 in 1.3x the model's size is refused before anything is allocated; the way out
    the message names (dtype=bfloat16: half) then fits."""
    mm, lang = pair
    model_bytes = sum(math.prod(t.shape) * 4 for t in load_file(mm / "model.safetensors").values())
    limit = int(1.3 * model_bytes)  # float32: the model + OVERHEAD (1.5x here); bfloat16: 1x
    refused = _limited_merge(limit, mm_ckpt=mm, lang_ckpt=lang, alpha=0.3)
    assert refused.returncode == 1, refused.stderr
    (error,) = _errors(refused.stderr)
    needed, left = (
        float(x) for x in _numbers(error, "needs about {} GB but only {} GB is left under the address-space limit")
    )
    assert abs(needed - (model_bytes + OVERHEAD) / 1e9) <= 0.015 and abs(left - limit / 1e9) <= 0.01
    assert "dtype=bfloat16" in error and "babymerge merge ... --out DIR" in error
    key, saved = "model.layers.2.self_attn.o_proj.weight", tmp_path / "tensor.pt"
    fits = _limited_merge(limit, saved, key, mm_ckpt=mm, lang_ckpt=lang, alpha=0.3, dtype="bfloat16")
    assert fits.returncode == 0, fits.stderr
    merged = torch.load(saved)
    assert merged.dtype == torch.bfloat16  # rounded once from the interpolation: within half a bfloat16 step
    torch.testing.assert_close(merged.double(), _interpolated(mm, lang, 0.3, key), rtol=2**-8, atol=1e-9)


def _numbers(text: str, pattern: str) -> list[str]:
    import re

    match = re.search(re.escape(pattern).replace(r"\{\}", r"([0-9.]+)"), text)
    assert match, text
    return list(match.groups())


LIMITED_LM_EVAL = textwrap.dedent("""
    import json, resource, sys
    from babymerge import BabyMergeError
    from babymerge.lm_eval_model import BabyMergeLM
    from babymerge.memory import _proc_values

    used = _proc_values("/proc/self/status")["VmSize"]
    resource.setrlimit(resource.RLIMIT_AS, (used + int(sys.argv[1]), resource.RLIM_INFINITY))
    try:
        BabyMergeLM(**json.loads(sys.argv[2]), device="cpu")
    except BabyMergeError as err:
        sys.exit(f"babymerge: error: {err}")
""")


@pytest.mark.parametrize("merging", [True, False])
def test_lm_eval_refuses_a_float32_model_that_cannot_fit_before_loading(pair, merging):
    """lm-eval's default float32 of a model that does not fit: refused before loading, with
    or without a merge at load (one BabyMergeError, not the OOM killer)."""
    mm, lang = pair
    args = {"pretrained": str(mm), **({"lang_ckpt": str(lang)} if merging else {})}
    model = _weights_bytes(mm)  # the files are float32: the model's size
    result = subprocess.run(
        [sys.executable, "-c", LIMITED_LM_EVAL, str(int(0.7 * model)), json.dumps(args)], capture_output=True, text=True
    )
    assert result.returncode == 1
    (error,) = _errors(result.stderr)
    what = f"merging {mm} and {lang} in memory" if merging else f"loading {mm} as float32"
    assert error.startswith(f"babymerge: error: {what} needs about ")
    needed, left = (
        float(x) for x in _numbers(error, "needs about {} GB but only {} GB is left under the address-space limit")
    )
    # merging: the model (and chunk buffers); loading: the model and its files, mapped while loading
    assert abs(needed - ((1 if merging else 2) * model + OVERHEAD) / 1e9) <= 0.015
    assert abs(left - 0.7 * model / 1e9) <= 0.01
    assert "dtype=bfloat16" in error


@pytest.mark.parametrize("version", [1, 2])
def test_the_cgroup_memory_limit_counts_and_its_reclaimable_page_cache_does_not(tmp_path, monkeypatch, version):
    """A 4 GiB cgroup holding 3 GB, 1 GB of it inactive page cache, leaves 2.29 GB: what a
    merge in memory is compared with, and named, when it is the tightest limit."""
    import babymerge.memory as memory

    limit, usage, cache = 4 << 30, 3_000_000_000, 1_000_000_000
    if version == 2:  # the limit sits on an ancestor: every level up to the root counts
        (tmp_path / "proc").write_text("0::/job/step\n")
        (tmp_path / "job" / "step").mkdir(parents=True)
        for directory, values in (
            (tmp_path / "job", (limit, usage, cache)),
            (tmp_path / "job" / "step", ("max", 1, 0)),
        ):
            (directory / "memory.max").write_text(f"{values[0]}\n")
            (directory / "memory.current").write_text(f"{values[1]}\n")
            (directory / "memory.stat").write_text(f"anon 1\ninactive_file {values[2]}\n")
    else:
        (tmp_path / "proc").write_text("4:memory:/job\n3:cpu:/\n")
        (tmp_path / "memory" / "job").mkdir(parents=True)
        (tmp_path / "memory" / "job" / "memory.limit_in_bytes").write_text(f"{limit}\n")
        (tmp_path / "memory" / "job" / "memory.usage_in_bytes").write_text(f"{usage}\n")
        (tmp_path / "memory" / "job" / "memory.stat").write_text(f"cache 5\ntotal_inactive_file {cache}\n")
    monkeypatch.setattr(memory, "PROC_CGROUP", tmp_path / "proc")
    monkeypatch.setattr(memory, "CGROUP_ROOT", tmp_path)
    assert memory._cgroup_available() == limit - usage + cache
    if memory._proc_values("/proc/meminfo")["MemAvailable"] > limit:  # the cgroup is the tightest limit
        with pytest.raises(
            memory.BabyMergeError, match="needs about 3.13 GB but only 2.29 GB is left under the cgroup"
        ):
            memory.check_fits(3_000_000_000, "merging")
