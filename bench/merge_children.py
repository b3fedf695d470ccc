"""The merge benchmark's children (``bench/merge.py``): each runs in a fresh interpreter, does one
thing and prints ``BENCH_RESULT {json}``, its measurements, for the parent to read.

    python bench/merge_children.py ROLE SPEC_JSON

Roles: ``build`` (the checkpoints), ``bare`` (the interpreters the RSS is measured above),
``babymerge`` (to disk, or into a model in memory), ``naive``, ``floor`` (the I/O floor of a merge
to disk) and ``verify`` (the outputs compared tensor by tensor). The parent runs them with
``PYTHONPATH`` set to the source tree whose babymerge they import (``merge_setup.launch``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ALPHA = 0.3
RESULT = "BENCH_RESULT "  # prefix of the line a child prints its measurements on


def _rss_now_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _pseudo_text(n_lines: int, seed: int = 0) -> list[str]:
    """Lines of pronounceable pseudo-words: enough variety for a 16k-token BPE vocabulary."""
    import random

    rng = random.Random(seed)
    onsets = "b br c ch d dr f fl g gr h j k l m n p pl qu r s sh st t th tr v w z".split() + [""]
    vowels = "a e i o u ai ea oo ou y".split()
    codas = "n r s t ng ck m l x".split() + ["", ""]
    syllable = lambda: rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas)  # noqa: E731
    lexicon = ["".join(syllable() for _ in range(rng.randint(1, 4))) for _ in range(30000)]
    return [" ".join(rng.choice(lexicon) for _ in range(12)) for _ in range(n_lines)]


def child_build(spec: dict) -> dict:
    """Write mm + lang (demo.toy) and lang2 (a second LlamaForCausalLM) under spec["dir"]."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from babymerge.tokenization import train_bpe_tokenizer
    from demo.toy import build_toy_checkpoints, synthetic_sentences

    root, shape, dtype = Path(spec["dir"]), spec["shape"], getattr(torch, spec["dtype"])
    tokenizer = train_bpe_tokenizer(synthetic_sentences(2000) + _pseudo_text(50000), vocab_size=shape["vocab_size"])
    toy = build_toy_checkpoints(root, seed=0, dtype=dtype, lang_class="llama", tokenizer=tokenizer, **shape)
    torch.manual_seed(3)
    LlamaForCausalLM(LlamaConfig.from_pretrained(toy.lang)).to(dtype).save_pretrained(root / "lang2")
    tokenizer.save_pretrained(root / "lang2")
    return {"vocab": len(tokenizer)}


def child_bare(spec: dict) -> dict:
    import torch  # noqa: F401

    if spec.get("full"):
        import transformers  # noqa: F401

        import babymerge  # noqa: F401
    return {}


def child_babymerge(spec: dict) -> dict:
    """merge() to disk (spec["out"]) or, with out None, into a model kept alive to the end."""
    from babymerge import merge

    rss = _rss_now_mb()
    start = time.perf_counter()
    report = merge(spec["mm"], spec["lang"], "linear", ALPHA, out=spec["out"], progress=False)
    work = time.perf_counter() - start
    return {"work_s": work, "rss_import_mb": rss, "params": report.params_merged + report.params_kept}


def child_naive(spec: dict) -> dict:
    """Two from_pretrained, alpha * lang + (1 - alpha) * mm on the state dicts, save_pretrained."""
    import torch
    from transformers import AutoModelForCausalLM

    import babymerge  # noqa: F401  (registers BabyLLaVA with AutoModelForCausalLM)

    rss = _rss_now_mb()
    start = time.perf_counter()
    mm = AutoModelForCausalLM.from_pretrained(spec["mm"], dtype="auto")
    lang = AutoModelForCausalLM.from_pretrained(spec["lang"], dtype="auto")
    lang_state = lang.state_dict()
    with torch.no_grad():
        for key, value in mm.state_dict().items():
            # BabyLLaVA keeps the Llama decoder under model.language_model.*; lm_head is shared
            lang_key = key.replace("model.language_model.", "model.", 1)
            if lang_key in lang_state and value.is_floating_point():
                value.copy_(ALPHA * lang_state[lang_key] + (1 - ALPHA) * value)
    mm.save_pretrained(spec["out"])
    work = time.perf_counter() - start
    return {"work_s": work, "rss_import_mb": rss}


def child_floor(spec: dict) -> dict:
    """The I/O floor: read every input weight file once; write the first input's bytes (the size
    of the output) to spec["out"], as a merge to disk must at least do. No torch, no arithmetic."""
    rss = _rss_now_mb()
    buf = bytearray(1 << 24)
    view = memoryview(buf)
    out = Path(spec["out"])
    start = time.perf_counter()
    out.mkdir(parents=True)
    written = 0
    with open(out / "floor.bin", "wb", buffering=0) as sink:
        for i, directory in enumerate(spec["inputs"]):
            for file in sorted(Path(directory).glob("*.safetensors")):
                with open(file, "rb", buffering=0) as f:
                    while n := f.readinto(buf):
                        if i == 0:
                            written += sink.write(view[:n])
    return {"work_s": time.perf_counter() - start, "rss_import_mb": rss, "bytes_written": written}


def _tensors(directory: Path):
    """name -> (file, name) for every tensor of a safetensors checkpoint directory."""
    from safetensors import safe_open

    where = {}
    for file in sorted(Path(directory).glob("*.safetensors")):
        with safe_open(file, framework="pt") as f:
            where.update({k: file for k in f.keys()})
    return where


def child_verify(spec: dict) -> dict:
    """Max |a - b| over the tensors of each pair of checkpoint directories."""
    import torch
    from safetensors import safe_open

    results = {}
    for label, (a, b) in spec["pairs"].items():
        ta, tb = _tensors(a), _tensors(b)
        common = sorted(set(ta) & set(tb))
        max_diff, equal = 0.0, True
        for key in common:
            with safe_open(ta[key], framework="pt") as fa, safe_open(tb[key], framework="pt") as fb:
                x, y = fa.get_tensor(key), fb.get_tensor(key)
            if x.shape != y.shape:
                max_diff, equal = float("inf"), False
                continue
            equal = equal and x.dtype == y.dtype and torch.equal(x, y)
            if x.is_floating_point():
                max_diff = max(max_diff, (x.float() - y.float()).abs().max().item())
        results[label] = {
            "tensors": len(common), "only_a": sorted(set(ta) - set(tb)), "only_b": sorted(set(tb) - set(ta)),
            "max_abs_diff": max_diff, "equal": equal,
        }  # fmt: skip
    return results


CHILDREN = {"build": child_build, "bare": child_bare, "babymerge": child_babymerge, "naive": child_naive, "verify": child_verify,
            "floor": child_floor}  # fmt: skip


def main(argv: list[str]) -> int:
    role, spec_json = argv
    result = CHILDREN[role](json.loads(spec_json))
    print(RESULT + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
