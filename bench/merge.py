"""Merge benchmark: babymerge vs a naive merge vs ``mergekit-yaml``: wall time and peak RSS.

    python bench/merge.py                  # ~150M-parameter checkpoints, fp32 and bf16 (~5 min on 2 cores)
    python bench/merge.py --quick          # tiny checkpoints, 1 run per row: a smoke test (~1 min, start-ups)
    python bench/merge.py --skip-mergekit  # without the mergekit rows (no venv, no install)
    python bench/merge.py --targets-only --repeat 7   # only the rows the floor and RSS targets use
    python bench/merge.py --targets-only --baseline /tmp/old   # and another source tree's babymerge
                                           # (e.g. `git worktree add /tmp/old HEAD~3`), interleaved

What is built (once, cached under --workdir, default bench_out/merge):
* per dtype (float32, bfloat16), with demo.toy: a multimodal BabyLlavaForConditionalGeneration
  ``mm`` and its language-only twin ``lang`` (a plain LlamaForCausalLM), ~150M parameters each
  (6 layers, hidden 1024, MLP 5000, a 16,000-token BPE vocabulary trained on pseudo-words,
  because the toy grammar's sentences only give a few hundred tokens), plus a second
  LlamaForCausalLM ``lang2`` of the same shape. The fp32 and bf16 models are the same
  random weights (same seeds), cast.

What is measured, every run in its own fresh subprocess, alpha = 0.3, linear:
* babymerge to disk and in memory (``merge(..., out=None)``), and the naive merge (two
  ``from_pretrained``, state-dict arithmetic in place, ``save_pretrained``), on the real
  pair mm + lang (BabyLLaVA + LlamaForCausalLM, names mapped);
* mergekit cannot read BabyLLaVA (``babyllava`` is not a transformers model type, and the
  tensor names of the two models differ), so ``mergekit-yaml`` merges the Llama pair
  lang + lang2, and babymerge is run on that same pair for the ratio against it. mergekit is
  installed into its own venv under --workdir when missing (torch pinned to this
  environment's version first, so pip never fetches another torch); if that fails, its rows
  are skipped with a message.
* two "bare" interpreters: python + ``import torch`` (the baseline the targets use), and
  python + torch + transformers + babymerge: what merging into a model must import
  (``import babymerge`` alone does not import transformers; merging to disk never needs it).
* the I/O floor of a merge to disk, on the same files: a child that reads both inputs' weight
  files once (16 MiB reads) and writes as many bytes as the multimodal weights (the output's
  size) to a new file, with no arithmetic; its work time is what no merge to disk can beat.

How:
* Wall time: "work" is measured inside the child around the merge alone (loading, merging,
  writing; not the imports); "process" is measured by this script around the whole
  subprocess (start-up, imports, work, exit). babymerge/naive uses work time (the same
  imports on both sides); babymerge/mergekit uses process time, the only one mergekit has.
* Peak RSS: ``ru_maxrss`` of the child, from ``os.wait4`` (it includes the child's own
  children, e.g. the console script of mergekit). This script itself imports only the
  standard library and builds/verifies in subprocesses too: on Linux a child's ru_maxrss
  starts at its parent's RSS at fork/exec time, so a parent that had imported torch (or held
  a model) would inflate every row. "above bare" = peak - bare python+torch peak; the
  targets divide it by the size of one checkpoint (the mm safetensors).
* Page cache: it cannot be dropped without root and a quiet machine, so instead each run's
  input files are read right before it (untimed): every row sees a warm cache. Right before,
  not once at the start: a VM may page out idle page cache within a minute (DAMON
  reclaim does on this project's machines), which made later rows read from disk. Outputs
  are written to the page cache as every tool does (none fsyncs); ``os.sync()`` runs before
  each run, untimed, so no run pays for the previous one's write-back.
* Every row is run --repeat times (default 3), in rounds (all rows, then all rows again) so
  that a slow spell of the machine hits every row alike, and the best (smallest) value of
  each column is kept: on a 2-core VM the same run varies by up to 3x. Within a round the I/O
  floor runs right before babymerge to disk on the same files (floor, merge, ..., floor,
  merge, ...), and merge/floor is given two ways: best merge / best floor, and the median of
  each round's adjacent pair (the fairer one while the machine's load changes). The load
  average (``uptime``) is printed at the start and the end.
* ``--baseline SRC`` adds rows running the babymerge of another source tree (an older commit)
  on the same files in the same rounds, so before/after is measured under the same load;
  the sha256 of both outputs is printed (byte-identical unless the arithmetic changed).

Afterwards the outputs are compared tensor by tensor: babymerge vs naive (the same
interpolation; babymerge computes mm + alpha * (lang - mm) in fp32 with one fused
multiply-add and rounds once, naive two products and a sum, in bf16 rounding after each op:
they differ in the last bit) and babymerge vs mergekit on the Llama pair (max |diff|).
Ratios and targets are printed last: wall <= 0.5x naive and <= 0.8x mergekit; babymerge to
disk (linear, work time) <= 1.5x the I/O floor, fp32 and bf16; RSS above bare <= 0.5x one
checkpoint merging to disk, <= 1.2x merging into a model in memory, and in memory <= 1.1x
above python + torch + transformers (the second bare row: the imports are not ours to save).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ALPHA = 0.3
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
# ~150M parameters: 2 x 16000 x 1024 (embeddings, LM head) + 6 x (4 x 1024^2 + 3 x 1024 x 5000)
FULL = dict(vocab_size=16000, hidden_size=1024, num_layers=6, intermediate_size=5000, heads=16)
QUICK = dict(vocab_size=1000, hidden_size=128, num_layers=2, intermediate_size=384, heads=4)
TARGETS = {"naive": 0.5, "mergekit": 0.8, "disk": 0.5, "memory": 1.2, "floor": 1.5, "memory_full": 1.1}
RESULT = "BENCH_RESULT "  # prefix of the line a child prints its measurements on


# =========================================================================================
# children: each runs in a fresh interpreter, does one thing, prints RESULT {json}
# =========================================================================================
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


def run_child(role: str, spec_json: str) -> None:
    result = CHILDREN[role](json.loads(spec_json))
    print(RESULT + json.dumps(result), flush=True)


# =========================================================================================
# parent: standard library only (see the docstring: ru_maxrss is inherited across exec)
# =========================================================================================
def launch(cmd: list[str], log: Path, src: Path = REPO) -> dict:
    """Run cmd to completion (importing babymerge from ``src``); its wall time, peak RSS (wait4)
    and the RESULT it printed."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")])))
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", TOKENIZERS_PARALLELISM="false")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text(errors="replace")
    if proc.returncode != 0:
        tail = "\n".join(text.splitlines()[-15:])
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited with {proc.returncode} (log: {log}):\n{tail}")
    result = next(
        (json.loads(line[len(RESULT) :]) for line in reversed(text.splitlines()) if line.startswith(RESULT)), {}
    )
    return {"process_s": elapsed, "peak_mb": usage.ru_maxrss / 1024, **result}


def child_command(role: str, spec: dict) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--child", role, json.dumps(spec)]


def python_child(role: str, spec: dict, log: Path) -> dict:
    return launch(child_command(role, spec), log)


def safetensors_params_and_bytes(directory: Path) -> tuple[int, int]:
    """Parameter count and weight bytes from the safetensors headers (no torch needed)."""
    params = size = 0
    for file in Path(directory).glob("*.safetensors"):
        with open(file, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        params += sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
        size += file.stat().st_size
    return params, size


def sha256_of_weights(directory: Path) -> str:
    """One sha256 over a checkpoint's safetensors files (sorted by name) and its shard index."""
    digest = hashlib.sha256()
    for file in sorted(Path(directory).glob("*.safetensors")) + sorted(
        Path(directory).glob("*.safetensors.index.json")
    ):
        digest.update(file.name.encode())
        with open(file, "rb", buffering=0) as f:
            while block := f.read(1 << 24):
                digest.update(block)
    return digest.hexdigest()


def warm_cache(*directories: Path) -> None:
    """Read every file once, so the next run starts from a warm page cache."""
    buf = bytearray(1 << 24)
    for file in sorted(f for d in directories for f in Path(d).rglob("*")):
        if file.is_file():
            with open(file, "rb", buffering=0) as f:
                while f.readinto(buf):
                    pass


def build_checkpoints(directory: Path, shape: dict, dtype: str, logs: Path) -> None:
    marker = directory / "built.json"
    wanted = {"shape": shape, "dtype": dtype}
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return
    shutil.rmtree(directory, ignore_errors=True)
    print(f"building {dtype} checkpoints in {directory} ...", flush=True)
    start = time.perf_counter()
    python_child("build", {"dir": str(directory), "shape": shape, "dtype": dtype}, logs / f"build-{dtype}.log")
    marker.write_text(json.dumps(wanted))
    print(f"  built in {time.perf_counter() - start:.0f}s", flush=True)


# -- mergekit in its own venv ------------------------------------------------------------------
def mergekit_command(workdir: Path) -> Path | None:
    """``mergekit-yaml`` of this environment, else from workdir/mergekit-venv, installing it there
    once; None if impossible."""
    beside = Path(sys.executable).parent / "mergekit-yaml"  # the test extras install it in this environment
    if beside.is_file():
        return beside
    venv = workdir / "mergekit-venv"
    exe, py = venv / "bin" / "mergekit-yaml", venv / "bin" / "python"
    if exe.is_file():
        return exe
    # this environment's torch, without the local tag (2.13.0+cpu -> 2.13.0): the CPU wheel of
    # that version is available locally; never let pip resolve mergekit to another torch
    torch_version = importlib.metadata.version("torch").split("+")[0]
    constraints = workdir / "mergekit-constraints.txt"
    constraints.write_text(f"torch=={torch_version}\n")
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    print(f"installing mergekit into {venv} (once; torch=={torch_version} first) ...", flush=True)

    def step(cmd: list[str]) -> bool:
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"  failed: {' '.join(cmd)}\n  " + "\n  ".join(done.stderr.strip().splitlines()[-5:]), flush=True)
        return done.returncode == 0

    shutil.rmtree(venv, ignore_errors=True)
    if not (step([sys.executable, "-m", "venv", str(venv)]) and step(pip + [f"torch=={torch_version}"])):
        return None
    if not step(pip + ["-c", str(constraints), "mergekit"]):
        # mergekit wants another torch: install it without dependencies, then the rest of them
        print("  retrying: mergekit --no-deps, then its other requirements with torch pinned", flush=True)
        if not step(pip + ["--no-deps", "mergekit"]):
            return None
        code = "import importlib.metadata as m; print('\\n'.join(m.requires('mergekit') or []))"
        requires = subprocess.run([str(py), "-c", code], capture_output=True, text=True).stdout.splitlines()
        others = [r for r in requires if "extra ==" not in r and not r.replace(" ", "").lower().startswith("torch")]
        if others and not step(pip + ["-c", str(constraints), *others]):
            return None
    return exe if exe.is_file() else None


def mergekit_yaml(path: Path, first: Path, second: Path, dtype: str) -> Path:
    """The config ``babymerge merge --mergekit-yaml`` exports for linear: weights 1 - alpha, alpha."""
    path.write_text(
        "merge_method: linear\n"
        "models:\n"
        f"  - model: {first}\n    parameters: {{weight: {1 - ALPHA}}}\n"
        f"  - model: {second}\n    parameters: {{weight: {ALPHA}}}\n"
        "parameters: {normalize: false}\n"
        f"dtype: {dtype}\n"
    )
    return path


# -- rows ----------------------------------------------------------------------------------------
@dataclass
class Row:
    """One line of the table: a command run --repeat times in fresh processes."""

    label: str
    pair: str  # which checkpoints it merges
    tag: str  # fp32 / bf16 ("-" for the bare interpreters)
    name: str  # for log file names
    cmd: list[str]
    inputs: tuple[Path, ...] = ()  # read right before each run (warm page cache)
    out: Path | None = None  # removed before each run
    optional: bool = False  # a failure skips the row instead of stopping the benchmark
    src: Path = REPO  # the source tree whose babymerge the child imports (--baseline)
    runs: list[dict] = field(default_factory=list)
    failed: str | None = None

    @property
    def best(self) -> dict:
        """The smallest value of each measurement over the runs."""
        return {k: min(r[k] for r in self.runs) for k, v in self.runs[0].items() if isinstance(v, (int, float))}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--workdir", type=Path, default=REPO / "bench_out" / "merge", help="checkpoints, outputs, logs, mergekit venv"
    )
    parser.add_argument("--quick", action="store_true", help="tiny checkpoints (smoke test of this script)")
    parser.add_argument("--skip-mergekit", action="store_true", help="no mergekit rows (and no mergekit install)")
    parser.add_argument(
        "--targets-only",
        action="store_true",
        help="only the rows the I/O-floor and RSS targets use: bare, I/O floor, babymerge to disk and in memory",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="SRC",
        help="also run the babymerge of this source tree (e.g. a git worktree of an older commit), interleaved",
    )
    parser.add_argument(
        "--repeat", type=int, help="runs per row, the best value of each column kept (default 3; 1 with --quick)"
    )
    parser.add_argument("--child", nargs=2, metavar=("ROLE", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(*args.child)
        return 0

    t0 = time.perf_counter()
    args.repeat = args.repeat or (1 if args.quick else 3)
    shape = QUICK if args.quick else FULL
    workdir = args.workdir.resolve() / ("quick" if args.quick else "full")
    logs, outs = workdir / "logs", workdir / "out"
    ckpts = {tag: workdir / tag for tag in DTYPES}
    for tag, dtype in DTYPES.items():
        build_checkpoints(ckpts[tag], shape, dtype, logs)

    mergekit = None
    if args.skip_mergekit or args.targets_only:
        print(f"mergekit rows skipped ({'--targets-only' if args.targets_only else '--skip-mergekit'})")
    else:
        mergekit = mergekit_command(args.workdir.resolve())
        if mergekit is None:
            print("SKIPPING the mergekit rows: mergekit could not be installed (see above)")

    sizes = {}
    for tag, root in ckpts.items():
        params, nbytes = safetensors_params_and_bytes(root / "mm")
        lang_params, _ = safetensors_params_and_bytes(root / "lang")
        sizes[tag] = nbytes
        print(
            f"{tag}: mm {params / 1e6:.1f}M parameters, {nbytes / 2**20:.0f} MiB; lang (Llama) {lang_params / 1e6:.1f}M"
        )
    print(
        f"alpha={ALPHA}, linear; {args.repeat} run(s) per row, best kept; inputs read right before each run (warm cache)"
    )
    load_start = os.getloadavg()
    print(f"load average at the start: {' '.join(f'{x:.2f}' for x in load_start)} (1, 5, 15 min)\n", flush=True)

    rows: list[Row] = [
        Row("bare python+torch", "-", "-", "bare", child_command("bare", {})),
        Row("bare +transformers+bm", "-", "-", "bare-full", child_command("bare", {"full": True})),
    ]
    sources = [("babymerge", REPO)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
    for tag, dtype in DTYPES.items():
        root = ckpts[tag]
        mm, lang, lang2 = root / "mm", root / "lang", root / "lang2"
        # the floor right before the merges to disk it is compared with (see "How")
        out = outs / f"floor-{tag}"
        spec = {"inputs": [str(mm), str(lang)], "out": str(out)}
        rows.append(Row("I/O floor", "mm+llama", tag, f"floor-{tag}", child_command("floor", spec), (mm, lang), out))
        for label, src in sources:
            out = outs / f"{label}-{tag}"
            spec = {"mm": str(mm), "lang": str(lang), "out": str(out)}
            cmd = child_command("babymerge", spec)
            rows.append(Row(f"{label} -> disk", "mm+llama", tag, f"{label}-{tag}", cmd, (mm, lang), out, src=src))
        if not args.targets_only:
            out = outs / f"naive-{tag}"
            spec = {"mm": str(mm), "lang": str(lang), "out": str(out)}
            rows.append(
                Row("naive -> disk", "mm+llama", tag, f"naive-{tag}", child_command("naive", spec), (mm, lang), out)
            )
        for label, src in sources:
            spec = {"mm": str(mm), "lang": str(lang), "out": None}
            cmd = child_command("babymerge", spec)
            rows.append(Row(f"{label} -> memory", "mm+llama", tag, f"{label}-memory-{tag}", cmd, (mm, lang), src=src))
        if mergekit is not None:
            out = outs / f"babymerge-llama-{tag}"
            spec = {"mm": str(lang), "lang": str(lang2), "out": str(out)}
            rows.append(
                Row(
                    "babymerge -> disk",
                    "llama+llama",
                    tag,
                    f"babymerge-llama-{tag}",
                    child_command("babymerge", spec),
                    (lang, lang2),
                    out,
                )
            )
            config = mergekit_yaml(workdir / f"mergekit-{tag}.yml", lang, lang2, dtype)
            out = outs / f"mergekit-{tag}"
            cmd = [str(mergekit), str(config), str(out), "--quiet"]
            rows.append(
                Row(
                    "mergekit-yaml -> disk",
                    "llama+llama",
                    tag,
                    f"mergekit-{tag}",
                    cmd,
                    (lang, lang2),
                    out,
                    optional=True,
                )
            )

    # rounds: every row once per round, so that a slow spell of the machine hits all rows alike
    for i in range(args.repeat):
        print(f"round {i + 1}/{args.repeat}:", flush=True)
        for row in rows:
            if row.failed:
                continue
            if row.out is not None:
                shutil.rmtree(row.out, ignore_errors=True)
            os.sync()
            warm_cache(*row.inputs)
            try:
                m = launch(row.cmd, logs / f"{row.name}-{i}.log", row.src)
            except RuntimeError as err:
                if not row.optional:
                    raise
                row.failed = str(err)
                print(f"  SKIPPING {row.label} ({row.tag}): {err}", flush=True)
                continue
            row.runs.append(m)
            work = f"work {m['work_s']:.2f}s, " if "work_s" in m else ""
            print(
                f"  {row.label:<22} {row.pair:<12} {row.tag:<5} {work}process {m['process_s']:.2f}s, peak {m['peak_mb']:.0f} MiB",
                flush=True,
            )
    rows = [row for row in rows if row.runs]
    written = {str(row.out) for row in rows if row.out is not None}

    print("\nverifying outputs ...", flush=True)
    pairs = {
        f"babymerge vs naive ({tag})": (str(outs / f"babymerge-{tag}"), str(outs / f"naive-{tag}")) for tag in DTYPES
    }
    pairs |= {
        f"babymerge vs mergekit ({tag})": (str(outs / f"babymerge-llama-{tag}"), str(outs / f"mergekit-{tag}"))
        for tag in DTYPES
    }
    pairs |= {
        f"babymerge vs baseline ({tag})": (str(outs / f"babymerge-{tag}"), str(outs / f"baseline-{tag}"))
        for tag in DTYPES
    }
    pairs = {label: (a, b) for label, (a, b) in pairs.items() if a in written and b in written}  # this run's outputs
    checks = python_child("verify", {"pairs": pairs}, logs / "verify.log")
    for label, c in checks.items():
        if not isinstance(c, dict):
            continue
        extra = f"; only in first: {c['only_a']}, only in second: {c['only_b']}" if c["only_a"] or c["only_b"] else ""
        print(
            f"  {label}: {c['tensors']} tensors, max |diff| = {c['max_abs_diff']:.3g}, bit-equal: {c['equal']}{extra}"
        )
    for tag in DTYPES:
        a, b = outs / f"babymerge-{tag}", outs / f"baseline-{tag}"
        if str(a) in written and str(b) in written:
            digests = [sha256_of_weights(d) for d in (a, b)]
            print(
                f"  babymerge vs baseline ({tag}) weight files sha256: {digests[0][:16]}... vs {digests[1][:16]}... "
                f"byte-identical: {digests[0] == digests[1]}"
            )

    # the table
    base = rows[0].best["peak_mb"]
    print(f"\n'above bare' = peak RSS - {base:.0f} MiB (python + import torch); checkpoint = one mm safetensors file")
    print("'above import' = peak RSS - the child's RSS after its imports, before the work (python children only)")
    header = f"{'run':<22} {'pair':<12} {'dtype':<5} {'work s':>7} {'process s':>9} {'peak MiB':>9} {'above bare':>10} {'/ ckpt':>7} {'above import':>12}"
    print(header + "\n" + "-" * len(header))
    for label, pair, tag, m in ((r.label, r.pair, r.tag, r.best) for r in rows):
        work = f"{m['work_s']:.2f}" if "work_s" in m else "-"
        above = m["peak_mb"] - base
        ratio = f"{above * 2**20 / sizes[tag]:.2f}" if tag in sizes else "-"
        above_import = f"{m['peak_mb'] - m['rss_import_mb']:.0f}" if "rss_import_mb" in m else "-"
        print(
            f"{label:<22} {pair:<12} {tag:<5} {work:>7} {m['process_s']:>9.2f} {m['peak_mb']:>9.0f} {above:>10.0f} {ratio:>7} {above_import:>12}"
        )

    def row(label: str, pair: str, tag: str) -> dict | None:
        return next((r.best for r in rows if (r.label, r.pair, r.tag) == (label, pair, tag)), None)

    def pair_median(label: str, tag: str) -> float | None:
        """Median over rounds of merge / floor, each round's merge against the floor run just before it."""
        merge_row = next((r for r in rows if (r.label, r.pair, r.tag) == (label, "mm+llama", tag)), None)
        floor_row = next((r for r in rows if (r.label, r.pair, r.tag) == ("I/O floor", "mm+llama", tag)), None)
        if merge_row is None or floor_row is None:
            return None
        ratios = sorted(m["work_s"] / f["work_s"] for m, f in zip(merge_row.runs, floor_row.runs))
        return (
            ratios[len(ratios) // 2]
            if len(ratios) % 2
            else (ratios[len(ratios) // 2 - 1] + ratios[len(ratios) // 2]) / 2
        )

    full = next(r.best["peak_mb"] for r in rows if r.name == "bare-full")  # python + torch + transformers + babymerge
    lines = []
    for tag in DTYPES:
        floor = row("I/O floor", "mm+llama", tag)
        naive = row("naive -> disk", "mm+llama", tag)
        for label, _ in sources:
            disk, memory = row(f"{label} -> disk", "mm+llama", tag), row(f"{label} -> memory", "mm+llama", tag)
            name = "" if label == "babymerge" else f" [{label}]"
            if naive is not None:
                lines.append(
                    (f"wall babymerge/naive, work ({tag}){name}", disk["work_s"] / naive["work_s"], TARGETS["naive"])
                )
            lines.append(
                (
                    f"wall babymerge to disk / I/O floor, best/best ({tag}){name}",
                    disk["work_s"] / floor["work_s"],
                    TARGETS["floor"],
                )
            )
            lines.append(
                (
                    f"wall babymerge to disk / I/O floor, median of round pairs ({tag}){name}",
                    pair_median(f"{label} -> disk", tag),
                    TARGETS["floor"],
                )
            )
            if label == "babymerge":
                bm_llama, mk = (
                    row("babymerge -> disk", "llama+llama", tag),
                    row("mergekit-yaml -> disk", "llama+llama", tag),
                )
                if mk is not None:
                    lines.append(
                        (
                            f"wall babymerge/mergekit, process, llama pair ({tag})",
                            bm_llama["process_s"] / mk["process_s"],
                            TARGETS["mergekit"],
                        )
                    )
            for kind, m in (("disk", disk), ("memory", memory)):
                lines.append(
                    (
                        f"RSS above bare / checkpoint size ({'to disk' if kind == 'disk' else 'in memory'}, {tag}){name}",
                        (m["peak_mb"] - base) * 2**20 / sizes[tag],
                        TARGETS[kind],
                    )
                )
            lines.append(
                (
                    f"RSS above python+torch+transformers / checkpoint size (in memory, {tag}){name}",
                    (memory["peak_mb"] - full) * 2**20 / sizes[tag],
                    TARGETS["memory_full"],
                )
            )
    if mergekit is None:
        why = "--targets-only" if args.targets_only else "--skip-mergekit" if args.skip_mergekit else "not installable"
        print(f"\n(no mergekit rows: {why})")
    load_end = os.getloadavg()
    print(f"\ntotal {time.perf_counter() - t0:.0f}s")
    print(
        f"load average (1, 5, 15 min) at the start: {' '.join(f'{x:.2f}' for x in load_start)}, "
        f"at the end: {' '.join(f'{x:.2f}' for x in load_end)} (on {os.cpu_count()} CPUs)\n"
    )
    width = max(len(text) for text, _, _ in lines)
    for text, value, target in lines:
        print(f"{text:<{width}} = {value:5.2f} (target <= {target}) {'PASS' if value <= target else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
