"""``python -m train.finetune_sweep``: GLUE across alpha (and word-count checkpoints) as rows of
the sweep's results CSV, with its plots.

References: alpha 0 of the linear merge is the multimodal model itself, so that cell's
predictions are those of ``train.finetune --model MM`` (same seed); each row's value is the
task's results file, the accuracy is recounted from the predictions and the labels, and its
stderr is the sample standard error written out by hand."""

import csv
import json
import math

import pytest

from train.finetune import main as finetune
from train.finetune_sweep import main

from helpers.data import write_rule_task
from helpers.pipeline import read_results

SETTINGS = ["--tasks", "rte", "--learning-rate", "1e-3", "--batch-size", "8", "--epochs", "2"]


def rows(out):
    with (out / "results.csv").open() as f:
        return list(csv.DictReader(f))


def test_glue_by_alpha_rows_and_plots(toy, tmp_path, capsys):
    data = write_rule_task(tmp_path, n_train=24, n_valid=16)
    labels = [json.loads(line)["label"] for line in (data / "full_eval/glue_filtered/rte.valid.jsonl").open()]
    out = tmp_path / "sweep"
    argv = ["--mm", str(toy.mm), "--lang", str(toy.lang), "--data", str(data), "--out", str(out), *SETTINGS]
    assert main([*argv, "--alphas", "0,1"]) == 0
    table = rows(out)
    assert {(r["checkpoint"], r["alpha"], r["task"], r["metric"], r["filter"]) for r in table} == {
        ("mm", a, "rte", m, "none") for a in ("0.0", "1.0") for m in ("accuracy", "f1", "mcc")
    }
    for alpha in ("0", "1"):
        preds, scores = read_results(out / "results", f"mm_alpha{alpha}")
        mine = {r["metric"]: r for r in table if r["alpha"] == f"{alpha}.0"}
        assert {m: float(r["value"]) for m, r in mine.items()} == scores
        p = sum(a == b for a, b in zip(preds, labels)) / len(labels)
        assert float(mine["accuracy"]["value"]) == p
        assert float(mine["accuracy"]["stderr"]) == pytest.approx(math.sqrt(p * (1 - p) / (len(labels) - 1)))
        assert mine["f1"]["stderr"] == ""
    assert (out / "score_vs_alpha.png").stat().st_size > 0 and not (out / "score_vs_words.png").exists()

    # alpha 0 is the multimodal model: the same predictions as fine-tuning it alone
    assert finetune(["--model", str(toy.mm), "--data", str(data), "--out", str(tmp_path / "alone"), *SETTINGS]) == 0
    assert read_results(out / "results", "mm_alpha0")[0] == read_results(tmp_path / "alone", "mm")[0]

    # a rerun adds an alpha; the finished cells are not redone, their rows kept
    capsys.readouterr()
    assert main([*argv, "--alphas", "0,0.5"]) == 0
    assert "rte: done already" in capsys.readouterr().err
    assert sorted({r["alpha"] for r in rows(out)}) == ["0.0", "0.5", "1.0"]


def test_word_count_checkpoints_give_words_seen_and_the_words_plot(toy, tmp_path):
    data = write_rule_task(tmp_path, n_train=16, n_valid=8)
    for run, ckpt in (("mm_run", toy.mm), ("lang_run", toy.lang)):
        for name in ("chck_1M", "chck_2M"):
            (tmp_path / run).mkdir(exist_ok=True)
            (tmp_path / run / name).symlink_to(ckpt)
    out = tmp_path / "sweep"
    argv = ["--mm", str(tmp_path / "mm_run"), "--lang", str(tmp_path / "lang_run"), "--checkpoints", "words",
            "--alphas", "0.5", "--data", str(data), "--out", str(out), *SETTINGS[:-1], "1"]  # fmt: skip
    assert main(argv) == 0
    table = rows(out)
    assert {(r["checkpoint"], r["words_seen"]) for r in table} == {("chck_1M", "1000000"), ("chck_2M", "2000000")}
    assert (out / "score_vs_words.png").stat().st_size > 0


def test_bad_alphas_are_one_line(toy, tmp_path, capsys):
    data = write_rule_task(tmp_path, n_train=8, n_valid=4)
    argv = ["--mm", str(toy.mm), "--lang", str(toy.lang), "--alphas", "0,2", "--data", str(data),
            "--out", str(tmp_path / "sweep"), *SETTINGS]  # fmt: skip
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--alphas must be numbers in [0, 1]" in lines[0]
    assert not (tmp_path / "sweep").exists()
