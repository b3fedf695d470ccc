"""train/: tokenizer, packing, the real deepspeed launcher with two CPU ranks (ZeRO-1/2/3)
against plain single-process PyTorch, kill -9 and --resume, twins that merge, bad input."""

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from babymerge import BabyMergeError, merge
from demo import data as demo_data
from train.config import load_config
from train.data import build_blocks, make_batch, pack_captions, pack_text
from train.encode_images import encode

REPO = Path(__file__).resolve().parents[1]
TOTAL_STEPS = 14  # 2 epochs of the workspace's 228 blocks at a global batch of 32


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Corpora, tokenizer, a tiny DINOv2 and its features: everything a training run reads."""
    return demo_data.prepare_workspace(tmp_path_factory.mktemp("train"), n_sentences=1200, n_captions=300, vocab_size=600)


def write_config(ws: Path, name: str, multimodal: bool = True, **top) -> Path:
    """The tests' tiny run (2 epochs of 7 steps); ``section__key=value`` overrides one entry."""
    config = demo_data.tiny_config(
        ws, name, multimodal=multimodal, seed=42, epochs=2, micro_batch_size=4, global_batch_size=32,
        save_every_steps=5, log_every_steps=1,
        model={"hidden_size": 32, "intermediate_size": 64, "num_heads": 2}, optim={"lr": 1e-2, "warmup_steps": 2},
    )  # fmt: skip
    for key, value in top.items():
        section, _, leaf = key.partition("__")
        if leaf:
            config[section][leaf] = value
        else:
            config[key] = value
    return demo_data.write_config(ws / f"{name}.yaml", config)


def run_train(ws, config, *args, ranks=2, env=None, check=True):
    """The real command: the deepspeed launcher (or python -m train for ranks=0)."""
    if ranks:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = ["deepspeed", "--num_gpus", str(ranks), "--master_port", str(port), "--module", "train", "--config", str(config), *args]
    else:
        cmd = [sys.executable, "-m", "train", "--config", str(config), *args]
    proc = subprocess.run(cmd, cwd=ws, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def weights(run: Path, ckpt: str) -> dict:
    return load_file(run / ckpt / "model.safetensors")


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


# -- pieces ------------------------------------------------------------------------------------
def test_tokenizer_cli_special_tokens_and_ratio(ws):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ws / "tokenizer")
    assert [tok.convert_ids_to_tokens(i) for i in range(5)] == ["<pad>", "<s>", "</s>", "<unk>", "<image>"]
    stats = json.loads((ws / "tokenizer" / "corpus_stats.json").read_text())
    lines = (ws / "corpora" / "text" / "corpus.train").read_text().splitlines()
    lines += [json.loads(r)["caption"] for r in (ws / "corpora" / "multimodal" / "captions.jsonl").read_text().splitlines()]
    words = sum(len(s.split()) for s in lines)
    subwords = sum(len(tok(s, add_special_tokens=False)["input_ids"]) for s in lines)
    assert (stats["words"], stats["subwords"]) == (words, subwords)
    assert stats["word_to_subword_ratio"] == pytest.approx(subwords / words) and 1.0 <= subwords / words < 2.0


def test_packing_by_hand():
    blocks, images = pack_text([[5, 6, 7], [8]], ctx=4, eos=2, image_token=4)  # stream 5 6 7 </s> 8 </s>
    assert blocks.tolist() == [[4, 5, 6, 7], [4, 2, 8, 2]] and images == [[-1], [-1]]
    blocks, images = pack_text([[5, 6, 7], [8]], ctx=4, eos=2, image_token=None)
    assert blocks.tolist() == [[5, 6, 7, 2]] and images == [[]]
    blocks, images, n = pack_captions([[5, 6], [7, 8, 9], [10]], np.array([7, 8, 9]), ctx=6, eos=2, pad=0, image_token=4)
    assert blocks.tolist() == [[4, 5, 6, 2, 0, 0], [4, 7, 8, 9, 2, 0], [4, 10, 2, 0, 0, 0]]
    assert images == [[7], [8], [9]] and n == [4, 5, 3]


def test_batches_mask_padding_and_images_and_carry_the_right_features(ws):
    config = load_config(write_config(ws, "batch"))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ws / "tokenizer")
    data = build_blocks(config, tok)
    image = tok.convert_tokens_to_ids("<image>")
    mm = [i for i in range(len(data)) if len(data.blocks[i]["images"]) and data.blocks[i]["images"][0] >= 0]
    text = [i for i in range(len(data)) if list(data.blocks[i]["images"]) == [-1]]
    assert mm and text and len(mm) + len(text) == len(data)
    batch = make_batch(data, np.array([text[0], mm[0]]), image)
    ids, labels = batch["input_ids"], batch["labels"]
    assert ids[0, 0] == image and (ids[0] == image).sum() == 1 and (labels[0, 1:] != -100).all()
    n = int(data.blocks[mm[0]]["n_tokens"])
    assert (labels[1, n:] == -100).all() and (labels[1][ids[1] == image] == -100).all()
    rows = data.blocks[mm[0]]["images"]
    feats = np.load(ws / "features" / "features.npy")
    assert batch["image_features"].shape == (1 + len(rows), 32)
    np.testing.assert_array_equal(batch["image_features"][0].numpy(), np.load(ws / "features" / "black.npy"))
    np.testing.assert_array_equal(batch["image_features"][1:].numpy(), feats[rows])
    # the captions behind the first block's image tokens, in order
    captions = [json.loads(r)["caption"] for r in (ws / "corpora" / "multimodal" / "captions.jsonl").read_text().splitlines()]
    assert tok.decode(ids[1][1 : 1 + len(tok(captions[rows[0]])["input_ids"])]) == captions[rows[0]]


# -- the real launcher -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference(ws):
    """Plain single-process PyTorch, then the deepspeed launcher with 2 CPU ranks and ZeRO-2."""
    run_train(ws, write_config(ws, "torch", engine="torch"), ranks=0)
    run_train(ws, write_config(ws, "zero2"))
    return ws / "runs" / "torch", ws / "runs" / "zero2"


def test_zero2_two_ranks_learn_checkpoint_and_match_single_process(reference):
    single, zero2 = reference
    log = [json.loads(line) for line in (zero2 / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, TOTAL_STEPS + 1))
    assert log[-1]["loss"] < 0.7 * log[0]["loss"]  # ln(600) = 6.4 at the random init
    assert all(r["tokens_per_s"] > 0 and r["samples_per_s"] > 0 for r in log)
    # the rate each step used: linear warm-up over 2 steps, then cosine from 1e-2 down to 1e-3
    want = [1e-2 * ((i + 1) / 2 if i < 2 else 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (i - 2) / (TOTAL_STEPS - 2)))) for i in range(TOTAL_STEPS)]
    assert [r["lr"] for r in log] == pytest.approx(want)
    names = sorted(p.name for p in zero2.iterdir() if (p / "config.json").is_file())
    assert names == ["ckpt-ep1", "ckpt-ep2", "ckpt-step10", "ckpt-step5"]
    assert (zero2 / "latest").read_text().strip() == "ckpt-ep2"
    assert not list(zero2.glob(".tmp-*"))
    # DeepSpeed state kept for the newest checkpoint only; weights for all
    assert [p.name for p in zero2.iterdir() if (p / "deepspeed").is_dir()] == ["ckpt-ep2"]
    state = json.loads((zero2 / "ckpt-ep1" / "trainer_state.json").read_text())
    assert (state["global_step"], state["epoch"], state["world_size"], state["zero_stage"]) == (7, 1.0, 2, 2)
    # the same global batches -> the same weights as one process (fp32, 14 AdamW steps)
    assert max_diff(weights(single, "ckpt-ep2"), weights(zero2, "ckpt-ep2")) < 1e-5
    single_log = [json.loads(line) for line in (single / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in single_log] == pytest.approx([r["loss"] for r in log], abs=1e-4)


def test_checkpoints_load_with_babymerge_and_keep_the_black_image(reference):
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    _, zero2 = reference
    model = AutoModelForImageTextToText.from_pretrained(zero2 / "ckpt-ep1")
    assert type(model).__name__ == "BabyLlavaForConditionalGeneration"
    assert AutoTokenizer.from_pretrained(zero2 / "ckpt-ep1").convert_tokens_to_ids("<image>") == model.config.image_token_id
    black = torch.from_numpy(np.load(zero2.parents[1] / "features" / "black.npy"))
    torch.testing.assert_close(model.model.black_image_features, black)


def test_kill_9_mid_epoch_then_resume_gives_the_uninterrupted_weights(ws, reference):
    _, zero2 = reference
    config = write_config(ws, "killed")
    proc = run_train(ws, config, env={"BABYMERGE_TRAIN_KILL_AT": "1:12"}, check=False)  # rank 1 dies after step 12
    assert proc.returncode != 0
    run = ws / "runs" / "killed"
    assert (run / "latest").read_text().strip() == "ckpt-step10"  # the newest checkpoint that was complete
    assert not (run / "ckpt-ep2").exists()
    run_train(ws, config, "--resume")
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log][-4:] == list(range(11, TOTAL_STEPS + 1))  # 11, 12 again after the crash
    assert max_diff(weights(zero2, "ckpt-ep2"), weights(run, "ckpt-ep2")) < 1e-6


@pytest.mark.parametrize("ds_config, stage", [("ds_zero1", 1), ("ds_zero3", 3), ("ds_zero2_offload", 2)])
def test_zero_1_3_and_cpu_offload_match_single_process(ws, ds_config, stage):
    """ZeRO-3 gathers its partitioned weights to save them; the offload config has DeepSpeed's
    own CPU AdamW (built on first use), over the same decay / no-decay parameter groups."""
    steps = {"max_steps": 6, "save_every_steps": 0}
    single = ws / "runs" / "torch6"
    if not (single / "latest").exists():
        run_train(ws, write_config(ws, "torch6", engine="torch", **steps), ranks=0)
    run_train(ws, write_config(ws, ds_config, deepspeed=str(REPO / "train" / "configs" / f"{ds_config}.json"), **steps))
    diff = max_diff(weights(single, "ckpt-step6"), weights(ws / "runs" / ds_config, "ckpt-step6"))
    assert diff < 1e-5, f"{ds_config}: max |dw| = {diff:.3g} vs single process"
    assert json.loads((ws / "runs" / ds_config / "ckpt-step6" / "trainer_state.json").read_text())["zero_stage"] == stage


def test_language_only_twins_of_both_kinds_merge_with_the_multimodal_model(ws, reference):
    _, zero2 = reference
    run_train(ws, write_config(ws, "lang", multimodal=False, engine="torch"), ranks=0)
    run_train(ws, write_config(ws, "llama", multimodal=False, engine="torch", model__kind="llama", data__text_image_prefix="none"), ranks=0)
    mm = weights(zero2, "ckpt-ep2")
    for run, key in (("lang", "model.language_model.layers.0.mlp.up_proj.weight"), ("llama", "model.layers.0.mlp.up_proj.weight")):
        lang = weights(ws / "runs" / run, "ckpt-ep2")
        merged = merge(zero2 / "ckpt-ep2", ws / "runs" / run / "ckpt-ep2", alpha=0.3).model.state_dict()
        want = 0.3 * lang[key] + 0.7 * mm["model.language_model.layers.0.mlp.up_proj.weight"]
        torch.testing.assert_close(merged["model.language_model.layers.0.mlp.up_proj.weight"], want)
        projector = "model.multi_modal_projector.linear_1.weight"
        # a BabyLLaVA twin has a projector too (trained on the black image): shared, so merged;
        # a Llama twin has none: the multimodal model's is kept
        want = 0.3 * lang[projector] + 0.7 * mm[projector] if run == "lang" else mm[projector]
        torch.testing.assert_close(merged[projector], want)


# -- bad input ---------------------------------------------------------------------------------
def test_bad_config_and_data_are_named(ws, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ws / "tokenizer")
    with pytest.raises(BabyMergeError, match=r"unknown config key\(s\) \['model.hiden_size'\].*valid keys in model: .*'hidden_size'"):
        load_config(write_config(ws, "typo", model__hiden_size=8))
    with pytest.raises(BabyMergeError, match=r"unknown config key\(s\) \['epoch'\]"):
        load_config(write_config(ws, "typo2"), ["epoch=3"])
    with pytest.raises(BabyMergeError, match="data.text: .*nowhere.*matches no file"):
        build_blocks(load_config(write_config(ws, "missing", data__text=[str(tmp_path / "nowhere")])), tok)
    short = tmp_path / "short.npy"
    np.save(short, np.load(ws / "features" / "features.npy")[:-1])
    mm = {"captions": str(ws / "corpora" / "multimodal" / "captions.jsonl"), "features": str(short)}
    with pytest.raises(BabyMergeError, match="has 300 captions but .*short.npy.* hold 299 feature rows"):
        build_blocks(load_config(write_config(ws, "count", data__multimodal=[mm])), tok)
    wide = tmp_path / "wide.npy"
    np.save(wide, np.zeros((300, 48), np.float32))
    with pytest.raises(BabyMergeError, match=r"wide.npy: features are 48-d but model.feature_size is 32"):
        build_blocks(load_config(write_config(ws, "width", data__multimodal=[{**mm, "features": str(wide)}])), tok)


def test_resume_without_checkpoint_and_rerun_into_a_used_folder_are_refused(ws, reference):
    proc = run_train(ws, write_config(ws, "fresh", engine="torch"), "--resume", ranks=0, check=False)
    assert proc.returncode == 2 and "--resume: no checkpoint in" in proc.stderr and "run without --resume" in proc.stderr
    proc = run_train(ws, write_config(ws, "torch", engine="torch"), ranks=0, check=False)  # the reference run's folder
    assert proc.returncode == 2 and "already holds a run; pass --resume" in proc.stderr


def test_features_aligned_by_id_from_npz_and_by_index_from_safetensors(ws, tmp_path):
    from safetensors.numpy import save_file

    from train.data import load_multimodal

    feats = np.load(ws / "features" / "features.npy")
    captions = ws / "corpora" / "multimodal" / "captions.jsonl"
    ids = [json.loads(r)["id"] for r in captions.read_text().splitlines()]
    order = np.random.default_rng(0).permutation(len(ids))  # rows stored in another order, with their ids
    np.savez(tmp_path / "f.npz", features=feats[order], ids=np.array(ids)[order])
    save_file({"features": feats}, str(tmp_path / "f.safetensors"))
    for name in ("f.npz", "f.safetensors"):
        config = load_config(write_config(ws, "align", data__multimodal=[{"captions": str(captions), "features": str(tmp_path / name)}]))
        sources, table, _ = load_multimodal(config)
        np.testing.assert_array_equal(table.rows(sources[0].rows), feats)  # caption i -> its own feature row
    np.savez(tmp_path / "g.npz", features=feats[:2], ids=np.array([ids[0], 10**6]))
    config = load_config(write_config(ws, "align2", data__multimodal=[{"captions": str(captions), "features": str(tmp_path / "g.npz")}]))
    with pytest.raises(BabyMergeError, match="299 caption id\\(s\\) have no feature row"):
        load_multimodal(config)


def test_encode_images_matches_the_model_encoder_and_resumes_from_finished_chunks(ws, tmp_path):
    from PIL import Image
    from transformers import AutoImageProcessor, Dinov2Model

    from babymerge.modeling import mean_pooled_features

    captions = ws / "corpora" / "multimodal" / "captions.jsonl"
    rows = [json.loads(r) for r in captions.read_text().splitlines()]
    feats = np.load(ws / "features" / "features.npy")
    encoder, processor = Dinov2Model.from_pretrained(ws / "encoder"), AutoImageProcessor.from_pretrained(ws / "encoder")
    for i in (0, 123):
        want = mean_pooled_features(encoder, processor, images=[Image.open(captions.parent / rows[i]["image"]).convert("RGB")])[0]
        np.testing.assert_allclose(feats[i], want.numpy(), atol=1e-5)
    # a run interrupted after its first chunk: that chunk is reused as it is, not recomputed
    out = tmp_path / "feats"
    (out / ".parts").mkdir(parents=True)
    unique = sorted({captions.parent / r["image"] for r in rows})
    np.save(out / ".parts" / "part-000000.npy", np.full((100, 32), 7.0, np.float32))
    encode(captions, str(ws / "encoder"), out, chunk=100)
    resumed = np.load(out / "features.npy")
    first_chunk = {p for p in unique[:100]}
    for i, r in enumerate(rows):
        in_first = captions.parent / r["image"] in first_chunk
        assert (resumed[i] == 7.0).all() == in_first
        if not in_first:
            np.testing.assert_allclose(resumed[i], feats[i], atol=1e-6)
    assert not (out / ".parts").exists() and (out / "black.npy").is_file()
