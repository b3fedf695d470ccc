"""The `babymerge` command as a user runs it (a real subprocess)."""

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from helpers.models import interpolated


def run(*args):
    return subprocess.run([sys.executable, "-m", "babymerge", *map(str, args)], capture_output=True, text=True)


def test_merge_command_prints_a_summary_and_writes_the_checkpoint(toy, tmp_path):
    out = tmp_path / "merged"
    result = run("merge", "--mm", toy.mm, "--lang", toy.lang, "--alpha", "0.3", "--method", "linear", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "merged 21 tensors (120,640 parameters) with linear, alpha=0.3" in result.stdout
    assert "kept 5 multimodal-only tensors (6,304 parameters) unchanged" in result.stdout
    assert "merging (linear)" in result.stderr  # the tqdm bar
    mm, lang, got = (load_file(p / "model.safetensors") for p in (toy.mm, toy.lang, out))
    key = "model.language_model.layers.0.mlp.down_proj.weight"
    assert torch.equal(got[key], interpolated(mm[key], lang["model.layers.0.mlp.down_proj.weight"], 0.3))


@pytest.mark.slow
def test_method_options_and_module_alpha_flags(toy, tmp_path):
    out = tmp_path / "ties"
    result = run("merge", "--mm", toy.mm, "--lang", toy.lang, "--method", "ties", "--base", toy.base, "--density", "0.3",
                 "--module-alpha", "model.embed_tokens.*=0.5", "--alpha", "0.2", "--out", out, "--no-progress")  # fmt: skip
    assert result.returncode == 0, result.stderr
    from babymerge import merge

    merge(
        toy.mm,
        toy.lang,
        "ties",
        {"model.embed_tokens.*": 0.5, "*": 0.2},
        base_ckpt=toy.base,
        density=0.3,
        out=tmp_path / "api",
        progress=False,
    )
    a, b = load_file(out / "model.safetensors"), load_file(tmp_path / "api" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_errors_exit_2_with_a_message_and_write_nothing(toy, tmp_path):
    out = tmp_path / "merged"
    result = run("merge", "--mm", toy.mm, "--lang", toy.lang, "--alpha", "1.3", "--out", out)
    assert result.returncode == 2
    assert "babymerge: error: alpha: alpha must be in [0, 1]" in result.stderr and "got 1.3" in result.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []
    result = run("merge", "--mm", toy.mm, "--lang", toy.lang, "--density", "0.5", "--out", out)
    assert result.returncode == 2 and "merge method 'linear' has no option(s) ['density']" in result.stderr
    result = run("merge", "--mm", toy.mm, "--lang", toy.lang)
    assert result.returncode == 2 and "give --out" in result.stderr


def test_methods_lists_every_method():
    result = run("methods")
    assert result.returncode == 0
    for name in ("linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "slerp"):
        assert f"\n{name}" in "\n" + result.stdout


def test_alpha_takes_one_number_and_alpha_gradient_is_the_layer_gradient(toy, tmp_path, capsys):
    """`--alpha 0,0.5` reads like the sweep's `--alphas 0,0.5` (two alphas): refused, naming
    --alpha-gradient; `--alpha-gradient 0,0.5` gives layer 0 alpha 0 and the last layer 0.5."""
    from babymerge.cli import main

    out = tmp_path / "gradient"
    assert main(["merge", "--mm", str(toy.mm), "--lang", str(toy.lang), "--alpha", "0,0.5", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "--alpha takes one number" in error and "--alpha-gradient 0,0.5" in error and "--alphas 0,0.5" in error
    assert not out.exists()
    argv = ["merge", "--mm", str(toy.mm), "--lang", str(toy.lang), "--alpha-gradient", "0,0.5", "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    mm, lang, got = (load_file(p / "model.safetensors") for p in (toy.mm, toy.lang, out))
    last = max(int(k.split(".")[3]) for k in mm if k.startswith("model.language_model.layers."))
    for layer, alpha in ((0, 0.0), (last, 0.5)):
        key = f"model.language_model.layers.{layer}.mlp.down_proj.weight"
        expected = interpolated(mm[key], lang[f"model.layers.{layer}.mlp.down_proj.weight"], alpha)
        assert torch.equal(got[key], expected)


def test_a_per_model_density_on_the_command_line_is_the_pair_in_python(toy, tmp_path):
    """`--density 0.3,0.5` is (multimodal 0.3, language-only 0.5), as `density=(0.3, 0.5)` in
    Python; and not the same merge as 0.3 for both, so the second value is used."""
    from babymerge import merge
    from babymerge.cli import main

    out = tmp_path / "cli"
    argv = ["merge", "--mm", str(toy.mm), "--lang", str(toy.lang), "--method", "ties", "--base", str(toy.base)]
    assert main([*argv, "--density", "0.3,0.5", "--out", str(out), "--no-progress"]) == 0
    kwargs = dict(base_ckpt=toy.base, progress=False)
    merge(toy.mm, toy.lang, "ties", 0.3, density=(0.3, 0.5), out=tmp_path / "pair", **kwargs)
    merge(toy.mm, toy.lang, "ties", 0.3, density=0.3, out=tmp_path / "one", **kwargs)
    got, pair, one = (load_file(p / "model.safetensors") for p in (out, tmp_path / "pair", tmp_path / "one"))
    assert all(torch.equal(got[k], pair[k]) for k in got)
    assert not all(torch.equal(got[k], one[k]) for k in got)
