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

What each fresh subprocess does is in ``bench/merge_children.py``; launching one, building the
checkpoints and installing mergekit in ``bench/merge_setup.py``; this file plans the rows, runs
them in rounds and prints the table and the targets.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from merge_children import ALPHA
from merge_setup import (
    REPO,
    build_checkpoints,
    child_command,
    launch,
    mergekit_command,
    mergekit_yaml,
    python_child,
    safetensors_params_and_bytes,
    sha256_of_weights,
    warm_cache,
)

DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
# ~150M parameters: 2 x 16000 x 1024 (embeddings, LM head) + 6 x (4 x 1024^2 + 3 x 1024 x 5000)
FULL = dict(vocab_size=16000, hidden_size=1024, num_layers=6, intermediate_size=5000, heads=16)
QUICK = dict(vocab_size=1000, hidden_size=128, num_layers=2, intermediate_size=384, heads=4)
TARGETS = {"naive": 0.5, "mergekit": 0.8, "disk": 0.5, "memory": 1.2, "floor": 1.5, "memory_full": 1.1}


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
    args = parser.parse_args()

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
