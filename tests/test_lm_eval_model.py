"""`--model babymerge`: exact agreement with lm-eval's own `hf` model and with hand-built forwards."""

import json
import os
import re
import shutil

import pytest
import torch
from lm_eval.api.instance import Instance
from PIL import Image
from transformers import AutoModelForCausalLM, AutoTokenizer

from babymerge import BabyMergeError, merge
from babymerge.lm_eval_model import BabyMergeLM
from demo.toy import build_toy_checkpoints

from conftest import blimp_sentences, requests


@pytest.fixture(scope="module")
def llama_pair(toy, tmp_path_factory):
    """A second LlamaForCausalLM with the same tokenizer, and their merge saved as a LlamaForCausalLM."""
    root = tmp_path_factory.mktemp("llama_pair")
    other = build_toy_checkpoints(root / "other", seed=7, tokenizer=AutoTokenizer.from_pretrained(toy.lang)).lang
    merge(toy.lang, other, alpha=0.3, out=root / "merged", progress=False)
    assert json.loads((root / "merged" / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    return toy.lang, other, root / "merged"


def test_merge_at_load_equals_lm_evals_hf_model_on_the_saved_merge(llama_pair):
    from lm_eval.models.huggingface import HFLM

    a, b, merged = llama_pair
    sentences = blimp_sentences()
    ours = BabyMergeLM(pretrained=str(a), lang_ckpt=str(b), alpha=0.3, image_prefix="none", device="cpu").loglikelihood(
        requests(sentences)
    )
    ref = HFLM(pretrained=str(merged), dtype="float32", device="cpu", batch_size=4).loglikelihood(requests(sentences))
    assert len(ours) == len(ref) == len(sentences)
    assert max(abs(x[0] - y[0]) for x, y in zip(ours, ref)) < 1e-4
    assert [x[1] for x in ours] == [y[1] for y in ref]
    good_wins = lambda scores: [scores[i][0] > scores[i + 1][0] for i in range(0, len(scores), 2)]  # noqa: E731
    assert good_wins(ours) == good_wins(ref)


def test_black_image_prefix_conditions_the_first_scored_token(toy):
    lm = BabyMergeLM(pretrained=str(toy.mm), lang_ckpt=str(toy.lang), alpha=0.3, device="cpu")
    assert lm.image_prefix == "black" and lm.prefix_token_id == lm.image_token_id
    sentences = blimp_sentences(n=3)
    scores = lm.loglikelihood(requests(sentences))
    model = merge(toy.mm, toy.lang, alpha=0.3, progress=False).model
    tok = AutoTokenizer.from_pretrained(toy.mm)
    for sentence, (score, _) in zip(sentences, scores):
        ids = torch.tensor([[model.config.image_token_id] + tok.encode(" " + sentence)])
        with torch.no_grad():  # the <image> token gets the black-image feature inside forward()
            logprobs = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
        expected = float(logprobs.gather(1, ids[0, 1:, None]).sum())
        assert abs(score - expected) < 1e-4


def test_images_are_encoded_once_and_fill_the_image_token(toy):
    lm = BabyMergeLM(pretrained=str(toy.mm), device="cpu")
    red, blue = Image.new("RGB", (30, 30), (255, 0, 0)), Image.new("RGB", (30, 30), (0, 0, 255))
    captions = ["A red square.", "A blue square."]
    reqs = [
        Instance("loglikelihood", {}, ("", " " + c, {"visual": [img]}), i)
        for i, (c, img) in enumerate((c, i) for c in captions for i in (red, blue))
    ]
    scores = lm.loglikelihood(reqs)
    assert lm.images_encoded == 2
    model, tok = AutoModelForCausalLM.from_pretrained(toy.mm), AutoTokenizer.from_pretrained(toy.mm)
    for req, (score, _) in zip(reqs, scores):
        ids = torch.tensor([[model.config.image_token_id] + tok.encode(req.args[1])])
        with torch.no_grad():
            features = model.encode_images(images=req.args[2]["visual"])
            logprobs = model(input_ids=ids, image_features=features).logits[0, :-1].log_softmax(-1)
        assert abs(score - float(logprobs.gather(1, ids[0, 1:, None]).sum())) < 1e-4
    assert scores[0][0] != scores[1][0], "the image must matter"


def test_rolling_loglikelihood_and_generation(toy):
    lm = BabyMergeLM(pretrained=str(toy.mm), device="cpu")
    text = "The dog sees a cat near the house."
    (rolling,) = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])
    (score, _) = lm.loglikelihood([Instance("loglikelihood", {}, ("", text), 0)])[0]
    assert abs(rolling - score) < 1e-4  # one window: the same as scoring after the black image
    (generated,) = lm.generate_until(
        [Instance("generate_until", {}, ("The dog", {"until": ["."], "max_gen_toks": 5}), 0)]
    )
    model, tok = AutoModelForCausalLM.from_pretrained(toy.mm), AutoTokenizer.from_pretrained(toy.mm)
    ids = tok.encode("<image> The dog")  # the authors' prompt, "<image> " + text
    assert ids[0] == model.config.image_token_id
    prompt_length = len(ids)
    with torch.no_grad():
        for _ in range(5):
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    assert generated == tok.decode(ids[prompt_length:]).split(".")[0]


def test_plain_causal_lm_is_text_only(toy):
    lm = BabyMergeLM(pretrained=str(toy.lang), device="cpu")
    assert lm.image_prefix == "none" and lm.prefix_token_id == AutoTokenizer.from_pretrained(toy.lang).bos_token_id
    with pytest.raises(BabyMergeError, match="image_prefix=black needs a BabyLLaVA checkpoint"):
        BabyMergeLM(pretrained=str(toy.lang), image_prefix="black", device="cpu")


def test_bad_model_args(toy, tmp_path):
    with pytest.raises(
        BabyMergeError, match=r"unknown model_args \['alhpa'\] for --model babymerge; valid: .*alpha.*lang_ckpt"
    ):
        BabyMergeLM(pretrained=str(toy.mm), alhpa=0.3)
    with pytest.raises(BabyMergeError, match=r"alpha must be in \[0, 1\]"):
        BabyMergeLM(pretrained=str(toy.mm), lang_ckpt=str(toy.lang), alpha=1.5)
    with pytest.raises(BabyMergeError, match="alpha=0.3 needs lang_ckpt"):
        BabyMergeLM(pretrained=str(toy.mm), alpha=0.3)
    with pytest.raises(BabyMergeError, match="image_prefix must be one of"):
        BabyMergeLM(pretrained=str(toy.mm), image_prefix="white")
    other = build_toy_checkpoints(tmp_path / "other", vocab_size=280, seed=9)
    with pytest.raises(BabyMergeError, match="tokenizers of .* differ"):
        BabyMergeLM(pretrained=str(toy.mm), lang_ckpt=str(other.lang), alpha=0.3)


def test_a_truncated_checkpoint_without_lang_ckpt_is_named_in_one_line(toy, tmp_path):
    """A truncated weights file: one BabyMergeError naming the file, not safetensors' own error."""
    copy = tmp_path / "mm"
    shutil.copytree(toy.mm, copy)
    weights = copy / "model.safetensors"
    os.truncate(weights, weights.stat().st_size - 100)
    with pytest.raises(BabyMergeError) as err:
        BabyMergeLM(pretrained=str(copy), device="cpu")
    assert re.fullmatch(
        rf"pretrained checkpoint file {re.escape(str(weights))} is truncated or corrupt \([^\n]*\); re-save or re-download it",
        str(err.value),
    )
