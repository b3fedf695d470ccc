"""BLiMP throughput: ``--model babymerge`` (merge at load) vs lm-eval's ``hf`` model, same weights.

    python bench/eval.py            # fixed 10% sample: the first 100 pairs of each of the 67 paradigms
    python bench/eval.py --full     # all 67,000 pairs

What is measured, side by side in one run:
* a ~20M-parameter model pair (6-layer Llama decoder, BPE tokenizer trained on the BLiMP
  sentences themselves so they tokenise like real text) is built locally and the pair's
  linear merge at alpha=0.3 is saved once as a ``LlamaForCausalLM``;
* lm-eval's ``hf`` model scores every sentence of the sample from that saved merge, at its
  CLI default ``batch_size=1`` and at ``batch_size=32`` and ``64`` (its best on a 2-core CPU;
  128 is no faster);
* ``babymerge`` merges the two checkpoints at load time and scores the same requests
  (``batch_size=auto``: the sentences' prefix tree packed into rows, so each distinct prefix
  is fed once, token-budget batches, the LM head only where a token is scored).
Both see identical requests, built the way lm-eval builds BLiMP's (empty context, " " +
sentence); lm-eval's task machinery, the same for both, is left out. Per-example
log-likelihoods are compared (max |diff|) and the accuracies must match exactly.
The data are the official BLiMP files in ../shared/data/blimp (or --blimp DIR).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def load_pairs(blimp: Path, per_paradigm: int | None) -> list[tuple[str, str]]:
    pairs = []
    for file in sorted(blimp.glob("*.jsonl")):
        rows = [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
        pairs += [(r["sentence_good"], r["sentence_bad"]) for r in rows[:per_paradigm]]
    return pairs


def build_models(workdir: Path, sentences: list[str]):
    """Two random 6-layer Llama twins (~20M parameters) with a BLiMP-trained tokenizer."""
    from babymerge import merge
    from babymerge.tokenization import train_bpe_tokenizer
    from demo.toy import build_toy_checkpoints

    if not (workdir / "merged" / "config.json").exists():
        tokenizer = train_bpe_tokenizer(sentences, vocab_size=8000)
        shape = dict(hidden_size=384, num_layers=6, intermediate_size=1536, heads=6, tokenizer=tokenizer)
        a = build_toy_checkpoints(workdir / "a", seed=1, **shape).lang
        b = build_toy_checkpoints(workdir / "b", seed=2, **shape).lang
        merge(a, b, alpha=0.3, out=workdir / "merged", overwrite=True, progress=False)
    return workdir / "a" / "lang", workdir / "b" / "lang", workdir / "merged"


def requests(sentences):
    from lm_eval.api.instance import Instance

    return [Instance("loglikelihood", {}, ("", " " + s), i) for i, s in enumerate(sentences)]


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def accuracy(scores) -> float:
    return sum(scores[i][0] > scores[i + 1][0] for i in range(0, len(scores), 2)) / (len(scores) // 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blimp", type=Path, default=REPO.parent / "shared" / "data" / "blimp")
    parser.add_argument("--workdir", type=Path, default=REPO / "bench_out" / "eval")
    parser.add_argument("--full", action="store_true", help="all 1,000 pairs per paradigm instead of 100")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.blimp.is_dir():
        print(f"BLiMP files not found in {args.blimp}; pass --blimp DIR", file=sys.stderr)
        return 2

    from lm_eval.models.huggingface import HFLM

    from babymerge.lm_eval_model import BabyMergeLM

    pairs = load_pairs(args.blimp, None if args.full else 100)
    sentences = [s for pair in pairs for s in pair]
    a, b, merged = build_models(args.workdir, sentences)
    n_params = sum(p.numel() for p in HFLM(pretrained=str(merged), device="cpu", dtype="float32").model.parameters())
    print(
        f"{len(pairs):,} BLiMP pairs ({len(set(sentences)):,} distinct sentences), model {n_params / 1e6:.1f}M parameters"
    )

    rows = []
    hf1 = HFLM(pretrained=str(merged), device="cpu", dtype="float32", batch_size=1)
    ref, t_hf1 = timed(lambda: hf1.loglikelihood(requests(sentences), disable_tqdm=True))
    rows.append(("hf, batch_size=1 (lm_eval CLI default)", t_hf1, ref))
    for batch_size in (32, 64):
        hf = HFLM(pretrained=str(merged), device="cpu", dtype="float32", batch_size=batch_size)
        scores, seconds = timed(lambda hf=hf: hf.loglikelihood(requests(sentences), disable_tqdm=True))
        rows.append((f"hf, batch_size={batch_size}", seconds, scores))
    ours, t_load = timed(
        lambda: BabyMergeLM(pretrained=str(a), lang_ckpt=str(b), alpha=0.3, image_prefix="none", device="cpu")
    )
    scores, t_ours = timed(lambda: ours.loglikelihood(requests(sentences), disable_tqdm=True))
    rows.append(("babymerge, batch_size=auto (merge at load)", t_ours, scores))
    packing = ours.last_packing
    ours.prefix_sharing = False  # the same adapter, each distinct sentence fed whole
    scores, seconds = timed(lambda: ours.loglikelihood(requests(sentences), disable_tqdm=True))
    rows.append(("babymerge, prefix_sharing=False", seconds, scores))
    ours.prefix_sharing = True

    print(f"\n{'model':<45} {'seconds':>8} {'sentences/s':>12} {'accuracy':>9} {'max |dlogp|':>12}")
    for name, seconds, s in rows:
        diff = max(abs(x[0] - y[0]) for x, y in zip(s, ref))
        print(f"{name:<45} {seconds:>8.2f} {len(sentences) / seconds:>12.1f} {accuracy(s):>9.4f} {diff:>12.2e}")
    print(f"babymerge merge at load: {ours.merge_seconds:.2f}s (model load total {t_load:.2f}s)")
    same = all(accuracy(s) == accuracy(ref) for _, _, s in rows)
    print(f"\naccuracies identical across rows: {same}")
    best_hf = min(seconds for name, seconds, _ in rows if name.startswith("hf"))
    print(f"throughput babymerge / hf (its fastest batch size) = {best_hf / t_ours:.2f}x (target >= 1.5)")
    print(f"throughput babymerge / hf (bs=1, CLI default)      = {t_hf1 / t_ours:.2f}x")
    print(f"merge at load / evaluation time                     = {ours.merge_seconds / t_ours:.3f} (target <= 0.10)")
    print(
        f"positions through the model: {packing['positions']:,} in the distinct sentences, {packing['fed']:,} fed with "
        f"prefix sharing ({packing['positions'] / packing['fed']:.2f}x fewer), {packing['padded']:,} with padding"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
