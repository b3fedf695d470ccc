"""Merges and loads near the memory limits (``babymerge.memory``).

Real processes under an address-space limit (``ulimit -v``), set in the child after its imports,
in proportion to the ~256 MB models of ``large_pair``: a merge to disk maps neither both inputs at
once nor the whole output; an in-memory merge, or an lm-eval load, that cannot fit is refused
before loading, naming the way out. The cgroup's limit counts, its reclaimable page cache does not.
"""

import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from babymerge.memory import OVERHEAD

from helpers.commands import error_lines
from helpers.models import weights_bytes

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


def test_a_merge_to_disk_fits_an_address_space_of_half_a_model(large_pair, tmp_path):
    """A merge to disk succeeds in an address space of half one model (neither both inputs nor
    the whole output are mapped at once), its result equal to the formula by hand."""
    mm, lang = large_pair
    limit = weights_bytes(mm) // 2
    result = _limited_merge(limit, mm_ckpt=mm, lang_ckpt=lang, alpha=0.3, out=tmp_path / "out")
    assert result.returncode == 0, result.stderr
    key = "model.layers.1.mlp.down_proj.weight"
    merged = load_file(tmp_path / "out" / "model.safetensors")[key].double()
    torch.testing.assert_close(merged, _interpolated(mm, lang, 0.3, key), rtol=0, atol=1e-7)


def test_an_in_memory_merge_that_cannot_fit_is_refused_before_loading_naming_the_ways_out(large_pair, tmp_path):
    """Float32 in 1.3x the model's size is refused before anything is allocated; the way out
    the message names (dtype=bfloat16: half) then fits."""
    mm, lang = large_pair
    model_bytes = sum(math.prod(t.shape) * 4 for t in load_file(mm / "model.safetensors").values())
    limit = int(1.3 * model_bytes)  # float32: the model + OVERHEAD (1.5x here); bfloat16: 1x
    refused = _limited_merge(limit, mm_ckpt=mm, lang_ckpt=lang, alpha=0.3)
    assert refused.returncode == 1, refused.stderr
    (error,) = error_lines(refused.stderr)
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
def test_lm_eval_refuses_a_float32_model_that_cannot_fit_before_loading(large_pair, merging):
    """lm-eval's default float32 of a model that does not fit: refused before loading, with
    or without a merge at load (one BabyMergeError, not the OOM killer)."""
    mm, lang = large_pair
    args = {"pretrained": str(mm), **({"lang_ckpt": str(lang)} if merging else {})}
    model = weights_bytes(mm)  # the files are float32: the model's size
    result = subprocess.run(
        [sys.executable, "-c", LIMITED_LM_EVAL, str(int(0.7 * model)), json.dumps(args)], capture_output=True, text=True
    )
    assert result.returncode == 1
    (error,) = error_lines(result.stderr)
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
