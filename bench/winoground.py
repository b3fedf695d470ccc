"""Winoground scoring speed: ``--model babymerge`` vs a naive loop, on the synthetic set.

    python bench/winoground.py [--items 200]

Both score the same four log P(caption_i | image_j) per item with the same tiny random
BabyLLaVA model and tiny DINOv2 (built locally, no downloads):
* naive: for every (caption, image) pair, encode the image with DINOv2 and run one forward
  pass: 4 encodings and 4 forwards per item;
* babymerge: the adapter's loglikelihood on the same 4 requests per item, as lm-eval sends
  them: each distinct image is encoded once (2 per item), requests are batched.
The scores must agree (max |diff| printed); the ratio of items/s is printed last.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "lm_eval_tasks" / "winoground"))


def naive_scores(model, tokenizer, items) -> list[float]:
    scores = []
    with torch.inference_mode():
        for item in items:
            for i in (0, 1):
                for j in (0, 1):
                    ids = torch.tensor([[model.config.image_token_id] + tokenizer.encode(" " + item[f"caption_{i}"])])
                    features = model.encode_images(images=[item[f"image_{j}"]])
                    logprobs = model(input_ids=ids, image_features=features).logits[0, :-1].log_softmax(-1)
                    scores.append(float(logprobs.gather(1, ids[0, 1:, None]).sum()))
    return scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200)
    args = parser.parse_args()

    from lm_eval.api.instance import Instance
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from babymerge.data.synthetic_winoground import write_dataset
    from babymerge.lm_eval_model import BabyMergeLM
    from demo.toy import build_toy_checkpoints

    import utils as wino  # the task's module

    with tempfile.TemporaryDirectory() as tmp:
        toy = build_toy_checkpoints(Path(tmp) / "toy", hidden_size=128, num_layers=4)
        items = wino.read_items(write_dataset(Path(tmp) / "winoground", n=args.items))
        model, tokenizer = AutoModelForCausalLM.from_pretrained(toy.mm).eval(), AutoTokenizer.from_pretrained(toy.mm)
        model.encode_images(images=[items[0]["image_0"]])  # load the encoder outside the timings

        start = time.perf_counter()
        naive = naive_scores(model, tokenizer, items)
        t_naive = time.perf_counter() - start

        lm = BabyMergeLM(pretrained=str(toy.mm), device="cpu")
        lm.model.model.vision_encoder()
        requests = [
            Instance("loglikelihood", {}, ("", " " + item[f"caption_{i}"], {"visual": [item[f"image_{j}"]]}), k)
            for item in items for k, (i, j) in enumerate(wino.PAIRS)
        ]  # fmt: skip
        start = time.perf_counter()
        ours = [score for score, _ in lm.loglikelihood(requests, disable_tqdm=True)]
        t_ours = time.perf_counter() - start

    diff = max(abs(a - b) for a, b in zip(naive, ours))
    print(
        f"{args.items} synthetic items, {len(requests)} requests, tiny DINOv2 ({lm.images_encoded} images encoded by babymerge)"
    )
    print(f"{'naive loop (encode per caption)':<34} {t_naive:7.2f}s {args.items / t_naive:8.1f} items/s")
    print(f"{'babymerge adapter':<34} {t_ours:7.2f}s {args.items / t_ours:8.1f} items/s")
    print(f"max |score difference| = {diff:.2e}")
    print(f"items/s babymerge / naive = {t_naive / t_ours:.2f}x (target >= 2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
