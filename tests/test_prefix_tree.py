"""Prefix-tree packing: each row holds exactly each sequence's prefixes, and scores do not change."""

import random

import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from babymerge.lm_eval_model import BabyMergeLM
from babymerge.scoring.prefix_tree import pack_prefix_tree

from conftest import blimp_sentences, requests


def random_sequences(n=300, seed=0):
    """Sequences over a small alphabet, so that many share prefixes; all start with 0."""
    rng = random.Random(seed)
    return list(dict.fromkeys((0,) + tuple(rng.choice((1, 2, 3)) for _ in range(rng.randint(1, 9))) for _ in range(n)))


@pytest.mark.parametrize("row_width", [4, 16, 10_000])
@pytest.mark.parametrize("share", [True, False])
def test_each_sequence_sees_exactly_its_own_prefix(row_width, share):
    sequences = random_sequences()
    rows, placements = pack_prefix_tree(sequences, row_width, share_prefixes=share)
    for sequence, (r, path) in zip(sequences, placements):
        row = rows[r]
        mask = row.attention_mask(len(row) + 2)  # two padding positions
        assert [row.symbols[p] for p in path] == list(sequence[:-1])
        assert [row.depths[p] for p in path] == list(range(len(sequence) - 1))
        for k, p in enumerate(path):  # attends to its ancestors and itself, nothing else
            assert set(mask[p].nonzero()[0]) == set(path[: k + 1])
    for row in rows:
        assert len(row) <= row_width + max(row.depths) + 1  # row_width beyond its longest sequence
        mask = row.attention_mask(len(row) + 2)
        assert mask[len(row)].nonzero()[0].tolist() == [len(row)]  # padding sees only itself


def test_one_unbounded_row_feeds_each_distinct_prefix_once():
    sequences = random_sequences()
    prefixes = {s[:k] for s in sequences for k in range(1, len(s))}
    rows, _ = pack_prefix_tree(sequences, row_width=10_000)
    assert len(rows) == 1 and len(rows[0]) == len(prefixes)
    assert len(prefixes) < sum(len(s) - 1 for s in sequences)
    rows, _ = pack_prefix_tree(sequences, row_width=10_000, share_prefixes=False)
    assert len(rows) == len(sequences) and sum(map(len, rows)) == sum(len(s) - 1 for s in sequences)


def test_a_long_shared_context_is_fed_once():
    """Multiple-choice style: four short endings after one 300-symbol context, row_width 16."""
    context = (0,) + tuple(range(1, 300))
    sequences = [context + (400 + i, 500 + i) for i in range(4)]
    rows, placements = pack_prefix_tree(sequences, row_width=16)
    assert len(rows) == 1 and len(rows[0]) == 300 + 4
    assert [path[:300] for _, path in placements] == [list(range(300))] * 4


def test_sharing_changes_no_score_text_images_and_black_prefix(toy):
    """Packed and unpacked scores agree; sequences after different images share nothing."""
    red, blue = Image.new("RGB", (30, 30), (255, 0, 0)), Image.new("RGB", (30, 30), (0, 0, 255))
    sentences = blimp_sentences(n=20)
    reqs = requests(sentences) + [
        req for s in sentences[:6] for img in (red, blue) for req in requests([s], visual=[img])
    ]
    shared = BabyMergeLM(pretrained=str(toy.mm), lang_ckpt=str(toy.lang), alpha=0.3, device="cpu", row_width=32)
    apart = BabyMergeLM(pretrained=str(toy.mm), lang_ckpt=str(toy.lang), alpha=0.3, device="cpu", prefix_sharing=False)
    text_only, with_images = shared.loglikelihood(reqs[: len(sentences)]), shared.loglikelihood(reqs[len(sentences) :])
    reference = apart.loglikelihood(reqs)
    assert shared.prefix_sharing and not apart.prefix_sharing
    assert max(abs(x[0] - y[0]) for x, y in zip(text_only + with_images, reference)) < 1e-4
    assert [x[1] for x in text_only + with_images] == [y[1] for y in reference]
    assert with_images[0][0] != with_images[1][0]  # same caption, red vs blue: the image still matters


def test_model_that_ignores_tree_masks_falls_back_to_unshared_rows(toy, caplog):
    """A body that drops the 4D mask and position ids would score shared prefixes wrongly:
    the first scoring call detects it, warns and scores one sequence per row."""
    lm = BabyMergeLM(pretrained=str(toy.lang), device="cpu")
    reference = BabyMergeLM(pretrained=str(toy.lang), device="cpu", prefix_sharing=False).loglikelihood(
        requests(blimp_sentences())
    )
    forward = lm.model.model.forward
    lm.model.model.forward = lambda attention_mask=None, position_ids=None, **kw: forward(**kw)
    with caplog.at_level("WARNING"):
        scores = lm.loglikelihood(requests(blimp_sentences()))
    assert not lm.prefix_sharing and "ignores custom attention masks" in caplog.text
    assert max(abs(x[0] - y[0]) for x, y in zip(scores, reference)) < 1e-4


def test_any_hf_causal_lm_gpt2(toy, tmp_path):
    """GPT-2 (learned absolute positions) shares prefixes too, and matches lm-eval's hf model."""
    from lm_eval.models.huggingface import HFLM

    tokenizer = AutoTokenizer.from_pretrained(toy.lang)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=128,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    sentences = blimp_sentences()
    lm = BabyMergeLM(pretrained=str(tmp_path), device="cpu")
    ours = lm.loglikelihood(requests(sentences))
    ref = HFLM(pretrained=str(tmp_path), dtype="float32", device="cpu", batch_size=4).loglikelihood(requests(sentences))
    assert lm.prefix_sharing
    assert max(abs(x[0] - y[0]) for x, y in zip(ours, ref)) < 1e-4
    assert [x[1] for x in ours] == [y[1] for y in ref]
