"""merge(): exact arithmetic against independent references, on disk, in memory and redone in place
for another alpha (the re-merger), for Llava, Llama and tied-embedding (GPT-2, Llama) pairs."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from babymerge import merge
from babymerge.checkpoint import Checkpoint
from babymerge.merge import METHODS
from demo.toy import toy_text_config

from helpers.models import as_llama_name, interpolated, weights


@pytest.mark.parametrize("alpha", [0.3, 0.7])
def test_linear_equals_manual_interpolation(toy, tmp_path, alpha):
    report = merge(toy.mm, toy.lang, alpha=alpha, out=tmp_path / "m", progress=False)
    mm, lang, out = weights(toy.mm), weights(toy.lang), weights(tmp_path / "m")
    assert set(out) == set(mm)
    merged = 0
    for key, value in out.items():
        lang_key = as_llama_name(key)
        if lang_key in lang:
            assert torch.equal(value, interpolated(mm[key], lang[lang_key], alpha)), key
            merged += value.numel()
        else:  # projector and black image: only the multimodal model has them
            assert torch.equal(value, mm[key]), key
    assert merged == report.params_merged == sum(v.numel() for v in lang.values())
    assert report.params_kept == sum(v.numel() for v in mm.values()) - merged


def test_alpha_zero_is_the_multimodal_model_bit_for_bit(toy, tmp_path):
    merge(toy.mm, toy.lang, alpha=0, out=tmp_path / "m", progress=False)
    mm, out = weights(toy.mm), weights(tmp_path / "m")
    assert all(torch.equal(out[k], mm[k]) for k in mm)
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == (toy.mm / "model.safetensors").read_bytes()


def test_alpha_one_takes_the_language_model_from_the_twin(toy, tmp_path):
    merge(toy.mm, toy.lang, alpha=1, out=tmp_path / "m", progress=False)
    mm, lang, out = weights(toy.mm), weights(toy.lang), weights(tmp_path / "m")
    for key, value in out.items():
        expected = lang.get(as_llama_name(key), mm[key])
        assert torch.equal(value, expected), key


def test_a_weight_both_models_share_comes_out_unchanged_at_every_alpha(toy, tmp_path):
    """mm + alpha * (lang - mm) is mm wherever lang == mm (a weight frozen or not yet trained in
    both); the two products and a sum, 0.3 * w + 0.7 * w, change 6% of random float32 weights
    in the last bit (0.3 + 0.7 != 1 in float32)."""
    mm, lang = weights(toy.mm), weights(toy.lang)
    key = "model.language_model.layers.0.mlp.up_proj.weight"
    shared = mm[key]
    assert not torch.equal(0.3 * mm[key] + 0.7 * mm[key], mm[key])  # what the two-product form would do
    twin = tmp_path / "twin"
    twin.mkdir()
    for f in toy.lang.iterdir():
        if f.name != "model.safetensors":
            (twin / f.name).write_bytes(f.read_bytes())
    save_file({**lang, as_llama_name(key): shared.clone()}, twin / "model.safetensors", metadata={"format": "pt"})
    for alpha in (0.1, 0.3, 0.5, 0.7, 0.9):
        merged = merge(toy.mm, twin, alpha=alpha, out=tmp_path / f"m{alpha}", progress=False)
        assert torch.equal(weights(merged.out)[key], shared), alpha


def test_same_class_twin_merges_every_shared_tensor_but_the_black_image(toy_same_class, tmp_path):
    t = toy_same_class
    merge(t.mm, t.lang, alpha=0.3, out=tmp_path / "m", progress=False)
    mm, lang, out = weights(t.mm), weights(t.lang), weights(tmp_path / "m")
    assert set(mm) == set(lang)
    for key in out:
        if key == "model.black_image_features":
            assert torch.equal(out[key], mm[key])
        else:
            assert torch.equal(out[key], interpolated(mm[key], lang[key], 0.3)), key


def test_in_memory_merge_equals_the_checkpoint_on_disk(toy, tmp_path):
    on_disk = merge(toy.mm, toy.lang, alpha=0.3, out=tmp_path / "m", progress=False)
    in_memory = merge(toy.mm, toy.lang, alpha=0.3, progress=False)
    assert on_disk.model is None and in_memory.out is None
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    state = in_memory.model.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(state[key], value), key
    ids = torch.tensor([[4, 30, 31, 32, 33]])
    with torch.no_grad():
        assert torch.equal(in_memory.model(input_ids=ids).logits, loaded(input_ids=ids).logits)


def test_output_directory_is_a_complete_hugging_face_checkpoint(toy, tmp_path):
    merge(toy.mm, toy.lang, alpha=0.3, out=tmp_path / "m", progress=False)
    files = {p.name for p in (tmp_path / "m").iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    } <= files
    assert json.loads((tmp_path / "m" / "config.json").read_text()) == json.loads((toy.mm / "config.json").read_text())
    recipe = json.loads((tmp_path / "m" / "babymerge_recipe.json").read_text())
    assert recipe["method"] == "linear" and recipe["alpha"] == 0.3
    assert [p.name for p in tmp_path.iterdir()] == ["m"], "no temporary directory may be left behind"


def test_sharded_output_and_dtype(toy, tmp_path):
    merge(toy.mm, toy.lang, alpha=0.3, out=tmp_path / "single", progress=False)
    merge(toy.mm, toy.lang, alpha=0.3, out=tmp_path / "sharded", max_shard_size=100_000, progress=False)
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 2 and all((tmp_path / "sharded" / s).is_file() for s in shards)
    single, sharded = weights(tmp_path / "single"), weights(tmp_path / "sharded")
    assert single.keys() == sharded.keys() and all(torch.equal(single[k], sharded[k]) for k in single)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "sharded")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in single.items())

    merge(toy.mm, toy.lang, alpha=0.3, out=tmp_path / "bf16", dtype="bfloat16", progress=False)
    bf16 = weights(tmp_path / "bf16")
    assert all(v.dtype == torch.bfloat16 for v in bf16.values())
    assert all(torch.equal(bf16[k], single[k].to(torch.bfloat16)) for k in single)
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"


def test_bfloat16_inputs_are_merged_in_float32_and_rounded_once(tmp_path):
    from demo.toy import build_toy_checkpoints

    t = build_toy_checkpoints(tmp_path / "toy", dtype=torch.bfloat16)
    merge(t.mm, t.lang, alpha=0.3, out=tmp_path / "m", progress=False)
    mm, lang, out = weights(t.mm), weights(t.lang), weights(tmp_path / "m")
    key = "model.language_model.layers.1.mlp.up_proj.weight"
    expected = interpolated(mm[key], lang[as_llama_name(key)], 0.3).to(torch.bfloat16)
    assert out[key].dtype == torch.bfloat16 and torch.equal(out[key], expected)


def test_old_llava_key_layout_is_mapped_too(toy, tmp_path):
    """transformers < 4.52 saved Llava as language_model.model.* / language_model.lm_head.*."""
    old = tmp_path / "old"
    old.mkdir()
    for f in toy.mm.iterdir():
        if f.name != "model.safetensors":
            (old / f.name).write_bytes(f.read_bytes())
    renamed = {}
    for key, value in weights(toy.mm).items():
        if key.startswith("model.language_model."):
            key = "language_model.model." + key[len("model.language_model.") :]
        elif key == "lm_head.weight":
            key = "language_model.lm_head.weight"
        renamed[key] = value
    save_file(renamed, old / "model.safetensors", metadata={"format": "pt"})
    merge(old, toy.lang, alpha=0.3, out=tmp_path / "from_old", progress=False)
    merge(toy.mm, toy.lang, alpha=0.3, out=tmp_path / "from_new", progress=False)
    a, b = weights(tmp_path / "from_old"), weights(tmp_path / "from_new")
    assert torch.equal(a["language_model.lm_head.weight"], b["lm_head.weight"])
    assert torch.equal(
        a["language_model.model.layers.0.mlp.up_proj.weight"], b["model.language_model.layers.0.mlp.up_proj.weight"]
    )


def test_per_module_alpha_and_layer_gradient(toy, tmp_path):
    mm, lang = weights(toy.mm), weights(toy.lang)
    merge(toy.mm, toy.lang, alpha={"model.embed_tokens.*": 0.5, "*": 0.1}, out=tmp_path / "modules", progress=False)
    out = weights(tmp_path / "modules")
    emb, up = "model.language_model.embed_tokens.weight", "model.language_model.layers.0.mlp.up_proj.weight"
    assert torch.equal(out[emb], interpolated(mm[emb], lang["model.embed_tokens.weight"], 0.5))
    assert torch.equal(out[up], interpolated(mm[up], lang[as_llama_name(up)], 0.1))

    merge(toy.mm, toy.lang, alpha=[0.0, 1.0], out=tmp_path / "gradient", progress=False)  # 2 layers: 0 then 1
    out = weights(tmp_path / "gradient")
    for key in out:
        if ".layers.0." in key or key == emb:
            assert torch.equal(out[key], mm[key]), key
        elif ".layers.1." in key or key in ("lm_head.weight", "model.language_model.norm.weight"):
            assert torch.equal(out[key], lang[as_llama_name(key)]), key


def _tensors(toy, key):
    return [weights(c)[k].float() for c, k in ((toy.mm, key), (toy.lang, as_llama_name(key)), (toy.base, key))]


KEY = "model.language_model.layers.1.self_attn.q_proj.weight"


def test_task_arithmetic_with_base(toy, tmp_path):
    merge(toy.mm, toy.lang, "task_arithmetic", 0.3, base_ckpt=toy.base, scale=1.5, out=tmp_path / "m", progress=False)
    mm, lang, base = _tensors(toy, KEY)
    expected = base + 1.5 * (0.7 * (mm - base) + 0.3 * (lang - base))
    torch.testing.assert_close(weights(tmp_path / "m")[KEY], expected, rtol=1e-6, atol=1e-7)


def test_ties_by_hand_on_a_small_example():
    """Trim to the top half by magnitude, elect the sign of the total, combine the agreeing entries:
    mergekit's ties divides their weighted sum by the sum of their weights, peft's by their count."""
    base = torch.zeros(4)
    mm = torch.tensor([1.0, -2.0, 0.1, 4.0])
    lang = torch.tensor([3.0, 0.5, -0.2, -1.0])
    # trimmed: mm -> [0, -2, 0, 4], lang -> [3, 0, 0, -1]; weighted by 0.5: [0,-1,0,2], [1.5,0,0,-0.5]
    # elected signs (sum of weighted): [+, -, + (a zero sum counts as +), +]; agreeing: lang, mm, none, mm
    # mergekit: weighted sum / agreeing weights = [1.5/0.5, -1/0.5, 0 (no agreeing entry), 2/0.5]
    out = METHODS["ties"].fn(mm, lang, base, 0.5, "k", density=0.5)
    assert torch.equal(out, torch.tensor([3.0, -2.0, 0.0, 4.0]))
    # normalize=False: the weighted sum itself
    out = METHODS["ties"].fn(mm, lang, base, 0.5, "k", density=0.5, normalize=False)
    assert torch.equal(out, torch.tensor([1.5, -1.0, 0.0, 2.0]))
    # peft: weighted sum / number of agreeing entries = [1.5/1, -1/1, 0, 2/1]
    out = METHODS["ties_peft"].fn(mm, lang, base, 0.5, "k", density=0.5)
    assert torch.allclose(out, torch.tensor([1.5, -1.0, 0.0, 2.0]))
    out = METHODS["ties_peft"].fn(mm, lang, base, 0.25, "k", density=0.5)  # unequal weights: the two differ
    assert torch.allclose(out, torch.tensor([0.75, -1.5, 0.0, 3.0]))
    out = METHODS["ties"].fn(mm, lang, base, 0.25, "k", density=0.5)
    assert torch.allclose(out, torch.tensor([3.0, -2.0, 0.0, 4.0]))


def test_dare_is_reproducible_and_seeded(toy, tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        merge(toy.mm, toy.lang, "dare_linear", 0.5, density=0.5, seed=seed, out=tmp_path / name, progress=False)
    a, b, c = (weights(tmp_path / n)[KEY] for n in "abc")
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_slerp():
    slerp = METHODS["slerp"].fn
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    torch.testing.assert_close(slerp(a, b, None, 0.5, "k"), torch.tensor([math.sqrt(0.5), math.sqrt(0.5)]))
    torch.testing.assert_close(
        slerp(a, b, None, 1 / 3, "k"), torch.tensor([math.cos(math.pi / 6), math.sin(math.pi / 6)])
    )
    assert slerp(a, b, None, 0, "k") is a and slerp(a, b, None, 1, "k") is b
    near = torch.tensor([1.0, 1e-6])
    torch.testing.assert_close(slerp(a, near, None, 0.5, "k"), 0.5 * a + 0.5 * near)  # parallel: linear fallback


def test_every_method_runs_end_to_end_and_loads(toy, tmp_path):
    for name in METHODS:
        out = tmp_path / name
        merge(
            toy.mm,
            toy.lang,
            name,
            0.3,
            base_ckpt=toy.base if METHODS[name].uses_base else None,
            out=out,
            progress=False,
        )
        model = AutoModelForCausalLM.from_pretrained(out)
        with torch.no_grad():
            assert torch.isfinite(model(input_ids=torch.tensor([[4, 5, 6]])).logits).all()


def tied_pair(root, kind, tokenizer):
    """Two random models with tied input/output embeddings, saved with one tokenizer."""
    paths = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        if kind == "gpt2":
            model = GPT2LMHeadModel(
                GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=64)
            )
        else:
            config = {k: v for k, v in toy_text_config(len(tokenizer), hidden_size=32).items() if k != "model_type"}
            model = LlamaForCausalLM(LlamaConfig(**config, tie_word_embeddings=True))
        model.save_pretrained(root / f"{kind}{seed}")
        tokenizer.save_pretrained(root / f"{kind}{seed}")
        paths.append(root / f"{kind}{seed}")
    return paths


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_tied_embedding_pairs_merge_in_memory_and_to_disk(toy, tmp_path, kind):
    """Pairs with tied input/output embeddings (GPT-2, Llama) merge in memory, to disk and through the
    re-merger, equal to a hand computation, the output embeddings still tied."""
    a, b = tied_pair(tmp_path, kind, AutoTokenizer.from_pretrained(toy.mm))
    sa, sb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert "lm_head.weight" not in sa  # saved tied
    model = merge(a, b, alpha=0.3, progress=False).model
    state = model.state_dict()
    for name in sa:  # against a hand computation
        torch.testing.assert_close(state[name], 0.7 * sa[name] + 0.3 * sb[name], rtol=0, atol=1e-6)
    embed = model.get_input_embeddings().weight
    assert model.get_output_embeddings().weight.data_ptr() == embed.data_ptr()
    out = merge(a, b, alpha=0.3, out=tmp_path / "merged", progress=False).out
    loaded = type(model).from_pretrained(out)
    ids = torch.tensor([[3, 5, 7, 11]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=1e-5)
    remerge = merge(a, b, alpha=0.3, keep_sources=True, progress=False).remerge  # sweeps use it too
    remerge.set_alpha(0.6)
    torch.testing.assert_close(remerge.model.get_output_embeddings().weight, 0.4 * sa[next(k for k in sa if "wte" in k or "embed" in k)]
                               + 0.6 * sb[next(k for k in sb if "wte" in k or "embed" in k)], rtol=0, atol=1e-6)  # fmt: skip


# -- the re-merger (sweeps): another alpha in place ---------------------------------------------


def test_remerge_for_another_alpha_equals_a_fresh_merge_for_random_mask_methods(toy):
    """Sweeps redo the merge in place: without a base checkpoint the kept multimodal tensor must
    still *be* the base (mergekit then has one task vector, and one random draw per tensor)."""
    report = merge(toy.mm, toy.lang, "dare_ties", 0.3, density=0.5, keep_sources=True, progress=False)
    report.remerge.set_alpha(0.6)
    fresh = merge(toy.mm, toy.lang, "dare_ties", 0.6, density=0.5, progress=False).model.state_dict()
    assert all(torch.equal(v, fresh[k]) for k, v in report.model.state_dict().items())


def test_remerge_of_bfloat16_checkpoints_equals_a_fresh_merge(tmp_path):
    """A fresh merge interpolates the mapped bfloat16 rows directly; a sweep's remerge, the
    float32 copies it kept: both must round to the same bfloat16 weights."""
    from demo.toy import build_toy_checkpoints

    t = build_toy_checkpoints(tmp_path / "toy", dtype=torch.bfloat16)
    report = merge(t.mm, t.lang, alpha=0.3, keep_sources=True, progress=False)
    for alpha in (0.6, 0.1):
        report.remerge.set_alpha(alpha)
        fresh = merge(t.mm, t.lang, alpha=alpha, progress=False).model.state_dict()
        assert all(torch.equal(v, fresh[k]) for k, v in report.model.state_dict().items()), alpha


def test_remerger_keeps_no_copy_of_the_sources_and_equals_a_fresh_merge(toy):
    """The re-merger holds no tensor copies of the sources (it reads the checkpoints again for each
    alpha), and each alpha equals a fresh merge."""
    remerge = merge(toy.mm, toy.lang, alpha=0.3, keep_sources=True, progress=False).remerge
    with_base = merge(
        toy.mm, toy.lang, "task_arithmetic", 0.3, base_ckpt=toy.base, keep_sources=True, progress=False
    ).remerge
    for r in (remerge, with_base):
        assert not any(isinstance(v, torch.Tensor) for v in vars(r).values())
        assert all(isinstance(c, (Checkpoint, type(None))) for c in r.sources)
    for r, kwargs in ((remerge, {}), (with_base, {"method": "task_arithmetic", "base_ckpt": toy.base})):
        fresh = merge(toy.mm, toy.lang, alpha=0.5, progress=False, **kwargs).model.state_dict()
        r.set_alpha(0.5)
        assert all(torch.equal(fresh[k], v) for k, v in r.model.state_dict().items())
