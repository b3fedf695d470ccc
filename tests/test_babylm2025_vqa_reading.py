"""BabyLM 2025 VQA and reading as lm-eval tasks, checked against independent references.

VQA: the official pipeline loads VQA images from the hub (``--images_path HuggingFaceM4/VQAv2``),
so it cannot run here; its scoring (sentence ``question + " " + answer``, the tokens of
``" " + answer`` found by character offsets, summed log-probabilities, first argmax) is rebuilt
by hand with one plain forward pass of the model per candidate, and compared with what
``lm_eval --model babymerge`` logs for the same items and images.

Reading: the official pipeline itself (``python -m evaluation_pipeline.reading.run``, unmodified,
as a subprocess) scores a small CSV in the exact columns with a tiny plain ``LlamaForCausalLM``;
our per-row surprisals must equal its ``predictions.json``, and our ``rt``/``spr`` must equal
what its ``collate_preds._calculate_reading_results`` computes from those predictions.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from babymerge import BabyMergeError
from babymerge.babylm.reading import reading_scores
from babymerge.babylm.sizes import FULL_SIZES
from babymerge.babylm.submission2025 import build
from demo.babylm2025_data import write_reading_csv, write_vqa

from conftest import PIPELINE, REPO, load_task_module, needs_pipeline, run_lm_eval

pytestmark = pytest.mark.slow  # the official pipeline and lm_eval run as subprocesses
vqa = load_task_module("babylm2025/vqa")
reading = load_task_module("babylm2025/reading")


def lm_eval(model_args, tasks, include, data, out):
    run_lm_eval(model_args, tasks, out, data, include)
    samples = {}
    for path in out.rglob("samples_*.jsonl"):
        task = path.name[len("samples_") :].rsplit("_", 1)[0]
        samples[task] = sorted((json.loads(line) for line in path.read_text().splitlines()), key=lambda s: s["doc_id"])
    return samples, json.loads(next(out.rglob("results_*.json")).read_text())["results"]


# -- VQA -------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vqa_data(tmp_path_factory):
    """A VQAv2-like image set (save_to_disk) and pipeline-style rows pointing into it, one with a tie."""
    root = tmp_path_factory.mktemp("evaluation_data")
    return root, write_vqa(root)


def hand_vqa_scores(checkpoint, image, question, answers):
    """The pipeline's causal scoring of our checkpoint, by hand: its processor writes the authors'
    prompt, ``"<image> " + question + " " + answer``, tokenised whole, the image token filled by
    the image; summed log-probabilities of the tokens that overlap ``" " + answer``."""
    model, tok = AutoModelForCausalLM.from_pretrained(checkpoint), AutoTokenizer.from_pretrained(checkpoint)
    scores = []
    with torch.no_grad():
        features = model.encode_images(images=[image.convert("RGB")])
        for answer in answers:
            prompt = "<image> " + question + " " + answer
            encoding = tok(prompt, return_offsets_mapping=True)
            ids = torch.tensor([encoding["input_ids"]])
            assert ids[0, 0] == model.config.image_token_id
            logprobs = model(input_ids=ids, image_features=features).logits[0, :-1].log_softmax(-1)
            start = len(prompt) - len(" " + answer)
            scored = [j for j, (_, end) in enumerate(encoding["offset_mapping"]) if j > 0 and end > start]
            scores.append(sum(float(logprobs[j - 1, ids[0, j]]) for j in scored))  # token j is predicted at j - 1
    return scores


def test_vqa_equals_hand_built_pipeline_scoring(toy, vqa_data, tmp_path):
    root, rows = vqa_data
    samples, results = lm_eval(
        f"pretrained={toy.mm}",
        "babylm2025_vqa_vqa",
        REPO / "lm_eval_tasks" / "babylm2025" / "vqa",
        root,
        tmp_path / "out",
    )
    samples = samples["babylm2025_vqa_vqa"]
    assert len(samples) == len(rows)
    images = datasets.load_from_disk(str(root / "vqav2_validation"))
    acc, acc_pipeline, ties = [], [], []
    for sample, row in zip(samples, rows):
        answers = [row["target_ans"], *row["distractors"]]
        expected = hand_vqa_scores(toy.mm, images[row["idx_in_hf_dataset"]]["image"], row["question"], answers)
        got = [float(resp[0][0]) for resp in sample["resps"]]
        assert got == pytest.approx(expected, abs=1e-4)
        best_other = max(expected[1:])
        acc.append(float(expected[0] > best_other + 1e-6))
        acc_pipeline.append(float(expected[0] > best_other - 1e-6))
        ties.append(acc_pipeline[-1] - acc[-1])
        assert (sample["acc"], sample["acc_pipeline"], sample["ties"]) == (acc[-1], acc_pipeline[-1], ties[-1])
        assert sample["doc"]["preds"] == [" " + a for a in answers]  # what the pipeline writes as `pred`
    assert samples[2]["ties"] == 1.0 and samples[2]["acc"] == 0.0 and samples[2]["acc_pipeline"] == 1.0
    # the submission file's VQA entries: the pipeline's rule (first argmax) on the hand-built scores
    submission, missing = build(
        tmp_path / "out", "mm", sizes={"full": {**FULL_SIZES, "vqa": len(rows)}}, allow_partial=True
    )
    expected_preds = []
    for row in rows:
        answers = [row["target_ans"], *row["distractors"]]
        scores = hand_vqa_scores(toy.mm, images[row["idx_in_hf_dataset"]]["image"], row["question"], answers)
        expected_preds.append(" " + answers[scores.index(max(scores))])
    assert submission["vqa"] == {
        "vqa": {"predictions": [{"id": f"vqa_{n}", "pred": p} for n, p in enumerate(expected_preds)]}
    }
    assert "winoground/winoground" in missing and "vqa/vqa" not in missing
    metrics = results["babylm2025_vqa_vqa"]
    assert metrics["acc,none"] == pytest.approx(np.mean(acc)) and metrics["acc_pipeline,none"] == pytest.approx(
        np.mean(acc_pipeline)
    )
    assert metrics["ties,none"] == pytest.approx(np.mean(ties))


def test_vqa_images_stay_undecoded_in_the_requests(toy, vqa_data, monkeypatch):
    """lm-eval holds every request's image until the run ends: the adapter decodes a lazily opened
    picture into a copy it drops, so the task's images are never all decoded at once. Each picture
    is encoded once (its 8 candidates share it), and the scores equal those of decoded pictures."""
    from lm_eval.api.instance import Instance

    from babymerge.lm_eval_model import BabyMergeLM

    root, rows = vqa_data
    monkeypatch.setenv("BABYMERGE_DATA", str(root))
    docs = list(vqa.load_vqa()["test"])

    def requests(decode: bool):
        out, images = [], []
        for i, doc in enumerate(docs):
            (image,) = vqa.doc_to_image(doc)
            if decode:
                image.load()
            images.append(image)
            args = [(doc["question"], " " + answer, {"visual": [image]}) for answer in vqa.doc_to_choice(doc)]
            out += [Instance("loglikelihood", doc, a, i) for a in args]
        return out, images

    lazy_requests, lazy_images = requests(decode=False)
    assert all(image.tile for image in lazy_images)  # opened, not decoded
    lm = BabyMergeLM(pretrained=str(toy.mm), device="cpu")
    lazy = lm.loglikelihood(lazy_requests)
    assert all(image.tile for image in lazy_images)  # still not decoded after scoring
    assert lm.images_encoded == len({row["idx_in_hf_dataset"] for row in rows})
    decoded_requests, decoded_images = requests(decode=True)
    assert not any(image.tile for image in decoded_images)
    assert BabyMergeLM(pretrained=str(toy.mm), device="cpu").loglikelihood(decoded_requests) == lazy


def test_vqa_ties_by_hand():
    # the pipeline's torch.max picks the first maximum: the right answer (candidate 0) wins a tie
    assert vqa.process_results({}, [(-1.0, False), (-1.0, False), (-3.0, False)]) == {
        "acc": 0.0,
        "acc_pipeline": 1.0,
        "ties": 1.0,
    }
    assert vqa.process_results({}, [(-0.5, False), (-1.0, False), (-3.0, False)]) == {
        "acc": 1.0,
        "acc_pipeline": 1.0,
        "ties": 0.0,
    }
    assert vqa.process_results({}, [(-2.0, False), (-1.0, False), (-3.0, False)]) == {
        "acc": 0.0,
        "acc_pipeline": 0.0,
        "ties": 0.0,
    }


def test_vqa_bad_input(vqa_data, tmp_path, monkeypatch):
    root, rows = vqa_data
    monkeypatch.setenv("BABYMERGE_DATA", str(tmp_path))
    with pytest.raises(BabyMergeError, match="no VQA files"):
        vqa.load_vqa()
    (tmp_path / "full_eval" / "vqa_filtered").mkdir(parents=True)
    bad = {**rows[0], "idx_in_hf_dataset": 6}
    (tmp_path / "full_eval" / "vqa_filtered" / "a.jsonl").write_text(json.dumps(bad) + "\n")
    with pytest.raises(BabyMergeError, match="VQA images not found.*save_to_disk"):
        vqa.load_vqa()
    (tmp_path / "vqav2_validation").symlink_to(root / "vqav2_validation")
    with pytest.raises(BabyMergeError, match="idx_in_hf_dataset=6 is outside"):
        vqa.load_vqa()
    (tmp_path / "full_eval" / "vqa_filtered" / "a.jsonl").write_text(json.dumps({"question": "Why?"}) + "\n")
    with pytest.raises(BabyMergeError, match=r"a.jsonl, line 1: VQA row needs"):
        vqa.load_vqa()


# -- reading ---------------------------------------------------------------------------------------------------------
def run_pipeline(args, cwd):
    result = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(PIPELINE)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def pipeline_reading_scores(predictions: Path, csv: Path, cwd: Path) -> dict:
    """collate_preds' own ΔR² function on the pipeline's predictions (imported in a subprocess)."""
    code = (
        "import json, pathlib, sys; from evaluation_pipeline.collate_preds import _calculate_reading_results as f; "
        "print(json.dumps(f(json.load(open(sys.argv[1])), pathlib.Path(sys.argv[2]))))"
    )
    return json.loads(run_pipeline(["-c", code, str(predictions), str(csv)], cwd).strip().splitlines()[-1])


@needs_pipeline
@pytest.mark.parametrize("which", ["lang", "mm"])
def test_reading_equals_the_pipeline(toy, tmp_path, which):
    """On the plain LlamaForCausalLM twin and on our BabyLLaVA checkpoint (which the pipeline
    loads with our processor: ``"<image> " + item``, the black image; a word's own tokens
    with ``add_special_tokens=False``; ours puts the black image in front likewise)."""
    model = getattr(toy, which)
    data = tmp_path / "evaluation_data"
    csv = data / "full_eval" / "reading" / "reading_data.csv"
    frame = write_reading_csv(csv)
    run_pipeline(
        [
            "-m",
            "evaluation_pipeline.reading.run",
            "--model_path_or_name",
            str(model),
            "--backend",
            "causal",
            "--data_path",
            str(csv),
            "--output_dir",
            str(tmp_path / "pipeline"),
        ],
        tmp_path,
    )
    theirs_path = (
        tmp_path / "pipeline" / Path(model).stem / "main" / "zero_shot" / "causal" / "reading" / "predictions.json"
    )
    theirs = json.loads(theirs_path.read_text())["reading"]["predictions"]
    assert len(theirs) == len(frame)

    samples, results = lm_eval(
        f"pretrained={model}",
        "babylm2025_reading_reading",
        REPO / "lm_eval_tasks" / "babylm2025" / "reading",
        data,
        tmp_path / "ours",
    )
    ours = samples["babylm2025_reading_reading"]
    assert [s["doc"]["index"] for s in ours] == [t["id"] for t in theirs]
    np.testing.assert_allclose([s["rt"]["pred"] for s in ours], [t["pred"] for t in theirs], rtol=1e-5)
    prev_ours = np.array([np.nan if s["rt"]["prev_pred"] is None else s["rt"]["prev_pred"] for s in ours])
    np.testing.assert_allclose(
        prev_ours, [t["prev_pred"] for t in theirs], rtol=1e-5
    )  # NaN where there is no previous word
    assert np.isnan(prev_ours).sum() == 2 * 8  # the first two words of each sentence

    expected = pipeline_reading_scores(theirs_path, csv, tmp_path)
    # the ΔR² computation alone, on the pipeline's own surprisals: the same numbers
    assert reading_scores(
        frame.assign(pred=[t["pred"] for t in theirs], prev_pred=[t["prev_pred"] for t in theirs])
    ) == pytest.approx(expected, abs=1e-10)
    metrics = results["babylm2025_reading_reading"]
    assert metrics["rt,none"] == pytest.approx(expected["rt"], abs=1e-5) and metrics["spr,none"] == pytest.approx(
        expected["spr"], abs=1e-5
    )


def test_reading_bad_input(tmp_path, monkeypatch):
    monkeypatch.setenv("BABYMERGE_DATA", str(tmp_path))
    with pytest.raises(BabyMergeError, match="reading_data.csv not found"):
        reading.load_reading("fast_eval/reading")
    frame = write_reading_csv(tmp_path / "fast_eval" / "reading" / "reading_data.csv", n_sentences=1)
    frame.drop(columns=["prev_length"]).to_csv(tmp_path / "fast_eval" / "reading" / "reading_data.csv", index=False)
    with pytest.raises(BabyMergeError, match=r"missing columns \['prev_length'\]"):
        reading.load_reading("fast_eval/reading")
