"""Bad input to merge(): a clear, specific error and no output directory left behind."""

import json
import shutil
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from babymerge import BabyMergeError, merge
from demo.toy import build_toy_checkpoints


def copy_ckpt(src, dst):
    shutil.copytree(src, dst)
    return dst


def expect_error(tmp_path, match, mm, lang, **kwargs):
    out = tmp_path / "out"
    with pytest.raises(BabyMergeError, match=match):
        merge(mm, lang, out=out, progress=False, **kwargs)
    assert not out.exists()
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(".out.")]
    assert leftovers == [], f"temporary output left behind: {leftovers}"


@pytest.mark.parametrize(
    "alpha, match",
    [
        (1.5, r"alpha must be in \[0, 1\].*got 1.5"),
        (-0.1, r"alpha must be in \[0, 1\].*got -0.1"),
        ([0.3], "a gradient needs at least two values"),
        ([0.0, 2.0], r"alpha must be in \[0, 1\]"),
        ("x", "alpha must be a number"),
        ({"model.embed*": 0.5}, "no alpha pattern matches parameter"),
        ({"model.embeddings.*": 0.5, "*": 0.3}, r"alpha pattern 'model.embeddings.\*' matches no merged parameter"),
    ],
)
def test_bad_alpha(toy, tmp_path, alpha, match):
    expect_error(tmp_path, match, toy.mm, toy.lang, alpha=alpha)


def test_missing_and_unreadable_checkpoints(toy, tmp_path):
    expect_error(tmp_path, "language-only checkpoint .*nope.* does not exist", toy.mm, tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    expect_error(tmp_path, "multimodal checkpoint .*empty.* has no config.json", empty, toy.lang)
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text("{}")
    expect_error(tmp_path, "has no model.safetensors", toy.mm, no_weights)
    bad_config = copy_ckpt(toy.lang, tmp_path / "bad_config")
    (bad_config / "config.json").write_text("{not json")
    expect_error(tmp_path, "cannot read .*config.json", toy.mm, bad_config)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text("{}")
    (pickled / "pytorch_model.bin").write_bytes(b"")
    expect_error(tmp_path, "pickled PyTorch weights; babymerge reads safetensors only", toy.mm, pickled)


def test_truncated_and_corrupt_safetensors(toy, tmp_path):
    truncated = copy_ckpt(toy.lang, tmp_path / "truncated")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    expect_error(tmp_path, "model.safetensors is truncated or corrupt", toy.mm, truncated)
    corrupt = copy_ckpt(toy.lang, tmp_path / "corrupt")
    (corrupt / "model.safetensors").write_bytes(
        struct.pack("<Q", 40) + b"{this is not a json header at all!!!!!!}" + data[48:]
    )
    expect_error(tmp_path, "truncated or corrupt", toy.mm, corrupt)


def test_shape_mismatch_names_the_tensor_and_both_shapes(toy, tmp_path):
    other = build_toy_checkpoints(tmp_path / "wide", hidden_size=32, seed=3)
    expect_error(
        tmp_path,
        r"shape mismatch for tensor '(lm_head|model.language_model.embed_tokens).weight': multimodal \[300, 64\] "
        r"vs language-only \[300, 32\] .*\(not the same decoder shape\)",
        toy.mm,
        other.lang,
        allow_different_tokenizers=True,
    )
    small_vocab = build_toy_checkpoints(tmp_path / "vocab", vocab_size=280, seed=4)
    expect_error(tmp_path, "tokenizers of .* differ", toy.mm, small_vocab.lang)
    expect_error(
        tmp_path,
        r"multimodal \[300, 64\] vs language-only \[280, 64\].*different vocabulary sizes",
        toy.mm,
        small_vocab.lang,
        allow_different_tokenizers=True,
    )


def test_different_tokenizers_are_refused_unless_forced(toy, tmp_path):
    lang = copy_ckpt(toy.lang, tmp_path / "lang")
    tok = json.loads((lang / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    a, b = [k for k in vocab if vocab[k] in (100, 101)]
    vocab[a], vocab[b] = vocab[b], vocab[a]  # same size, two ids swapped: rows no longer line up
    (lang / "tokenizer.json").write_text(json.dumps(tok))
    expect_error(
        tmp_path, "tokenizers of .* differ .*2 tokens with different ids.*allow_different_tokenizers", toy.mm, lang
    )
    report = merge(toy.mm, lang, out=tmp_path / "forced", allow_different_tokenizers=True, progress=False)
    assert report.out.is_dir()


def test_nan_or_inf_in_a_tensor(toy, tmp_path):
    lang = copy_ckpt(toy.lang, tmp_path / "lang")
    tensors = load_file(lang / "model.safetensors")
    tensors["model.layers.1.mlp.up_proj.weight"][3, 4] = float("nan")
    save_file(tensors, lang / "model.safetensors", metadata={"format": "pt"})
    expect_error(tmp_path, "tensor 'model.layers.1.mlp.up_proj.weight' contains 1 NaN/inf values", toy.mm, lang)
    tensors["model.layers.1.mlp.up_proj.weight"][3, 4] = float("inf")
    save_file(tensors, lang / "model.safetensors", metadata={"format": "pt"})
    expect_error(tmp_path, "contains 1 NaN/inf", toy.mm, lang)


def test_a_checkpoint_sharing_no_parameter(toy, tmp_path):
    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()
    (unrelated / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    save_file({"transformer.h.0.attn.c_attn.weight": torch.zeros(4, 12)}, unrelated / "model.safetensors")
    expect_error(tmp_path, r"\(GPT2LMHeadModel\) shares no parameter with the multimodal one", toy.mm, unrelated)


def test_unknown_method_and_options(toy, tmp_path):
    expect_error(
        tmp_path,
        "unknown merge method 'average'; available: breadcrumbs, breadcrumbs_ties, dare_linear",
        toy.mm,
        toy.lang,
        method="average",
    )
    expect_error(
        tmp_path,
        r"merge method 'linear' has no option\(s\) \['density'\]; its options are: compute_dtype",
        toy.mm,
        toy.lang,
        density=0.5,
    )
    expect_error(tmp_path, r"density must be in \[0, 1\], got 3", toy.mm, toy.lang, method="ties", density=3)
    expect_error(tmp_path, "unknown dtype 'int8'", toy.mm, toy.lang, dtype="int8")


def test_base_checkpoint_must_have_the_shared_parameters(toy, tmp_path):
    expect_error(
        tmp_path,
        "shape mismatch|has no parameter",
        toy.mm,
        toy.lang,
        method="ties",
        base_ckpt=build_toy_checkpoints(tmp_path / "b", hidden_size=32).mm,
    )


def test_existing_output_is_not_overwritten_by_accident(toy, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(BabyMergeError, match="already exists.*overwrite"):
        merge(toy.mm, toy.lang, out=out, progress=False)
    assert (out / "keep.txt").read_text() == "precious"
    with pytest.raises(BabyMergeError, match="was not written by babymerge .*overwrite='any'"):
        merge(toy.mm, toy.lang, out=out, overwrite=True, progress=False)  # not an earlier merge: kept
    assert (out / "keep.txt").read_text() == "precious"
    merge(toy.mm, toy.lang, out=out, overwrite="any", progress=False)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    merge(toy.mm, toy.lang, out=out, overwrite=True, alpha=0.5, progress=False)  # an earlier merge: replaced
    assert json.loads((out / "babymerge_recipe.json").read_text())["alpha"] == 0.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failure_mid_stream_leaves_no_output(toy, tmp_path):
    """The NaN sits in the last layer: several tensors are already written when it is found."""
    lang = copy_ckpt(toy.lang, tmp_path / "lang")
    tensors = load_file(lang / "model.safetensors")
    tensors["model.norm.weight"][0] = float("nan")
    save_file(tensors, lang / "model.safetensors", metadata={"format": "pt"})
    expect_error(tmp_path, "model.norm.weight", toy.mm, lang, max_shard_size=10_000)


def test_library_errors_name_arguments_and_the_command_its_flags(toy, tmp_path, capsys):
    """merge() says `out` and `overwrite='any'` (its own arguments); `babymerge merge` says --out."""
    from babymerge.cli import main

    with pytest.raises(BabyMergeError) as error:
        merge(toy.mm, toy.lang, out=toy.mm / "merged", overwrite="any", progress=False)
    assert "lies inside the input" in str(error.value) and "`out`" in str(error.value) and "--" not in str(error.value)
    out = tmp_path / "notes"
    out.mkdir()
    with pytest.raises(BabyMergeError, match=r"Choose another `out`, or pass `overwrite='any'`") as error:
        merge(toy.mm, toy.lang, out=out, overwrite=True, progress=False)
    assert "--" not in str(error.value)
    assert main(["merge", "--mm", str(toy.mm), "--lang", str(toy.lang), "--out", str(out), "--overwrite"]) == 2
    assert "Choose another --out, or pass --overwrite-any to replace" in capsys.readouterr().err
