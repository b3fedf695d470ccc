"""Exporting a recipe as a mergekit config."""

import subprocess
import sys

import pytest
import torch
import yaml

from babymerge import BabyMergeError, merge
from babymerge.merge.mergekit import write_mergekit_yaml


def test_linear_recipe(toy_same_class, tmp_path):
    t = toy_same_class
    path = write_mergekit_yaml(tmp_path / "recipe.yml", t.mm, t.lang, "linear", 0.3, dtype="bfloat16")
    config = yaml.safe_load(path.read_text())
    assert config == {
        "merge_method": "linear",
        "models": [
            {"model": str(t.mm), "parameters": {"weight": 0.7}},
            {"model": str(t.lang), "parameters": {"weight": 0.3}},
        ],
        "parameters": {"normalize": False},
        "dtype": "float32",  # mergekit computes in `dtype`, babymerge in float32
        "out_dtype": "bfloat16",
    }


def test_gradient_slerp_and_task_vectors(toy_same_class, tmp_path):
    t = toy_same_class
    slerp = yaml.safe_load(write_mergekit_yaml(tmp_path / "s.yml", t.mm, t.lang, "slerp", [0.0, 0.5]).read_text())
    assert slerp["base_model"] == str(t.mm)
    # mergekit gives every tensor outside the layers t = 0, babymerge those after the layers the last value:
    # the gradient is mergekit's, the tensors after the layers are named by filters
    *filters, default = slerp["parameters"]["t"]
    assert default == {"value": [0.0, 0.5]}
    assert sorted(f["filter"] for f in filters) == sorted(
        [
            "lm_head.weight",
            "model.language_model.norm.weight",
            *(f"model.multi_modal_projector.linear_{i}.{p}" for i in (1, 2) for p in ("weight", "bias")),
        ]
    )
    assert all(f["value"] == 0.5 for f in filters)
    ties_file = write_mergekit_yaml(
        tmp_path / "t.yml", t.mm, t.lang, "ties", 0.25, base_ckpt=t.mm, density=0.4, scale=1.2
    )
    ties = yaml.safe_load(ties_file.read_text())
    assert ties["parameters"] == {"lambda": 1.2, "normalize": True, "rescale": False}
    assert [m["parameters"] for m in ties["models"]] == [
        {"weight": 0.75, "density": 0.4},
        {"weight": 0.25, "density": 0.4},
    ]
    assert "note" not in ties_file.read_text()  # the same method: nothing to warn about


def test_what_mergekit_cannot_express(toy, toy_same_class, tmp_path):
    with pytest.raises(BabyMergeError, match="same tensor names"):
        write_mergekit_yaml(tmp_path / "x.yml", toy.mm, toy.lang)  # LlamaForCausalLM twin: names differ
    with pytest.raises(BabyMergeError, match="no mergekit equivalent"):
        write_mergekit_yaml(tmp_path / "x.yml", toy_same_class.mm, toy_same_class.lang, "ties_peft", 0.3)
    assert not (tmp_path / "x.yml").exists()


def test_export_round_trips_through_the_recipe_reader(toy_same_class, tmp_path):
    """--mergekit-yaml, read back with --config, merges to the same tensors (per-module alpha included)."""
    from babymerge.merge.mergekit import read_mergekit_config

    t = toy_same_class
    for method, alpha, options in (
        ("linear", {"*embed*": 0.5, "model.layers.1.*": [0.2, 0.9], "*": 0.3}, {}),
        ("dare_ties", 0.4, {"density": (0.5, 0.8), "seed": 0}),
        ("nuslerp", [0.1, 0.7], {}),
    ):
        direct = merge(t.mm, t.lang, method, alpha, progress=False, **options).model.state_dict()
        path = write_mergekit_yaml(tmp_path / f"{method}.yml", t.mm, t.lang, method, alpha, **options)
        recipe = read_mergekit_config(path)
        assert (recipe.method, recipe.mm, recipe.lang, recipe.base) == (method, t.mm.resolve(), t.lang.resolve(), None)
        read_back = merge(**recipe.merge_kwargs(), progress=False).model.state_dict()
        for key, value in direct.items():
            torch.testing.assert_close(read_back[key], value, rtol=1e-6, atol=1e-8, msg=key)


def test_cli_writes_only_the_recipe(toy_same_class, tmp_path):
    t = toy_same_class
    result = subprocess.run([sys.executable, "-m", "babymerge", "merge", "--mm", str(t.mm), "--lang", str(t.lang),
                             "--alpha", "0.3", "--mergekit-yaml", str(tmp_path / "r.yml")], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load((tmp_path / "r.yml").read_text())["merge_method"] == "linear"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yml"]
