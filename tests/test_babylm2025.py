"""BabyLM 2025 interop: recorded image pooling, old checkpoints, self-contained
checkpoints loaded where babymerge is not importable, the official pipeline as a client."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForCausalLM, AutoTokenizer, Dinov2Config, Dinov2Model

from babymerge import BabyMergeError
from babymerge.image_features import image_features
from babymerge.remote_code import CODE_FILES, check_remote_code

from conftest import PIPELINE, REPO, blimp_rows, needs_pipeline
from helpers.pipeline import LEGACY_CHECKPOINT, run_without_babymerge


def legacy_image():
    sys.path.insert(0, str(LEGACY_CHECKPOINT.parent))
    from make_legacy_checkpoint import image

    return image()


def sentence_logprob(model, tok, sentence: str, feature=None) -> float:
    """Hand-built: ids of "<image> " + sentence, the image token filled with ``feature`` (the
    black one by default) by hand, sum of the sentence tokens' log-probabilities."""
    ids = tok("<image> " + sentence)["input_ids"]
    assert ids[0] == model.config.image_token_id and tok.convert_ids_to_tokens(ids[1]).startswith("Ġ")
    feature = model.model.black_image_features if feature is None else feature
    with torch.no_grad():
        embeds = model.model.language_model.embed_tokens(torch.tensor([ids])).clone()
        p = model.model.multi_modal_projector
        embeds[0, 0] = p.linear_2(p.act(p.linear_1(feature)))
        logits = model.lm_head(model.model.language_model(inputs_embeds=embeds).last_hidden_state)[0].double()
    return float(logits[:-1].log_softmax(-1).gather(1, torch.tensor(ids[1:])[:, None]).sum())


# -- 1. image features as one recorded choice ------------------------------------------------------
def test_poolings_equal_a_hand_computation_on_a_tiny_random_dinov2(tmp_path):
    torch.manual_seed(0)
    encoder = Dinov2Model(
        Dinov2Config(
            hidden_size=16, num_hidden_layers=3, num_attention_heads=2, mlp_ratio=2, image_size=28, patch_size=14
        )
    ).eval()
    pixels = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        out = encoder(pixel_values=pixels, output_hidden_states=True)
    by_hand = {
        ("patch_mean", -2): out.hidden_states[2][:, 1:, :].sum(1) / 4,  # 4 patches, CLS (token 0) dropped
        ("mean", -1): out.last_hidden_state.sum(1) / 5,
        ("cls", -2): out.hidden_states[2][:, 0],
    }
    for (pooling, layer), expected in by_hand.items():
        torch.testing.assert_close(
            image_features(encoder, None, pixel_values=pixels, layer=layer, pooling=pooling), expected
        )
    assert not torch.allclose(by_hand["patch_mean", -2], by_hand["mean", -1])
    with pytest.raises(BabyMergeError, match="image_pooling must be one of"):
        image_features(encoder, None, pixel_values=pixels, pooling="max")


def test_new_checkpoints_record_the_authors_pooling(toy):
    config = json.loads((toy.mm / "config.json").read_text())
    assert (config["vision_feature_layer"], config["image_pooling"], config["image_features_source"]) == (
        -2,
        "patch_mean",
        "encoder",
    )
    assert config["image_token_index"] == 4 == AutoTokenizer.from_pretrained(toy.mm).convert_tokens_to_ids("<image>")


def test_old_checkpoint_keeps_its_pooling_and_its_loglikelihoods():
    """A checkpoint written before the change (tests/fixtures/legacy_babyllava, by commit 50619ae)
    reads as last-layer all-token mean and scores exactly as that code did."""
    expected = json.loads((LEGACY_CHECKPOINT / "expected.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(LEGACY_CHECKPOINT / "model").eval()
    tok = AutoTokenizer.from_pretrained(LEGACY_CHECKPOINT / "model")
    assert (model.config.vision_feature_layer, model.config.image_pooling, model.config.image_token_index) == (
        -1,
        "mean",
        4,
    )
    model.config.vision_encoder = str(LEGACY_CHECKPOINT / "encoder")
    feature = model.encode_images(images=[legacy_image()])[0]
    torch.testing.assert_close(feature, torch.tensor(expected["image_feature"]))
    for i, s in enumerate(expected["sentences"]):
        assert abs(sentence_logprob(model, tok, s) - expected["black"][i]) < 1e-5
        assert abs(sentence_logprob(model, tok, s, feature) - expected["image"][i]) < 1e-5


def test_features_of_another_width_are_refused_with_both_widths(toy):
    model = AutoModelForCausalLM.from_pretrained(toy.mm)
    with pytest.raises(BabyMergeError, match=r"image features are 768-d .* projector takes 32-d"):
        model(input_ids=torch.tensor([[4, 20]]), image_features=torch.zeros(1, 768))


def test_precomputed_features_refuse_raw_images_naming_what_is_needed(toy, tmp_path):
    shutil.copytree(toy.mm, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config.update(
        image_features_source="precomputed",
        precomputed_features={"files": ["cc_3M_dino_v2_states_1of2.npy"], "width": 32},
    )
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    with pytest.raises(
        BabyMergeError,
        match="precomputed image features .*cc_3M_dino_v2_states_1of2.npy.*vision_encoder, vision_feature_layer and image_pooling",
    ):
        model.encode_images(images=[Image.new("RGB", (28, 28))])


# -- 3. self-contained checkpoints ------------------------------------------------------------------
def test_merge_output_carries_auto_map_code_and_processor(merged):
    config = json.loads((merged / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling.BabyLlavaForConditionalGeneration"
    for name in (*CODE_FILES, "processor_config.json", "preprocessor_config.json", "tokenizer.json"):
        assert (merged / name).is_file(), name
    for name in CODE_FILES:
        assert not re.search(
            r"^\s*(import\s+(babymerge|train)\b|from\s+(babymerge|train)[\w.]*\s+import\b)",
            (merged / name).read_text(),
            re.M,
        ), name
    check_remote_code(merged)


@pytest.mark.slow
def test_loads_without_babymerge_and_scores_as_trained(merged, toy, tmp_path):
    """Plain transformers, babymerge not importable: the Auto classes load the checkpoint's own
    code; text alone is scored after the black image ("<image> " + text, as in training);
    pixel_values from the processor are encoded with the recorded encoder and pooling."""
    code = f"""
import json, torch
from PIL import Image
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor
path = {str(merged)!r}
model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True).eval()
other = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=True)
proc = AutoProcessor.from_pretrained(path, trust_remote_code=True, padding_side="right")
enc = proc(text="The dog sees a cat.", return_offsets_mapping=True)
image = Image.new("RGB", (50, 40), (200, 30, 30))
with_image = proc(text="The dog sees a cat.", images=image)
out = {{"classes": [type(model).__module__, type(other).__name__, type(proc).__name__],
       "ids": enc["input_ids"], "offsets": [list(o) for o in enc["offset_mapping"]], "pixels": list(with_image["pixel_values"].shape)}}
ids = torch.tensor([enc["input_ids"]])
with torch.no_grad():
    for key, kwargs in (("text", {{}}), ("image", {{"pixel_values": with_image["pixel_values"]}})):
        logits = model(input_ids=ids, **kwargs).logits[0, :-1].double().log_softmax(-1)
        out[key] = float(logits.gather(1, ids[0, 1:, None]).sum())
print(json.dumps(out))
"""
    result = run_without_babymerge(tmp_path, code)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["classes"][0].startswith("transformers_modules") and out["classes"][1:] == [
        "BabyLlavaForConditionalGeneration",
        "BabyLlavaProcessor",
    ]
    model = AutoModelForCausalLM.from_pretrained(merged).eval()
    tok = AutoTokenizer.from_pretrained(merged)
    assert out["ids"] == tok("<image> The dog sees a cat.")["input_ids"]
    assert out["offsets"][0] == [0, 0] and all(end >= 1 for _, end in out["offsets"][1:])  # in the caller's text
    assert out["offsets"][-1] == [18, 19]  # "."
    assert abs(out["text"] - sentence_logprob(model, tok, "The dog sees a cat.")) < 1e-4
    encoder = Dinov2Model.from_pretrained(toy.encoder).eval()
    pixels = AutoImageProcessor.from_pretrained(toy.encoder)(
        images=[Image.new("RGB", (50, 40), (200, 30, 30))], return_tensors="pt"
    )["pixel_values"]
    assert out["pixels"] == list(pixels.shape)
    with torch.no_grad():
        feature = encoder(pixel_values=pixels, output_hidden_states=True).hidden_states[-2][0, 1:].mean(0)
    assert abs(out["image"] - sentence_logprob(model, tok, "The dog sees a cat.", feature)) < 1e-4
    assert abs(out["image"] - out["text"]) > 1e-6, "the image must matter"


def test_missing_code_files_give_a_clear_error(merged, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(merged, broken)
    (broken / "modeling.py").unlink()
    with pytest.raises(BabyMergeError, match=r"lacks modeling.py.*python -m babymerge.remote_code"):
        check_remote_code(broken)
    assert (
        subprocess.run([sys.executable, "-m", "babymerge.remote_code", str(broken)], capture_output=True).returncode
        == 0
    )
    check_remote_code(broken)


# -- 4. the official pipeline as a test client ---------------------------------------------------------
@pytest.mark.slow
@needs_pipeline
def test_official_pipeline_scores_our_merged_checkpoint_as_a_hand_forward_pass(merged, tmp_path):
    uid, rows = blimp_rows()
    data = tmp_path / "blimp_data"
    data.mkdir()
    (data / f"{uid}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = (
        "import sys, runpy; sys.argv = ['run', '--backend', 'causal', '--task', 'blimp', '--model_path_or_name', "
        f"{str(merged)!r}, '--data_path', {str(data)!r}, '--save_predictions', '--batch_size', '4']; "
        "runpy.run_module('evaluation_pipeline.sentence_zero_shot.run', run_name='__main__')"
    )
    result = run_without_babymerge(tmp_path, code, PIPELINE)
    assert result.returncode == 0, result.stderr[-3000:]
    # the pipeline names the folder Path(model).stem: "merged-a0" here
    out = tmp_path / "results" / Path(str(merged)).stem / "main" / "zero_shot" / "causal" / "blimp" / data.name
    preds = json.loads((out / "predictions.json").read_text())[uid]["predictions"]

    model = AutoModelForCausalLM.from_pretrained(merged).eval()
    tok = AutoTokenizer.from_pretrained(merged)
    ours = []
    for r in rows:
        good, bad = sentence_logprob(model, tok, r["sentence_good"]), sentence_logprob(model, tok, r["sentence_bad"])
        ours.append(
            r["sentence_good"] if good >= bad else r["sentence_bad"]
        )  # the pipeline's argmax: a tie picks the first
    assert [p["pred"] for p in preds] == ours
    accuracy = 100 * sum(p == r["sentence_good"] for p, r in zip(ours, rows)) / len(rows)
    report = (out / "best_temperature_report.txt").read_text()
    assert f"{uid}: {accuracy:.2f}" in report, report


@pytest.mark.slow
@needs_pipeline
def test_official_pipeline_and_our_babylm2025_blimp_task_agree_on_our_merged_checkpoint(merged, tmp_path, monkeypatch):
    """The unmodified pipeline (babymerge not importable) and
    ``--model babymerge`` on ``babylm2025_blimp_<UID>`` score the same pairs of the same merged
    checkpoint alike: the same sums per sentence (the pipeline writes the chosen sentence; we log
    both log-likelihoods), the same predictions, and the pipeline's accuracy as our
    ``acc_pipeline`` (ties as right; ``acc`` counts them wrong, ``ties`` says how many)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from babymerge.babylm.scoring import pipeline_prediction
    from babymerge.lm_eval_model import BabyMergeLM

    uid, rows = blimp_rows()
    data = tmp_path / "evaluation_data" / "full_eval" / "blimp_filtered"
    data.mkdir(parents=True)
    (data / f"{uid}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = (
        "import sys, runpy; sys.argv = ['run', '--backend', 'causal', '--task', 'blimp', '--model_path_or_name', "
        f"{str(merged)!r}, '--data_path', {str(data)!r}, '--save_predictions', '--batch_size', '1']; "
        "runpy.run_module('evaluation_pipeline.sentence_zero_shot.run', run_name='__main__')"
    )
    result = run_without_babymerge(tmp_path, code, PIPELINE)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "results" / Path(str(merged)).stem / "main" / "zero_shot" / "causal" / "blimp" / data.name
    theirs = [p["pred"] for p in json.loads((out / "predictions.json").read_text())[uid]["predictions"]]
    report = (out / "best_temperature_report.txt").read_text()

    monkeypatch.setenv("BABYMERGE_DATA", str(tmp_path / "evaluation_data"))
    task = f"babylm2025_blimp_{uid}"
    evaluated = lm_eval.simple_evaluate(
        model=BabyMergeLM(pretrained=str(merged), device="cpu"),
        tasks=[task],
        task_manager=TaskManager(include_path=str(REPO / "lm_eval_tasks"), include_defaults=False),
        log_samples=True,
    )
    samples = sorted(evaluated["samples"][task], key=lambda r: r["doc_id"])
    ours = [pipeline_prediction(s["doc"], [float(r[0][0]) for r in s["resps"]])["pred"] for s in samples]
    assert ours == theirs

    # and each sum equals the hand-built forward pass of "<image> " + sentence with the black image
    model = AutoModelForCausalLM.from_pretrained(merged).eval()
    tok = AutoTokenizer.from_pretrained(merged)
    for sample, row in zip(samples, rows):
        sums = [float(r[0][0]) for r in sample["resps"]]
        hand = [sentence_logprob(model, tok, row["sentence_good"]), sentence_logprob(model, tok, row["sentence_bad"])]
        assert sums == pytest.approx(hand, abs=1e-4)
    metrics = evaluated["results"][task]
    assert f"{uid}: {100 * metrics['acc_pipeline,none']:.2f}" in report, report
    ties = sum(float(s["resps"][0][0][0]) == float(s["resps"][1][0][0]) for s in samples)
    assert metrics["acc,none"] == pytest.approx(metrics["acc_pipeline,none"] - ties / len(samples))


# -- 2. training on the organisers' release as shipped -------------------------------------------------
@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A tiny fake of the BabyLM 2025 multimodal release: its file names, two-part 768-d cc_3M
    states, captions files as JSON lists of strings (the layout third-party loaders read)."""
    from babymerge.tokenization import train_bpe_tokenizer
    from demo.toy import synthetic_sentences

    root = tmp_path_factory.mktemp("release")
    (root / "text_only" / "train_50M").mkdir(parents=True)
    (root / "image_caption").mkdir()
    for i, name in enumerate(("childes.train", "simple_wiki.train")):
        (root / "text_only" / "train_50M" / name).write_text("\n".join(synthetic_sentences(150, seed=i)) + "\n")
    rng = np.random.default_rng(0)
    cc, ln = synthetic_sentences(60, seed=5), synthetic_sentences(30, seed=6)
    (root / "image_caption" / "cc_3M_captions.json").write_text(json.dumps(cc))
    (root / "image_caption" / "local_narr_captions.json").write_text(json.dumps(ln))
    np.save(root / "image_caption" / "cc_3M_dino_v2_states_1of2.npy", rng.standard_normal((35, 768), dtype=np.float32))
    np.save(root / "image_caption" / "cc_3M_dino_v2_states_2of2.npy", rng.standard_normal((25, 768), dtype=np.float32))
    np.save(root / "image_caption" / "local_narr_dino_v2_states.npy", rng.standard_normal((30, 768), dtype=np.float32))
    train_bpe_tokenizer(synthetic_sentences(500), vocab_size=300).save_pretrained(root / "tokenizer")
    return root


SMALL = ["model.num_layers=1", "model.hidden_size=32", "model.intermediate_size=64", "model.num_heads=2", "model.context_length=32",
         "epochs=1", "micro_batch_size=4", "global_batch_size=8", "log_every_steps=1"]  # fmt: skip


def test_release_config_packs_captions_with_the_prompt_and_reads_features_memory_mapped(release):
    from train.config import load_config
    from train.data import build_blocks
    from train.features import read_feature_file

    config = load_config(
        REPO / "train" / "configs" / "babylm2025_multimodal.yaml", [*SMALL, "data.cache_dir=" + str(release / "cache")]
    )
    cwd = os.getcwd()
    os.chdir(release)
    try:
        tok = AutoTokenizer.from_pretrained("tokenizer")
        data = build_blocks(config, tok)
        assert isinstance(read_feature_file(Path("image_caption/cc_3M_dino_v2_states_2of2.npy"))[0], np.memmap)
    finally:
        os.chdir(cwd)
    assert data.black.shape == (768,) and not data.black.any()  # zeros: the release ships no black-image feature
    cc = json.loads((release / "image_caption" / "cc_3M_captions.json").read_text())
    caption_blocks = [i for i in range(len(data)) if len(data.blocks[i]["images"]) and data.blocks[i]["images"][0] >= 0]
    first = data.blocks[caption_blocks[0]]
    expected = tok("<image> " + cc[0])["input_ids"] + [tok.eos_token_id]
    assert first["input_ids"][: len(expected)].tolist() == expected and first["images"][0] == 0
    rows = data.features.rows(np.array([34, 35, 60]))  # last row of part 1, first of part 2, first of local_narr
    parts = [
        np.load(release / "image_caption" / n)
        for n in ("cc_3M_dino_v2_states_1of2.npy", "cc_3M_dino_v2_states_2of2.npy", "local_narr_dino_v2_states.npy")
    ]
    np.testing.assert_array_equal(rows, np.stack([parts[0][34], parts[1][0], parts[2][0]]))


def test_release_with_a_missing_feature_row_names_both_counts(release, tmp_path):
    from train.config import load_config
    from train.data import load_multimodal

    np.save(tmp_path / "short.npy", np.zeros((24, 768), np.float32))
    config = load_config(None, [f"data.multimodal=[{{captions: {release}/image_caption/cc_3M_captions.json, "
                                f"features: [{release}/image_caption/cc_3M_dino_v2_states_1of2.npy, {tmp_path}/short.npy]}}]",
                                "model.feature_size=null"])  # fmt: skip
    with pytest.raises(BabyMergeError, match=r"has 60 captions but .* hold 59 feature rows \(35 \+ 24\)"):
        load_multimodal(config)


@pytest.mark.slow
def test_release_trains_with_the_deepspeed_launcher_and_records_precomputed_features(release, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sets = [
        *SMALL,
        f"deepspeed={REPO / 'train' / 'configs' / 'ds_zero2.json'}",
        f"output_dir={tmp_path / 'run'}",
        f"data.cache_dir={tmp_path / 'cache'}",
    ]
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port", str(port), "--module", "train",
           "--config", str(REPO / "train" / "configs" / "babylm2025_multimodal.yaml"), *[a for s in sets for a in ("--set", s)]]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=release, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ckpt = tmp_path / "run" / "ckpt-ep1"
    config = json.loads((ckpt / "config.json").read_text())
    assert config["vision_config"]["hidden_size"] == 768 and config["image_features_source"] == "precomputed"
    assert config["precomputed_features"]["files"] == [
        "cc_3M_dino_v2_states_1of2.npy",
        "cc_3M_dino_v2_states_2of2.npy",
        "local_narr_dino_v2_states.npy",
    ]
    check_remote_code(ckpt)  # training checkpoints are self-contained too
    model = AutoModelForCausalLM.from_pretrained(ckpt)
    assert model.model.multi_modal_projector.linear_1.in_features == 768
    with pytest.raises(BabyMergeError, match="precomputed image features"):
        model.encode_images(images=[Image.new("RGB", (28, 28))])


@pytest.mark.slow
@needs_pipeline
def test_official_pipeline_winoground_reads_a_local_parquet_test_split_and_encodes_images_as_recorded(
    merged, toy, tmp_path
):
    """The pipeline reads images with ``datasets.load_dataset(images_path, split=image_split)``:
    a local folder works when it holds the test split as ``test-*.parquet`` with ``image_0`` /
    ``image_1`` image columns (docs/babylm2025.md says why other layouts fail). The pipeline then gives
    ``pixel_values`` from our processor; the checkpoint's own code encodes them with the recorded
    encoder and pooling."""
    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature

    from babymerge.data.synthetic_winoground import write_dataset

    source = write_dataset(tmp_path / "synthetic", n=3)
    items = [json.loads(line) for line in (source / "winoground.jsonl").read_text().splitlines()]
    columns = {
        "id": [it["id"] for it in items],
        "caption_0": [it["caption_0"] for it in items],
        "caption_1": [it["caption_1"] for it in items],
    }
    for key in ("image_0", "image_1"):
        columns[key] = [Image.open(source / it[key]).convert("RGB") for it in items]
    features = Features(
        {
            "id": Value("int64"),
            "caption_0": Value("string"),
            "caption_1": Value("string"),
            "image_0": ImageFeature(),
            "image_1": ImageFeature(),
        }
    )
    (tmp_path / "images").mkdir()
    Dataset.from_dict(columns, features=features).to_parquet(str(tmp_path / "images" / "test-00000-of-00001.parquet"))
    rows = []  # the pipeline's winoground_filtered rows: one image, its own caption first
    for idx, it in enumerate(items):
        for key, good, bad in (("image_0", "caption_0", "caption_1"), ("image_1", "caption_1", "caption_0")):
            rows.append({"caption_0": it[good], "caption_1": it[bad], "image_idx": idx, "image_key": key,
                         "collapsed_tag": it["collapsed_tag"], "tag": it["tag"], "secondary_tag": it.get("secondary_tag", "")})  # fmt: skip
    data = tmp_path / "winoground_filtered"
    data.mkdir()
    (data / "winoground.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = (
        "import sys, runpy; sys.argv = ['run', '--backend', 'causal', '--task', 'winoground', '--model_path_or_name', "
        f"{str(merged)!r}, '--data_path', {str(data)!r}, '--images_path', {str(tmp_path / 'images')!r}, '--image_split', 'test', "
        "'--save_predictions', '--batch_size', '1']; runpy.run_module('evaluation_pipeline.sentence_zero_shot.run', run_name='__main__')"
    )
    result = run_without_babymerge(tmp_path, code, PIPELINE)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "results" / Path(str(merged)).stem / "main" / "zero_shot" / "causal" / "winoground" / data.name
    preds = [p["pred"] for p in json.loads((out / "predictions.json").read_text())["winoground"]["predictions"]]

    model = AutoModelForCausalLM.from_pretrained(merged).eval()
    tok = AutoTokenizer.from_pretrained(merged)
    encoder = Dinov2Model.from_pretrained(toy.encoder).eval()
    processor = AutoImageProcessor.from_pretrained(toy.encoder)
    ours = []
    for r in rows:
        pixels = processor(images=[columns[r["image_key"]][r["image_idx"]]], return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            feature = (
                encoder(pixel_values=pixels, output_hidden_states=True).hidden_states[-2][0, 1:].mean(0)
            )  # the recorded pooling
        s0, s1 = (sentence_logprob(model, tok, r[c], feature) for c in ("caption_0", "caption_1"))
        ours.append(r["caption_0"] if s0 >= s1 else r["caption_1"])
    assert preds == ours
