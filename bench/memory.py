"""Memory at half a billion parameters: a merge to disk, a sweep's merges, a refusal.

    python bench/memory.py                  # a 0.55B-parameter bfloat16 Llama pair (1.1 GB each), ~2 min
    python bench/memory.py --layers 30      # ~0.95B parameters (1.9 GB each in float32)
    python bench/memory.py --keep           # keep the pair (default: deleted at the end)
    python bench/memory.py --baseline /tmp/old   # also run another source tree's babymerge (an
                                            # older commit: `git worktree add /tmp/old HEAD~1`)

What is built (demo.toy.build_random_llama, one tensor at a time, under --workdir): two
random LlamaForCausalLM checkpoints of the same shape, in bfloat16, no tokenizer.

What is measured, each in a fresh subprocess (peak RSS = the child's ``ru_maxrss``, from
``os.wait4``; this script imports only the standard library, so nothing inflates it):
* bare: python + torch + transformers + babymerge imported, nothing merged;
* merge to disk (``merge(..., out=DIR)``, linear, alpha 0.3): peak RSS, and the same merge
  under an address-space limit (``ulimit -v``) of bare + half a model: it must finish;
* sweep: what ``babymerge sweep`` does with a checkpoint pair before evaluating it:
  ``merge(..., keep_sources=True)`` in memory at the sweep's default dtype (float32, as
  lm-eval's), then ``remerge.set_alpha`` for two more alphas. Peak RSS / one model's size
  (the weights file of one checkpoint), target <= 2.5; and the same at ``dtype=bfloat16``;
* refusal: the same in-memory float32 merge under an address-space limit of bare + 1.5
  models (below the 2 models float32 takes): the one-line message, printed, and how long
  until it came (before anything is loaded); then ``dtype=bfloat16`` under the same limit,
  which the message names as the way out, must finish.

``--baseline SRC`` runs every merge row a second time with another source tree's babymerge;
a row where it dies of ``MemoryError`` (or another allocation error) says FAILED and why.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULT = "BENCH_RESULT "
TARGET_SWEEP = 2.5  # peak RSS of a sweep's merges / one model's size
GB = 1e9


# -- children: each runs in a fresh interpreter, does one thing, prints RESULT {json} -------------
def _imports() -> None:
    import torch  # noqa: F401
    import transformers.initialization  # noqa: F401
    from transformers import LlamaForCausalLM  # noqa: F401

    import babymerge  # noqa: F401


def _vm_size() -> int:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmSize:"))
    return int(line.split()[1]) * 1024


def _limit_address_space(spec: dict) -> None:
    if spec.get("limit_above_bare"):  # above what this process uses with everything imported
        limit = _vm_size() + spec["limit_above_bare"]
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))


def child_build(spec: dict) -> dict:
    import torch

    from demo.toy import build_random_llama, toy_text_config

    config = toy_text_config(**spec["shape"])
    for name, seed in (("mm", 0), ("lang", 1)):
        build_random_llama(Path(spec["dir"]) / name, config, dtype=torch.bfloat16, seed=seed)
    return {}


def child_bare(spec: dict) -> dict:
    _imports()
    return {}


def child_merge(spec: dict) -> dict:
    """merge() to disk, or in memory followed by set_alpha for spec["more_alphas"]."""
    _imports()
    from babymerge import BabyMergeError, merge

    _limit_address_space(spec)
    start = time.perf_counter()
    try:
        report = merge(
            spec["mm"], spec["lang"], alpha=0.3, out=spec.get("out"), dtype=spec.get("dtype"),
            keep_sources=spec.get("out") is None, progress=False,
        )  # fmt: skip
        for alpha in spec.get("more_alphas", []):
            report.remerge.set_alpha(alpha)
    except BabyMergeError as err:
        return {"error": str(err), "seconds": time.perf_counter() - start}
    except (MemoryError, RuntimeError, OSError) as err:  # what a baseline may die of
        return {"failed": f"{type(err).__name__}: {err}"[:300], "seconds": time.perf_counter() - start}
    return {"seconds": time.perf_counter() - start}


CHILDREN = {"build": child_build, "bare": child_bare, "merge": child_merge}


# -- parent: standard library only --------------------------------------------------------------
def run(role: str, spec: dict, src: Path = REPO) -> dict:
    """Run a child (importing babymerge from ``src``) to completion: its peak RSS (wait4) and
    what it printed."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")])))
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    command = [sys.executable, str(Path(__file__).resolve()), "--child", role, json.dumps(spec)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    out, err = proc.stdout.read(), proc.stderr.read()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"child {role} exited with {code}:\n{err[-3000:]}")
    result = next(json.loads(line[len(RESULT) :]) for line in out.splitlines() if line.startswith(RESULT))
    return {"peak": usage.ru_maxrss * 1024, **result}


def weights_bytes(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.glob("*.safetensors"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=REPO / "bench_out" / "memory")
    parser.add_argument("--layers", type=int, default=16, help="decoder layers (16: 0.55B parameters, 30: 0.95B)")
    parser.add_argument("--keep", action="store_true", help="keep the generated pair")
    parser.add_argument("--baseline", type=Path, metavar="SRC", help="also run the babymerge of this source tree")
    parser.add_argument("--child", nargs=2, metavar=("ROLE", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(RESULT + json.dumps(CHILDREN[args.child[0]](json.loads(args.child[1]))), flush=True)
        return 0

    shape = dict(vocab_size=32000, hidden_size=1536, num_layers=args.layers, intermediate_size=4096, heads=12)
    pair = args.workdir.resolve() / f"llama-{args.layers}-bf16"
    shutil.rmtree(pair, ignore_errors=True)
    try:
        start = time.perf_counter()
        run("build", {"dir": str(pair), "shape": shape})
        mm, lang, out = pair / "mm", pair / "lang", pair / "out"
        model = weights_bytes(mm)
        print(f"built a bfloat16 pair of {model / 2 / 1e9:.2f}B parameters ({model / GB:.2f} GB each) "
              f"in {time.perf_counter() - start:.0f}s: {pair}")  # fmt: skip
        bare = run("bare", {})
        base = {"mm": str(mm), "lang": str(lang)}

        def merge(label: str, **spec) -> dict:
            for src, tag in [(REPO, "")] + ([(args.baseline.resolve(), " [baseline]")] if args.baseline else []):
                shutil.rmtree(out, ignore_errors=True)
                result = run("merge", {**base, **spec}, src)
                status = "refused" if "error" in result else "FAILED" if "failed" in result else "ok"
                print(f"{label + tag:<58} {status:>8} {result['seconds']:7.1f}s  peak RSS {result['peak'] / GB:5.2f} GB "
                      f"= {result['peak'] / model:4.2f}x one model ({(result['peak'] - bare['peak']) / model:4.2f}x above bare)"
                      + (f"  {result['failed']}" if "failed" in result else ""))  # fmt: skip
                if not tag:
                    mine = result
            return mine

        print(
            f"{'bare: python + torch + transformers + babymerge':<58} {'':>8} {'':>8}  peak RSS {bare['peak'] / GB:5.2f} GB"
        )
        merge("merge to disk", out=str(out))
        disk_limited = merge("merge to disk, ulimit -v bare + 0.5 model", out=str(out), limit_above_bare=model // 2)
        sweep = merge("sweep: in memory (float32) + 2 remerges", dtype="float32", more_alphas=[0.5, 0.7])
        sweep_bf16 = merge("sweep: in memory (bfloat16) + 2 remerges", dtype="bfloat16", more_alphas=[0.5, 0.7])
        refused = merge(
            "in memory (float32), ulimit -v bare + 1.5 models", dtype="float32", limit_above_bare=int(1.5 * model)
        )
        fits = merge(
            "in memory (bfloat16), ulimit -v bare + 1.5 models", dtype="bfloat16", limit_above_bare=int(1.5 * model)
        )
        print(f"refusal: {refused.get('error', '(none: the merge ran)')}")
        ratio = sweep["peak"] / model
        checks = {
            f"sweep peak / one model = {ratio:.2f} <= {TARGET_SWEEP}": ratio <= TARGET_SWEEP,
            f"sweep (bfloat16) peak / one model = {sweep_bf16['peak'] / model:.2f} <= {TARGET_SWEEP}": sweep_bf16["peak"] / model <= TARGET_SWEEP,
            "merge to disk finishes under ulimit -v bare + 0.5 model": disk_limited.keys().isdisjoint({"error", "failed"}),
            f"float32 in memory refused before loading ({refused['seconds']:.1f}s), naming dtype=bfloat16": "dtype=bfloat16" in refused.get("error", ""),
            "bfloat16 in memory finishes under the same limit": fits.keys().isdisjoint({"error", "failed"}),
        }  # fmt: skip
        for text, ok in checks.items():
            print(f"{'PASS' if ok else 'FAIL'}  {text}")
        return 0 if all(checks.values()) else 1
    finally:
        if not args.keep:
            shutil.rmtree(pair, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
