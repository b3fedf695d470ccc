"""The end-to-end demo: ``make demo`` (or ``python -m babymerge.demo --out demo_out``).

Runs on a fresh machine with no network. It builds two tiny random checkpoints locally (a
BabyLLaVA multimodal model with a tiny DINOv2 encoder, and a LlamaForCausalLM language-only
twin sharing its tokenizer), merges them at alpha = 0.3 with the real ``babymerge merge``
command, loads the result with the transformers Auto classes, and prints where each
artefact is. Later stages (training, lm-eval, sweeps, submission) are added as they land.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from .modeling import IMAGE_TOKEN
from .toy import build_toy_checkpoints, synthetic_sentences


def sentence_logprob(model, tokenizer, text: str) -> float:
    """Sum of token log-probabilities of ``text`` after the (black) image token."""
    ids = tokenizer(IMAGE_TOKEN + text, return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
    return float(logits.gather(1, ids[0, 1:, None]).sum())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_out", help="where to write everything (replaced)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)

    print("1/3 building two tiny random checkpoints (no downloads) ...")
    toy = build_toy_checkpoints(out / "checkpoints", hidden_size=64, num_layers=2)

    print("2/3 merging them with `babymerge merge --alpha 0.3` ...")
    merged = out / "merged-alpha0.3"
    cmd = [sys.executable, "-m", "babymerge", "merge", "--mm", str(toy.mm), "--lang", str(toy.lang),
           "--alpha", "0.3", "--method", "linear", "--out", str(merged)]  # fmt: skip
    print("   $", " ".join(cmd))
    subprocess.run(cmd, check=True)

    print("3/3 loading the merged checkpoint with AutoModelForCausalLM ...")
    model = AutoModelForCausalLM.from_pretrained(merged).eval()
    tokenizer = AutoTokenizer.from_pretrained(merged)
    sentence = synthetic_sentences(1, seed=123)[0]
    print(f"   {type(model).__name__}: log P({sentence!r} | black image) = {sentence_logprob(model, tokenizer, sentence):.2f}")

    print("\nArtefacts:")
    print(f"  multimodal checkpoint     {toy.mm}")
    print(f"  language-only checkpoint  {toy.lang}")
    print(f"  tiny DINOv2 encoder       {toy.encoder}")
    print(f"  merged (alpha=0.3)        {merged}  (recipe: {merged / 'babymerge_recipe.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
