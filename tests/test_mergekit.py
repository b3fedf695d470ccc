"""Every method babymerge shares with mergekit gives mergekit's tensors (mergekit 0.1.5, a test dependency).

Small random ``LlamaForCausalLM`` triples (a base and two models = base + noise) are merged by
mergekit itself (``run_merge``, what ``mergekit-yaml`` runs, or the ``mergekit-yaml`` command)
and by babymerge, with the recipe written by hand in each test; the outputs are compared
tensor for tensor. Random-mask methods (DARE, DELLA) are compared through mergekit's Python
API with the same torch generator state for each tensor.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

from babymerge import BabyMergeError, merge
from babymerge.merge.generalized_task_arithmetic import tensor_seed
from babymerge.merge.mergekit import read_mergekit_config, write_mergekit_yaml

pytest.importorskip("mergekit")
from mergekit.config import MergeConfiguration  # noqa: E402
from mergekit.merge import run_merge  # noqa: E402
from mergekit.merge_methods.api import merge_tensors  # noqa: E402
from mergekit.options import MergeOptions  # noqa: E402

ALPHA = 0.3
LAYERS = 3


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def triple(tmp_path_factory):
    """base, mm = base + 0.02 noise, lang = base + 0.02 noise: float32 Llama checkpoints."""
    root = tmp_path_factory.mktemp("llama_triple")
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=LAYERS,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64)  # fmt: skip
    torch.manual_seed(0)
    base = LlamaForCausalLM(config)
    base.save_pretrained(root / "base")
    for name in ("mm", "lang"):
        model = LlamaForCausalLM(config)
        with torch.no_grad():
            for p, q in zip(model.parameters(), base.parameters()):
                p.copy_(q + 0.02 * torch.randn_like(q))
        model.save_pretrained(root / name)
    return {name: (root / name).resolve() for name in ("base", "mm", "lang")}


def tensors(path: Path) -> dict[str, torch.Tensor]:
    out = {}
    for file in sorted(path.glob("*.safetensors")):
        out.update(load_file(file))
    return out


def mergekit(config: dict, out: Path) -> dict[str, torch.Tensor]:
    run_merge(MergeConfiguration.model_validate(config), str(out), options=MergeOptions())
    return tensors(out)


def assert_same_tensors(ours: dict, theirs: dict, exact: bool = True):
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        if exact:
            assert torch.equal(ours[key], theirs[key]), (key, float((ours[key] - theirs[key]).abs().max()))
        else:  # the same formula, operations in another order (mergekit batches linear and slerp): float32 rounding
            torch.testing.assert_close(ours[key], theirs[key], rtol=1e-6, atol=1e-8, msg=key)


def models(t, w_mm, w_lang, **per_model):
    """mergekit's `models:` list for (mm, lang) with weights and per-model parameters."""
    entries = [
        {"model": str(t["mm"]), "parameters": {"weight": w_mm}},
        {"model": str(t["lang"]), "parameters": {"weight": w_lang}},
    ]
    for name, (a, b) in per_model.items():
        entries[0]["parameters"][name], entries[1]["parameters"][name] = a, b
    return entries


# (mergekit recipe, babymerge merge() arguments), both written by hand
def cases(t):
    a, w = ALPHA, (1 - ALPHA, ALPHA)
    return {
        "linear": ({"merge_method": "linear", "models": models(t, *w), "parameters": {"normalize": False}},
                   dict(method="linear")),
        "linear_normalized": ({"merge_method": "linear", "models": models(t, 1.4, 0.6)}, dict(method="linear")),
        "slerp": ({"merge_method": "slerp", "base_model": str(t["mm"]), "models": [{"model": str(t["mm"])}, {"model": str(t["lang"])}],
                   "parameters": {"t": a}}, dict(method="slerp")),
        "nuslerp": ({"merge_method": "nuslerp", "models": models(t, *w)}, dict(method="nuslerp")),
        "nuslerp_base": ({"merge_method": "nuslerp", "base_model": str(t["base"]), "models": models(t, *w)},
                         dict(method="nuslerp", base_ckpt=t["base"])),
        "task_arithmetic": ({"merge_method": "task_arithmetic", "base_model": str(t["base"]), "models": models(t, *w),
                             "parameters": {"lambda": 1.5}}, dict(method="task_arithmetic", base_ckpt=t["base"], scale=1.5)),
        "ties": ({"merge_method": "ties", "base_model": str(t["base"]), "models": models(t, *w, density=(0.5, 0.5))},
                 dict(method="ties", base_ckpt=t["base"], density=0.5)),
        "ties_unnormalized_per_model_density": (
            {"merge_method": "ties", "base_model": str(t["base"]), "models": models(t, *w, density=(0.3, 0.6)),
             "parameters": {"normalize": False, "lambda": 0.8}},
            dict(method="ties", base_ckpt=t["base"], density=(0.3, 0.6), normalize=False, scale=0.8)),
        "ties_base_is_mm": ({"merge_method": "ties", "base_model": str(t["mm"]), "models": models(t, *w, density=(0.5, 0.5))},
                            dict(method="ties", density=0.5)),
        "breadcrumbs": ({"merge_method": "breadcrumbs", "base_model": str(t["base"]),
                         "models": models(t, *w, density=(0.8, 0.8), gamma=(0.05, 0.05))},
                        dict(method="breadcrumbs", base_ckpt=t["base"], density=0.8, gamma=0.05)),
        "breadcrumbs_ties": ({"merge_method": "breadcrumbs_ties", "base_model": str(t["base"]),
                              "models": models(t, *w, density=(0.8, 0.7), gamma=(0.05, 0.02))},
                             dict(method="breadcrumbs_ties", base_ckpt=t["base"], density=(0.8, 0.7), gamma=(0.05, 0.02))),
        "model_stock": ({"merge_method": "model_stock", "base_model": str(t["base"]),
                         "models": [{"model": str(t["mm"])}, {"model": str(t["lang"])}]},
                        dict(method="model_stock", base_ckpt=t["base"])),
        "sce": ({"merge_method": "sce", "base_model": str(t["base"]), "models": [{"model": str(t["mm"])}, {"model": str(t["lang"])}],
                 "parameters": {"select_topk": 0.5}}, dict(method="sce", base_ckpt=t["base"], select_topk=0.5)),
        "linear_gradient_and_filter": (
            # mergekit: a gradient over the layers, t = 0 (its first value) outside them, lm_head included;
            # the `mlp` filter (a substring of the tensor name) wins first
            {"merge_method": "linear", "parameters": {"normalize": False},
             "models": [{"model": str(t["mm"]), "parameters": {"weight": [{"filter": "mlp", "value": 0.5}, {"value": [1.0, 0.2]}]}},
                        {"model": str(t["lang"]), "parameters": {"weight": [{"filter": "mlp", "value": 0.5}, {"value": [0.0, 0.8]}]}}]},
            dict(method="linear", alpha={"model.layers.*.mlp.*": 0.5, "model.layers.*": [0.0, 0.8], "*": 0.0})),
    }  # fmt: skip


EXACT = {"nuslerp", "nuslerp_base", "task_arithmetic", "ties", "ties_unnormalized_per_model_density", "ties_base_is_mm",
         "breadcrumbs", "breadcrumbs_ties", "model_stock", "sce"}  # fmt: skip


@pytest.mark.parametrize("case", sorted(cases({"mm": "", "lang": "", "base": ""})))
def test_babymerge_equals_mergekit_yaml(triple, tmp_path, case):
    recipe, ours = cases(triple)[case]
    recipe["dtype"] = "float32"
    theirs = mergekit(recipe, tmp_path / "mergekit")
    kwargs = dict(ours)
    method, alpha = kwargs.pop("method"), kwargs.pop("alpha", ALPHA)
    merge(triple["mm"], triple["lang"], method, alpha, out=tmp_path / "ours", progress=False, **kwargs)
    assert_same_tensors(tensors(tmp_path / "ours"), theirs, exact=case in EXACT)
    # and the same recipe read by babymerge (`--config`) gives the same tensors
    (tmp_path / "recipe.yml").write_text(yaml.safe_dump(recipe))
    parsed = read_mergekit_config(tmp_path / "recipe.yml")
    merge(**parsed.merge_kwargs(), out=tmp_path / "parsed", progress=False)
    assert_same_tensors(tensors(tmp_path / "parsed"), theirs, exact=case in EXACT)


@pytest.mark.parametrize("method,options", [
    ("dare_linear", {"density": 0.5}),
    ("dare_ties", {"density": (0.4, 0.7)}),
    ("della", {"density": 0.5, "epsilon": 0.1}),
    ("della_linear", {"density": (0.6, 0.4), "epsilon": (0.1, 0.2)}),
])  # fmt: skip
@pytest.mark.parametrize("with_base", [True, False])
def test_random_mask_methods_equal_mergekit_with_the_same_generator(triple, tmp_path, method, options, with_base):
    """mergekit draws its masks from torch's global RNG; seeded as babymerge seeds each tensor,
    mergekit's merge of that tensor equals babymerge's."""
    base_ckpt = triple["base"] if with_base else None
    merge(
        triple["mm"],
        triple["lang"],
        method,
        ALPHA,
        base_ckpt=base_ckpt,
        seed=7,
        out=tmp_path / "ours",
        progress=False,
        **options,
    )
    ours = tensors(tmp_path / "ours")
    mm, lang, base = (tensors(triple[n]) for n in ("mm", "lang", "base"))
    per_model = {k: dict(zip(("mm", "lang"), v)) if isinstance(v, tuple) else v for k, v in options.items()}
    dropped = 0
    for key in ours:
        torch.manual_seed(tensor_seed(7, key))
        if with_base:
            theirs = merge_tensors([mm[key], lang[key], base[key]], method, ids=["mm", "lang", "base"], base_index=2,
                                   parameters={"weight": {"mm": 1 - ALPHA, "lang": ALPHA}, **per_model})  # fmt: skip
        else:  # the multimodal model is the base: mergekit's `base_model: mm`
            theirs = merge_tensors([mm[key], lang[key]], method, ids=["mm", "lang"], base_index=0,
                                   parameters={"weight": {"lang": ALPHA}, **per_model})  # fmt: skip
        assert torch.equal(ours[key], theirs), key
        dropped += int((ours[key] == (base if with_base else mm)[key]).sum())
    assert dropped > 0.1 * sum(t.numel() for t in ours.values())  # the masks really dropped entries


# mergekit's examples/bio-merge.yml (github.com/arcee-ai/mergekit), model names replaced by local paths
BIO_MERGE = """\
models:
  - model: {first}
    parameters:
      density: 0.5
      weight: 0.5
  - model: {second}
    parameters:
      density: 0.5
      weight: 0.5
merge_method: ties
base_model: {base}
parameters:
  normalize: false
  int8_mask: true
dtype: float16
"""


def test_mergekit_example_recipe_through_the_cli_equals_mergekit_yaml(triple, tmp_path):
    recipe = tmp_path / "bio-merge.yml"
    recipe.write_text(BIO_MERGE.format(first=triple["mm"], second=triple["lang"], base=triple["base"]))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    mergekit_yaml = Path(sys.executable).parent / "mergekit-yaml"
    done = subprocess.run(
        [str(mergekit_yaml), str(recipe), str(tmp_path / "mergekit")], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    done = subprocess.run([sys.executable, "-m", "babymerge", "merge", "--config", str(recipe), "--out", str(tmp_path / "ours"),
                           "--no-progress"], capture_output=True, text=True, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    theirs, ours = tensors(tmp_path / "mergekit"), tensors(tmp_path / "ours")
    assert {t.dtype for t in theirs.values()} == {torch.float16}
    assert_same_tensors(ours, theirs)


# mergekit's examples/vlm-ties.yml: two models, the base being one of them; a density gradient
# (per-tensor densities) on the other model, a weight gradient on the base (unused by mergekit)
VLM_TIES = """\
models:
  # - model: impactframes/Qwen2-VL-7B-Captioner
  - model: {first}
    parameters:
      density: [1, 0.7, 0.1] # density gradient
      weight: 1.0
  # - model: Qwen/Qwen2-VL-7B-Instruct
  - model: {second}
    parameters:
      density: 0.5
      weight: [0, 0.3, 0.7, 1] # weight gradient
merge_method: ties
# base_model: Qwen/Qwen2-VL-7B-Instruct
base_model: {second}
parameters:
  normalize: true
  int8_mask: true
dtype: float16
"""


def test_mergekit_example_with_a_density_gradient(triple, tmp_path):
    recipe = tmp_path / "vlm-ties.yml"
    recipe.write_text(VLM_TIES.format(first=triple["lang"], second=triple["mm"]))
    theirs = mergekit(yaml.safe_load(recipe.read_text()), tmp_path / "mergekit")
    parsed = read_mergekit_config(recipe)
    assert (parsed.mm, parsed.lang, parsed.base, parsed.alpha) == (triple["mm"], triple["lang"], None, 1.0)
    assert parsed.options["density"]["model.layers.1.mlp.up_proj.weight"] == 0.7  # the middle layer of 3
    merge(**parsed.merge_kwargs(), out=tmp_path / "ours", progress=False)
    assert_same_tensors(tensors(tmp_path / "ours"), theirs)


def test_export_runs_in_mergekit_and_reads_back(triple, tmp_path):
    """Our --mergekit-yaml export, run by mergekit, gives our merge; read back by --config, too.
    A gradient with a per-module exception: mergekit's t = 0 outside the layers is written as filters."""
    alpha = {"model.layers.*.self_attn.*": 0.6, "*": [0.1, 0.5]}
    for method, kwargs in (
        ("linear", {}),
        ("ties", {"base_ckpt": triple["base"], "density": (0.4, 0.6), "scale": 1.2}),
    ):
        merge(triple["mm"], triple["lang"], method, alpha, out=tmp_path / f"ours-{method}", progress=False, **kwargs)
        path = write_mergekit_yaml(
            tmp_path / f"{method}.yml", triple["mm"], triple["lang"], method, alpha, dtype="float32", **kwargs
        )
        ours = tensors(tmp_path / f"ours-{method}")
        theirs = mergekit(yaml.safe_load(path.read_text()), tmp_path / f"mergekit-{method}")
        assert_same_tensors(ours, theirs, exact=False)
        parsed = read_mergekit_config(path)
        merge(**parsed.merge_kwargs(), out=tmp_path / f"parsed-{method}", progress=False)
        assert_same_tensors(tensors(tmp_path / f"parsed-{method}"), ours, exact=False)


def test_recipes_babymerge_cannot_express_are_refused_with_the_field(triple, tmp_path):
    t = {k: str(v) for k, v in triple.items()}
    two = [{"model": t["mm"], "parameters": {"weight": 0.5}}, {"model": t["lang"], "parameters": {"weight": 0.5}}]
    bad = {
        "slices": ({"merge_method": "linear", "slices": [{"sources": two}]}, "slices"),
        "three models": ({"merge_method": "linear", "models": two + [{"model": t["base"], "parameters": {"weight": 1}}]}, "models"),
        "unknown parameter": ({"merge_method": "ties", "base_model": t["base"], "models": two, "parameters": {"foo": 1}}, "parameters.foo"),
        "hub id": ({"merge_method": "linear", "models": [{"model": "org/not-here"}, two[1]]}, r"models\[0\]\.model"),
        "lora": ({"merge_method": "linear", "models": [{"model": t["mm"] + "+lora"}, two[1]]}, r"models\[0\]\.model"),
        "unnormalized linear": ({"merge_method": "linear", "models": [two[0], {"model": t["lang"], "parameters": {"weight": 0.9}}],
                                 "parameters": {"normalize": False}}, "weight"),
        "per-model lambda": ({"merge_method": "ties", "base_model": t["base"],
                              "models": [{"model": t["mm"], "parameters": {"weight": 0.5, "lambda": 2}}, two[1]]},
                             r"models\[0\]\.parameters\.lambda"),
        "condition": ({"merge_method": "linear", "models": [{"model": t["mm"], "parameters": {"weight": [{"pattern": "mlp", "value": 1}]}},
                                                            two[1]]}, r"models\[0\]\.parameters\.weight"),
        "method": ({"merge_method": "karcher", "models": two}, "karcher"),
        "tokenizer": ({"merge_method": "linear", "models": two, "tokenizer_source": "union"}, "tokenizer_source"),
    }  # fmt: skip
    for config, field in bad.values():
        path = tmp_path / "r.yml"
        path.write_text(yaml.safe_dump(config))
        with pytest.raises(BabyMergeError, match=field):
            read_mergekit_config(path)


def test_lm_eval_model_args_mergekit_config_builds_the_same_model(toy_same_class, tmp_path):
    from babymerge.lm_eval_model import BabyMergeLM

    t = toy_same_class
    path = tmp_path / "recipe.yml"
    path.write_text(yaml.safe_dump({"merge_method": "slerp", "base_model": str(t.mm), "models": [{"model": str(t.mm)}, {"model": str(t.lang)}],
                                    "parameters": {"t": [0.2, 0.6]}, "dtype": "float32"}))  # fmt: skip
    lm = BabyMergeLM(mergekit_config=str(path), device="cpu")
    # mergekit's gradient: layer i gets 0.2 + 0.4 * i / (n - 1); every tensor outside the layers gets t = 0.2
    reference = merge(t.mm, t.lang, "slerp", {"model.layers.*": [0.2, 0.6], "*": 0.2}, progress=False).model
    expected = reference.state_dict()
    for key, value in lm.model.state_dict().items():
        assert torch.equal(value, expected[key]), key
    # the recipe is the whole merge: other merge arguments beside it are refused, alpha 0 included
    with pytest.raises(BabyMergeError, match="mergekit_config is the whole recipe: give alpha, density in it"):
        BabyMergeLM(mergekit_config=str(path), alpha=0.0, density=0.5, device="cpu")


def test_cli_config_errors_exit_2_and_write_nothing(triple, tmp_path):
    recipe = tmp_path / "r.yml"
    recipe.write_text(
        yaml.safe_dump({"merge_method": "linear", "slices": [{"sources": [{"model": str(triple["mm"])}]}]})
    )
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "babymerge", "merge", "--config", str(recipe), "--out", str(out)],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert (
        done.returncode == 2
        and f"babymerge: error: mergekit config '{recipe}': slices: babymerge merges whole models" in done.stderr
    )
    done = subprocess.run([sys.executable, "-m", "babymerge", "merge", "--config", str(recipe), "--mm", str(triple["mm"]), "--out", str(out)],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 2 and "--config is the whole recipe" in done.stderr
    assert not out.exists()
