"""`babymerge submit`: BabyLM 2024 prediction files from real lm_eval --log_samples output."""

import gzip
import json
import os
import shutil
import subprocess
import sys

import pytest

from babymerge import BabyMergeError
from babymerge.babylm.submission2024 import submit

from conftest import BLIMP, needs_blimp
from helpers.commands import lm_eval_command

PARADIGMS = {"anaphor_gender_agreement": 7, "determiner_noun_agreement_2": 3, "wh_island": 5}
pytestmark = [needs_blimp, pytest.mark.slow]  # its module fixture runs lm_eval


@pytest.fixture(scope="module")
def results(toy, tmp_path_factory):
    """A filtered-BLiMP data folder (3 paradigms) and the lm_eval samples of the merged model on it."""
    root = tmp_path_factory.mktemp("submission")
    data = root / "evaluation_data"
    (data / "blimp_filtered").mkdir(parents=True)
    for uid, n in PARADIGMS.items():
        lines = (BLIMP / f"{uid}.jsonl").read_text().splitlines()[:n]
        (data / "blimp_filtered" / f"{uid}.jsonl").write_text("\n".join(lines) + "\n")
    cmd = lm_eval_command(f"pretrained={toy.mm}", [f"blimp_filtered_{u}" for u in PARADIGMS], out=root / "results")
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "BABYMERGE_DATA": str(data)})
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "results", data


def test_prediction_file_matches_the_pipeline_format(results, tmp_path):
    res, data = results
    paths = submit(res, "mm", tmp_path / "out", data_dir=data, allow_partial=True)
    assert paths["predictions"].name == "mm_textonly_predictions.json.gz"
    preds = json.loads(gzip.decompress(paths["predictions"].read_bytes()))
    assert set(preds) == {"blimp"} and set(preds["blimp"]) == set(PARADIGMS)
    for uid, n in PARADIGMS.items():
        entries = preds["blimp"][uid]["predictions"]
        assert [e["id"] for e in entries] == [f"{uid}_{i}" for i in range(n)]
        samples = next(res.rglob(f"samples_blimp_filtered_{uid}_*.jsonl")).read_text().splitlines()
        for entry, sample in zip(entries, sorted(map(json.loads, samples), key=lambda s: s["doc_id"])):
            good, bad = (float(r[0][0]) for r in sample["resps"])
            expected = " " + (sample["doc"]["sentence_good"] if good >= bad else sample["doc"]["sentence_bad"])
            assert entry["pred"] == expected
    summary = json.loads(paths["summary"].read_text())
    assert "glue/cola" in summary["missing"] and "blimp_supplement/hypernym" in summary["missing"]
    assert "acc,none" in summary["scores"][f"blimp_filtered_{next(iter(PARADIGMS))}"]


def test_cli_refuses_a_partial_submission_without_the_flag(results, tmp_path):
    res, data = results
    cmd = [
        sys.executable,
        "-m",
        "babymerge",
        "submit",
        "--results",
        str(res),
        "--model",
        "mm",
        "--out",
        str(tmp_path / "out"),
        "--data",
        str(data),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert (
        result.returncode == 2
        and "lacks" in result.stderr
        and "glue/cola" in result.stderr
        and "--allow-partial" in result.stderr
    )
    assert not (tmp_path / "out" / "mm_textonly_predictions.json.gz").exists()
    result = subprocess.run(cmd + ["--allow-partial"], capture_output=True, text=True)
    assert result.returncode == 0 and "partial submission" in result.stdout


def test_rejections(results, tmp_path):
    res, data = results
    with pytest.raises(BabyMergeError, match="holds results of .*mm.*not of model 'other-model'"):
        submit(res, "other-model", tmp_path / "a", data_dir=data, allow_partial=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BabyMergeError, match="no lm-eval samples"):
        submit(tmp_path / "empty", "mm", tmp_path / "b", data_dir=data, allow_partial=True)
    dup = tmp_path / "dup"
    shutil.copytree(res, dup)
    samples = next(dup.rglob("samples_blimp_filtered_wh_island_*.jsonl"))
    lines = samples.read_text().splitlines()
    samples.write_text("\n".join(lines + lines[:1]) + "\n")
    with pytest.raises(BabyMergeError, match="duplicated doc_id"):
        submit(dup, "mm", tmp_path / "c", data_dir=data, allow_partial=True)
    short = tmp_path / "short"
    shutil.copytree(res, short)
    samples = next(short.rglob("samples_blimp_filtered_wh_island_*.jsonl"))
    samples.write_text("\n".join(samples.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(BabyMergeError, match=r"blimp/wh_island: 4 predictions for 5 lines .*--limit"):
        submit(short, "mm", tmp_path / "d", data_dir=data, allow_partial=True)
    assert not any((tmp_path / d).exists() and any((tmp_path / d).iterdir()) for d in "abcd")


def test_model_must_be_a_name_not_a_path(results, tmp_path):
    res, data = results
    for model in (str(tmp_path / "elsewhere" / "mm"), "../mm", "sub/mm", ""):
        with pytest.raises(BabyMergeError, match=r"--model .* is a path; give the model's name"):
            submit(res, model, tmp_path / "out", data_dir=data, allow_partial=True)
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "out").exists()
    cmd = [sys.executable, "-m", "babymerge", "submit", "--results", str(res), "--model", str(tmp_path / "abs" / "mm"),
           "--out", str(tmp_path / "out"), "--data", str(data), "--allow-partial"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert (
        result.returncode == 2
        and result.stderr.startswith("babymerge: error: --model")
        and result.stderr.count("\n") == 1
    )
    assert not (tmp_path / "abs").exists() and not (tmp_path / "out").exists()


def test_results_without_results_json_are_refused(results, tmp_path):
    """Without results_*.json nothing says which model made the samples: a wrong --model must not pass."""
    res, data = results
    bare = tmp_path / "bare"
    shutil.copytree(res, bare)
    for path in bare.rglob("results_*.json"):
        path.unlink()
    for model in ("mm", "other-model"):
        with pytest.raises(
            BabyMergeError, match=r"samples_blimp_filtered_.*\.jsonl has no results_.*\.json beside it.*--output_path"
        ):
            submit(bare, model, tmp_path / "out", data_dir=data, allow_partial=True)
    assert not (tmp_path / "out").exists()


def test_a_subtask_without_its_data_file_is_refused(results, tmp_path):
    res, data = results
    partial = tmp_path / "data"
    shutil.copytree(data, partial)
    (partial / "blimp_filtered" / "wh_island.jsonl").unlink()
    with pytest.raises(
        BabyMergeError,
        match=r"blimp/wh_island: no data file .*wh_island.jsonl to check samples_blimp_filtered_wh_island_",
    ):
        submit(res, "mm", tmp_path / "out", data_dir=partial, allow_partial=True)
    assert not (tmp_path / "out").exists()


def test_malformed_samples_lines_are_named_by_file_and_line(results, tmp_path):
    res, data = results
    for n, (damage, message) in enumerate([
        (lambda doc: '{"doc_id": 1, "resps": [[["-3.5", ', r"line 2 is not JSON"),
        (lambda doc: json.dumps({k: v for k, v in doc.items() if k != "resps"}), r"line 2 has no 'resps' field"),
        (lambda doc: json.dumps({**doc, "resps": []}), r"line 2 is not an lm-eval loglikelihood sample"),
    ]):  # fmt: skip
        copy = tmp_path / f"res{n}"
        shutil.copytree(res, copy)
        samples = next(copy.rglob("samples_blimp_filtered_wh_island_*.jsonl"))
        lines = samples.read_text().splitlines()
        lines[1] = damage(json.loads(lines[1]))
        samples.write_text("\n".join(lines) + "\n")
        with pytest.raises(BabyMergeError, match=rf"samples_blimp_filtered_wh_island_.*\.jsonl {message}"):
            submit(copy, "mm", tmp_path / "out", data_dir=data, allow_partial=True)
    assert not (tmp_path / "out").exists()
