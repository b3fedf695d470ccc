"""The `babymerge` command (``babymerge.cli``) as a user runs it, a real subprocess or ``main`` in
this process: ``merge`` writes what ``merge()`` writes and prints a summary, ``methods`` lists the
methods; bad arguments and inputs are one line naming the flag, exit 2, nothing written; a
questionable pair of checkpoints is merged with a warning."""

import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from babymerge.cli import main

from helpers.commands import merge_cli as cli
from helpers.files import leftovers
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


@pytest.mark.parametrize(
    "args, match",
    [
        # a file on the path to --out
        (["--out", "{tmp}/file.txt/out"], r"'.*file.txt' is a file, not a directory; choose another --out"),
        # checked before either checkpoint is read
        (
            ["--out", "{tmp}/out", "--max-shard-size", "abc"],
            r"--max-shard-size must be a positive size such as 500MB.*got 'abc'",
        ),
        (["--out", "{tmp}/out", "--max-shard-size", "0"], r"--max-shard-size must be a positive size"),
        # a method option of the wrong type
        (
            ["--out", "{tmp}/out", "--method", "ties", "--density", "abc"],
            r"option density of merge method 'ties' must be a number .*got 'abc'",
        ),
        (
            ["--out", "{tmp}/out", "--method", "ties_peft", "--majority-sign-method", "total", "--scale", "x"],
            r"option scale of merge method 'ties_peft' must be a number",
        ),
        (
            ["--out", "{tmp}/out", "--method", "dare_linear", "--seed", "1.5"],
            r"option seed of merge method 'dare_linear' must be an integer",
        ),
    ],
)
def test_bad_merge_arguments_are_one_line(toy, tmp_path, capsys, args, match):
    import re

    (tmp_path / "file.txt").write_text("x")
    rc, last = cli(capsys, "--mm", toy.mm, "--lang", toy.lang, *[a.format(tmp=tmp_path) for a in args])
    assert rc == 2 and re.search(match, last) and last.startswith("babymerge: error: "), last
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_a_twin_without_tokenizer_files_is_warned_about(toy, tmp_path, capsys):
    """A language-only checkpoint without tokenizer files: merged, with a warning that the tokenizers
    cannot be compared."""
    lang = tmp_path / "lang"
    shutil.copytree(toy.lang, lang)
    for f in lang.glob("tokenizer*"):
        f.unlink()
    (lang / "special_tokens_map.json").unlink(missing_ok=True)
    rc = main(["merge", "--mm", str(toy.mm), "--lang", str(lang), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0
    assert f"babymerge: warning: the language-only checkpoint '{lang}' has no tokenizer files: cannot check" in err


def test_mm_equal_to_lang_is_warned_about(toy, tmp_path, capsys):
    """--mm and --lang the same checkpoint: merged, with a warning (every alpha gives the same model)."""
    rc = main(["merge", "--mm", str(toy.mm), "--lang", str(toy.mm), "--out", str(tmp_path / "out"), "--no-progress"])
    assert rc == 0 and "babymerge: warning: --mm and --lang are the same checkpoint" in capsys.readouterr().err


def test_swapped_mm_and_lang_are_refused(toy, tmp_path, capsys):
    """A plain Llama as --mm and BabyLLaVA as --lang: one line asking whether they were swapped,
    exit 2, nothing written."""
    rc, last = cli(capsys, "--mm", toy.lang, "--lang", toy.mm, "--out", tmp_path / "out")
    assert rc == 2 and "is a text-only LlamaForCausalLM but --lang" in last and "Did you swap --mm and --lang?" in last
    assert "multi_modal_projector" in last or "projector" in last
    assert not (tmp_path / "out").exists()
