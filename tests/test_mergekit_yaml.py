"""Exporting a recipe as a mergekit config."""

import subprocess
import sys

import pytest
import yaml

from babymerge import BabyMergeError
from babymerge.merge.mergekit_yaml import write_mergekit_yaml


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
        "dtype": "bfloat16",
    }


def test_gradient_slerp_and_task_vectors(toy_same_class, tmp_path):
    t = toy_same_class
    slerp = yaml.safe_load(write_mergekit_yaml(tmp_path / "s.yml", t.mm, t.lang, "slerp", [0.0, 0.5]).read_text())
    assert slerp["base_model"] == str(t.mm) and slerp["parameters"] == {"t": [0.0, 0.5]}
    ties_file = write_mergekit_yaml(tmp_path / "t.yml", t.mm, t.lang, "ties", 0.25, base_ckpt=t.mm, density=0.4, scale=1.2)
    ties = yaml.safe_load(ties_file.read_text())
    assert ties["parameters"] == {"lambda": 1.2, "normalize": False}
    assert [m["parameters"] for m in ties["models"]] == [{"weight": 0.75, "density": 0.4}, {"weight": 0.25, "density": 0.4}]
    assert "not identical" in ties_file.read_text()


def test_what_mergekit_cannot_express(toy, toy_same_class, tmp_path):
    with pytest.raises(BabyMergeError, match="same tensor names"):
        write_mergekit_yaml(tmp_path / "x.yml", toy.mm, toy.lang)  # LlamaForCausalLM twin: names differ
    with pytest.raises(BabyMergeError, match="per-module alpha"):
        write_mergekit_yaml(tmp_path / "x.yml", toy_same_class.mm, toy_same_class.lang, alpha={"*embed*": 0.5, "*": 0.3})
    assert not (tmp_path / "x.yml").exists()


def test_cli_writes_only_the_recipe(toy_same_class, tmp_path):
    t = toy_same_class
    result = subprocess.run([sys.executable, "-m", "babymerge", "merge", "--mm", str(t.mm), "--lang", str(t.lang),
                             "--alpha", "0.3", "--mergekit-yaml", str(tmp_path / "r.yml")], capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load((tmp_path / "r.yml").read_text())["merge_method"] == "linear"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yml"]
