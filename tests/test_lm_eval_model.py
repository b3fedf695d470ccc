"""`--model babymerge` (``babymerge.lm_eval_model``): exact agreement with lm-eval's own `hf` model
and with hand-built forwards; model_args checked before anything is merged or loaded, each
mistake one ``BabyMergeError`` (the last line of the lm_eval command too); lm-eval's
``--use_cache`` keeps what an interrupted run scored."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lm_eval.api.instance import Instance
from PIL import Image
from transformers import AutoModelForCausalLM, AutoTokenizer

from babymerge import BabyMergeError, merge
from babymerge.lm_eval_model import BabyMergeLM
from demo.toy import build_toy_checkpoints

from conftest import blimp_sentences, requests
from helpers.commands import lm_eval_command


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


# -- model_args and checkpoints checked before the merge, one error each --------------------------


def test_one_dtype_parser(toy):
    """dtype=bf16 is understood with and without lang_ckpt; an unknown dtype is one error."""
    from babymerge.lm_eval_model import BabyMergeLM

    lm = BabyMergeLM(pretrained=str(toy.lang), dtype="bf16", image_prefix="none", device="cpu")
    assert lm.model.dtype == torch.bfloat16
    merged = BabyMergeLM(pretrained=str(toy.mm), lang_ckpt=str(toy.lang), dtype="bf16", device="cpu")
    assert merged.model.dtype == torch.bfloat16
    with pytest.raises(BabyMergeError, match="unknown dtype 'int8'"):
        BabyMergeLM(pretrained=str(toy.lang), dtype="int8", image_prefix="none", device="cpu")


def test_lm_eval_checkpoint_paths_that_do_not_exist(toy, tmp_path):
    """A checkpoint path that does not exist: one BabyMergeError naming it, not a hub client error."""
    from babymerge.lm_eval_model import BabyMergeLM

    missing = tmp_path / "runs" / "mm" / "ckpt-ep10"
    with pytest.raises(BabyMergeError, match=rf"^pretrained='{missing}' does not exist; give the checkpoint directory"):
        BabyMergeLM(pretrained=str(missing), device="cpu")
    with pytest.raises(BabyMergeError, match=r"^lang_ckpt='.*nope' does not exist"):
        BabyMergeLM(pretrained=str(toy.mm), lang_ckpt=str(tmp_path / "nope"), device="cpu")


def test_lm_eval_cli_ends_with_our_message(tmp_path):
    """The traceback above is lm-eval's; the last line must be ours and say it all."""
    missing = tmp_path / "runs" / "mm"
    cmd = lm_eval_command(f"pretrained={missing}", "blimp_anaphor_gender_agreement", log_samples=False,
                          launcher=("lm_eval",))  # the installed script  # fmt: skip
    result = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        f"babymerge.errors.BabyMergeError: pretrained='{missing}' does not exist; give the checkpoint directory (written by save_pretrained)"
    )


def test_lm_eval_batch_size_model_arg_wins_over_the_cli_default(toy):
    """batch_size in --model_args wins over the one the lm_eval CLI always passes."""
    from babymerge.lm_eval_model import BabyMergeLM

    cli_config = {"batch_size": 1, "max_batch_size": None, "device": "cpu"}
    lm = BabyMergeLM.create_from_arg_string(f"pretrained={toy.lang},image_prefix=none,batch_size=4", cli_config)
    assert lm.batch_size == 4 and lm.device.type == "cpu"
    assert BabyMergeLM.create_from_arg_string(f"pretrained={toy.lang},image_prefix=none", cli_config).batch_size == 1
    lm = BabyMergeLM.create_from_arg_obj(
        {"pretrained": str(toy.lang), "image_prefix": "none", "batch_size": "auto"}, cli_config
    )
    assert lm.batch_size == "auto"


@pytest.mark.parametrize(
    "extra, match",
    [
        ({"image_prefix": "white"}, "image_prefix must be one of"),
        ({"dtype": "int8"}, "unknown dtype 'int8'"),
        ({"batch_size": "many"}, "batch_size must be an integer or 'auto'"),
    ],
)
def test_lm_eval_arguments_are_checked_before_the_merge(toy, monkeypatch, extra, match):
    import babymerge.lm_eval_model as adapter

    def no_merge(*args, **kwargs):
        raise AssertionError("merged before checking the arguments")

    monkeypatch.setattr(adapter, "merge", no_merge)
    with pytest.raises(BabyMergeError, match=match):
        adapter.BabyMergeLM(pretrained=str(toy.mm), lang_ckpt=str(toy.lang), device="cpu", **extra)


def test_lm_eval_image_prefix_black_on_a_text_model_is_refused_before_the_merge(toy, monkeypatch):
    import babymerge.lm_eval_model as adapter

    monkeypatch.setattr(adapter, "merge", lambda *a, **k: (_ for _ in ()).throw(AssertionError("merged first")))
    with pytest.raises(BabyMergeError, match="image_prefix=black needs a BabyLLaVA checkpoint"):
        adapter.BabyMergeLM(pretrained=str(toy.lang), lang_ckpt=str(toy.lang), image_prefix="black", device="cpu")


# -- lm-eval's cache --------------------------------------------------------------------------------


def test_use_cache_keeps_what_an_interrupted_run_scored(toy, tmp_path):
    """lm-eval's --use_cache (CachingLM) stores results only when a whole loglikelihood call
    returns; lm-eval's `hf` model also adds each result as it is computed (cache_hook.add_partial),
    so a crashed or killed run keeps its progress: the adapter does too, so the interrupted run
    below leaves what it scored in the cache."""
    from lm_eval.api.model import CachingLM

    from babymerge.lm_eval_model import BabyMergeLM

    from conftest import requests

    sentences = [f"The {w} sees a cat." for w in ("dog", "girl", "boy", "teacher", "bird", "tree")]
    args = dict(pretrained=str(toy.lang), image_prefix="none", device="cpu", batch_size=1, prefix_sharing=False)
    expected = BabyMergeLM(**args).loglikelihood(requests(sentences))

    lm = BabyMergeLM(**args)
    forward, calls = lm._hidden_states, []

    def crash_on_third_batch(rows):
        calls.append(len(rows))
        if len(calls) == 3:
            raise RuntimeError("killed")
        return forward(rows)

    lm._hidden_states = crash_on_third_batch
    db = str(tmp_path / "cache.db")
    with pytest.raises(RuntimeError, match="killed"):
        CachingLM(lm, db).loglikelihood(requests(sentences))

    lm2 = BabyMergeLM(**args)
    scored = []
    original = lm2._loglikelihood_tokens
    lm2._loglikelihood_tokens = lambda reqs, **kw: (scored.append(len(reqs)), original(reqs, **kw))[1]
    assert CachingLM(lm2, db).loglikelihood(requests(sentences)) == expected
    assert scored == [len(sentences) - 2]  # the two requests scored before the crash came from the cache
    scored.clear()
    assert CachingLM(lm2, db).loglikelihood(requests(sentences)) == expected and scored == []  # all cached now
