"""Tiny random BabyLLaVA checkpoints, built locally: for tests, the demo, benchmarks and the README's quick start.

    python -m demo.toy --out toy     # toy/mm, toy/lang, toy/encoder and a tiny toy/evaluation_data/

Nothing here downloads anything. ``build_toy_checkpoints`` writes, under one directory, a
tiny random DINOv2 encoder (with its image processor), a BPE tokenizer trained on a small
synthetic corpus, a multimodal ``BabyLlavaForConditionalGeneration`` whose
``config.vision_encoder`` points at that encoder, and a language-only twin (a plain
``LlamaForCausalLM`` of the same decoder shape, or the same class). The same code with
bigger sizes makes the ~150M-parameter checkpoints of ``bench/merge.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from transformers import BitImageProcessorPil, Dinov2Config, Dinov2Model, LlamaConfig, LlamaForCausalLM

from babymerge.configuration import BabyLlavaConfig
from babymerge.data.synthetic_winoground import write_dataset as write_synthetic_winoground
from babymerge.errors import BabyMergeError
from babymerge.modeling import BabyLlavaForConditionalGeneration
from babymerge.prompt import IMAGE_TOKEN
from babymerge.publish import atomic_output_dir
from babymerge.tokenization import train_bpe_tokenizer

_WORDS = {
    "det": ["the", "a", "every", "some", "this", "that"],
    "adj": ["big", "small", "red", "blue", "happy", "old", "young", "green"],
    "noun": ["dog", "cat", "girl", "boy", "teacher", "ball", "bird", "house", "tree", "car"],
    "verb": ["sees", "likes", "finds", "chases", "helps", "watches", "draws", "holds"],
    "prep": ["near", "under", "above", "behind", "beside"],
}


def synthetic_sentences(n: int, seed: int = 0) -> list[str]:
    """Simple, grammatical English sentences from a fixed toy grammar (deterministic)."""
    rng = random.Random(seed)
    w = {k: v for k, v in _WORDS.items()}

    def np():
        words = [rng.choice(w["det"])]
        if rng.random() < 0.5:
            words.append(rng.choice(w["adj"]))
        return words + [rng.choice(w["noun"])]

    out = []
    for _ in range(n):
        words = np() + [rng.choice(w["verb"])] + np()
        if rng.random() < 0.4:
            words += [rng.choice(w["prep"])] + np()
        sentence = " ".join(words)
        out.append(sentence[0].upper() + sentence[1:] + ".")
    return out


@dataclass
class ToyCheckpoints:
    root: Path
    encoder: Path  # tiny DINOv2 + image processor
    mm: Path  # BabyLlavaForConditionalGeneration
    lang: Path  # language-only twin
    base: Path | None  # shared random init (same decoder shape), if asked for


def toy_text_config(
    vocab_size: int, hidden_size: int = 64, num_layers: int = 2, intermediate_size: int | None = None, heads: int = 4
) -> dict:
    return dict(
        model_type="llama",
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )


def build_toy_encoder(path: Path, feature_size: int = 32, image_size: int = 28, seed: int = 0) -> Path:
    """A random 1-layer DINOv2 with a matching image processor, saved like a hub model."""
    torch.manual_seed(seed)
    config = Dinov2Config(
        hidden_size=feature_size, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2,
        image_size=image_size, patch_size=14,
    )  # fmt: skip
    Dinov2Model(config).save_pretrained(path)
    BitImageProcessorPil(  # the PIL backend: torchvision has no CPU wheel here
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225], do_convert_rgb=True,
    ).save_pretrained(path)  # fmt: skip
    return Path(path)


def build_toy_checkpoints(
    root: str | Path,
    *,
    seed: int = 0,
    vocab_size: int = 300,
    hidden_size: int = 64,
    num_layers: int = 2,
    intermediate_size: int | None = None,
    heads: int = 4,
    feature_size: int = 32,
    dtype: torch.dtype = torch.float32,
    lang_class: str = "llama",
    with_base: bool = False,
    tokenizer=None,
) -> ToyCheckpoints:
    """Write a tiny encoder, tokenizer, multimodal model and language-only twin under ``root``.

    ``lang_class`` is ``"llama"`` (``LlamaForCausalLM``) or ``"babyllava"`` (same class as
    the multimodal model). With ``with_base`` a third, shared random init is written.
    """
    root = Path(root)
    encoder_dir = build_toy_encoder(root / "encoder", feature_size=feature_size, seed=seed)
    from transformers import AutoImageProcessor

    encoder = Dinov2Model.from_pretrained(encoder_dir)
    processor = AutoImageProcessor.from_pretrained(encoder_dir)
    if tokenizer is None:
        tokenizer = train_bpe_tokenizer(synthetic_sentences(2000, seed), vocab_size=vocab_size)
    text = toy_text_config(len(tokenizer), hidden_size, num_layers, intermediate_size, heads)
    mm_config = BabyLlavaConfig(
        text_config=text,
        vision_config=encoder.config.to_dict(),
        vision_encoder=str(encoder_dir.resolve()),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
    )

    def save(model, name):
        model.to(dtype).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        return root / name

    def multimodal(model_seed):
        torch.manual_seed(model_seed)
        model = BabyLlavaForConditionalGeneration(mm_config)
        model.set_vision_encoder(encoder, processor)
        return model

    mm = save(multimodal(seed + 1), "mm")
    if lang_class == "llama":
        torch.manual_seed(seed + 2)
        lang = save(LlamaForCausalLM(LlamaConfig(**{k: v for k, v in text.items() if k != "model_type"})), "lang")
    elif lang_class == "babyllava":
        lang = save(multimodal(seed + 2), "lang")
    else:
        raise ValueError(f"lang_class must be 'llama' or 'babyllava', got {lang_class!r}")
    base = save(multimodal(seed + 3), "base") if with_base else None
    return ToyCheckpoints(root, encoder_dir, mm, lang, base)


def build_random_llama(
    path: str | Path, text_config: dict, *, dtype: torch.dtype = torch.float32, seed: int = 0, max_shard_size="2GB"
) -> Path:
    """A random ``LlamaForCausalLM`` checkpoint (config + safetensors, no tokenizer) of any
    size, written one tensor at a time: a 0.5B-parameter model costs one tensor of memory,
    not the model (its shapes come from a model on the meta device)."""
    from babymerge.safetensors_writer import StreamingSafetensorsWriter

    path = Path(path)
    path.mkdir(parents=True)
    config = LlamaConfig(**text_config, tie_word_embeddings=False)
    config.architectures = ["LlamaForCausalLM"]
    config.dtype = dtype
    config.save_pretrained(path)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in LlamaForCausalLM(config).state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    with StreamingSafetensorsWriter(path, [(k, dtype, s) for k, s in shapes.items()], max_shard_size) as writer:
        for key, shape in shapes.items():
            writer.write(key, 0, (torch.randn(shape, generator=generator) * 0.02).to(dtype))
        writer.close()
    return path


# The toy grammar's singular determiners and their plurals: a sentence with "this"/"that" before
# a singular noun, and the same sentence with "these"/"those", make a determiner-noun agreement pair.
_PLURAL_DETERMINER = {"this": "these", "that": "those", "This": "These", "That": "Those"}
TOY_BLIMP_UID = "determiner_noun_agreement_1"


def determiner_noun_pairs(n: int, seed: int = 0) -> list[dict]:
    """``n`` minimal pairs in the official BLiMP files' fields, from the toy grammar (made up: not BLiMP's items)."""
    rows = []
    for good in synthetic_sentences(20 * n, seed):
        words = good.split()
        i = next((i for i, w in enumerate(words) if w in _PLURAL_DETERMINER), None)
        if i is None:
            continue
        bad = " ".join(words[:i] + [_PLURAL_DETERMINER[words[i]]] + words[i + 1 :])
        rows.append({"sentence_good": good, "sentence_bad": bad, "field": "morphology",
                     "linguistics_term": "determiner_noun_agreement", "UID": TOY_BLIMP_UID,
                     "pairID": str(len(rows))})  # fmt: skip
        if len(rows) == n:
            break
    return rows


def write_toy(out: str | Path, seed: int = 0, pairs: int = 20, winoground_items: int = 8) -> ToyCheckpoints:
    """The quick start's files under a new folder ``out``: ``encoder/``, ``mm/``, ``lang/`` (as
    ``build_toy_checkpoints``) and ``evaluation_data/`` (``blimp/<TOY_BLIMP_UID>.jsonl``, toy minimal
    pairs, and ``winoground/``, the synthetic Winoground-format set), the layout the project's
    lm-eval tasks read from ``$BABYMERGE_DATA``. Written under a temporary name and published by
    a rename: an existing ``out`` is refused, a killed run leaves nothing at ``out``."""
    final = Path(out).resolve()
    with atomic_output_dir(final) as tmp:
        toy = build_toy_checkpoints(tmp, seed=seed)
        # the multimodal config names its encoder by absolute path: the published one, not the temporary
        config = toy.mm / "config.json"
        config.write_text(config.read_text().replace(json.dumps(str(tmp))[1:-1], json.dumps(str(final))[1:-1]))
        blimp = tmp / "evaluation_data" / "blimp"
        blimp.mkdir(parents=True)
        rows = determiner_noun_pairs(pairs, seed)
        (blimp / f"{TOY_BLIMP_UID}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        write_synthetic_winoground(tmp / "evaluation_data" / "winoground", n=winoground_items, seed=seed)
    return ToyCheckpoints(final, final / "encoder", final / "mm", final / "lang", None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.toy", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="a new folder for the checkpoints and evaluation data")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if Path(args.out).exists():
        parser.error(f"--out {args.out} exists; give a new folder")
    if not torch.cuda.is_available():  # say it is a CPU machine, rather than have DeepSpeed warn of no GPU
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    transformers.utils.logging.disable_progress_bar()  # seconds of work: one line at the end says what was written
    try:
        toy = write_toy(args.out, seed=args.seed)
    except BabyMergeError as e:
        print(f"python -m demo.toy: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {toy.mm} (multimodal), {toy.lang} (language-only twin), {toy.root / 'evaluation_data'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
