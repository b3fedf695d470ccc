"""``python -m train.finetune``: fine-tuning in the project on the pipeline's
GLUE files, in the pipeline's results layout.

The learnable task: rte-format pairs whose label follows from the text by a rule (the second
text's last word, a noun, is one of the first half of the toy grammar's nouns). A tiny model
learns it in a few epochs at a raised learning rate, given alike to ours and to the pipeline's
``finetune.run`` (a subprocess, babymerge not importable)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from train.finetune import MARKER, main

from conftest import PIPELINE, REPO, needs_pipeline
from helpers.data import write_rule_task
from helpers.pipeline import COLLATE_CHECK, read_results, run_without_babymerge

SETTINGS = ["--tasks", "rte", "--learning-rate", "1e-3", "--batch-size", "8", "--epochs", "6"]


@pytest.mark.slow
@needs_pipeline
def test_learns_a_rule_task_as_the_pipelines_finetuner_does(merged, tmp_path):
    data = write_rule_task(tmp_path)
    labels = [json.loads(line)["label"] for line in (data / "full_eval/glue_filtered/rte.valid.jsonl").open()]
    assert 0.25 < sum(labels) / len(labels) < 0.75  # both labels well represented
    assert main(["--model", str(merged), "--data", str(data), "--out", str(tmp_path / "ours"), *SETTINGS]) == 0
    ours, our_scores = read_results(tmp_path / "ours", merged.stem)

    folder = data / "full_eval" / "glue_filtered"
    argv = ["run", "--model_name_or_path", str(merged), "--task", "rte", "--num_labels", "2",
            "--train_data", str(folder / "rte.train.jsonl"), "--valid_data", str(folder / "rte.valid.jsonl"),
            "--predict_data", str(folder / "rte.valid.jsonl"), "--take_final", "--padding_side", "left",
            "--num_epochs", "6", "--batch_size", "8", "--learning_rate", "1e-3", "--metrics", "accuracy", "f1", "mcc",
            "--metric_for_valid", "accuracy", "--results_dir", str(tmp_path / "theirs")]  # fmt: skip
    code = f"import runpy, sys\nsys.argv = {argv!r}\nrunpy.run_module('evaluation_pipeline.finetune.run', run_name='__main__')\n"
    result = run_without_babymerge(tmp_path, code, PIPELINE)
    assert result.returncode == 0, result.stderr[-3000:]
    theirs, their_scores = read_results(tmp_path / "theirs", merged.stem)

    agree = sum(a == b for a, b in zip(ours, theirs)) / len(ours)
    print(f"ours {our_scores} theirs {their_scores} prediction agreement {agree}")
    assert our_scores["accuracy"] == sum(p == y for p, y in zip(ours, labels)) / len(labels)
    assert our_scores["accuracy"] >= 0.9 and their_scores["accuracy"] >= 0.9
    assert abs(our_scores["accuracy"] - their_scores["accuracy"]) <= 0.1  # the two recipes agree in outcome
    assert set(our_scores) == set(their_scores) == {"accuracy", "f1", "mcc"}

    # the pipeline's collate_preds reads our predictions file as it reads its own
    ours_file = tmp_path / "ours" / merged.stem / "main" / "finetune" / "rte" / "predictions.json"
    collated = subprocess.run(
        [sys.executable, "-c", COLLATE_CHECK, str(ours_file)], capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PIPELINE)}, cwd=tmp_path,
    )  # fmt: skip
    assert collated.returncode == 0, collated.stderr[-2000:] + collated.stdout
    assert json.loads(collated.stdout.strip().splitlines()[-1]) == ["rte"]


@pytest.mark.slow
def test_two_deepspeed_ranks_learn_the_rule_task_as_one_process_does(merged, tmp_path):
    """The real launcher, 2 CPU ranks, ZeRO-2 (pre-training's config): each rank takes half of
    every batch of the one-process run; both reach high accuracy and mostly agree (dropout
    masks differ, so not every prediction need)."""
    data = write_rule_task(tmp_path, n_train=64, n_valid=32)
    common = ["--model", str(merged), "--data", str(data), *SETTINGS]
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    launcher = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port", port]
    zero2 = str(REPO / "train" / "configs" / "ds_zero2.json")
    proc = subprocess.run([*launcher, "--module", "train.finetune", *common, "--out", str(tmp_path / "two"),
                           "--deepspeed", zero2], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "DS_ACCELERATOR": "cpu"})  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "rte: 2 ranks, DeepSpeed ZeRO-2" in proc.stderr
    assert not list(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"))
    one, one_scores = read_results(tmp_path / "one", merged.stem)
    two, two_scores = read_results(tmp_path / "two", merged.stem)
    labels = [json.loads(line)["label"] for line in (data / "full_eval/glue_filtered/rte.valid.jsonl").open()]
    assert two_scores["accuracy"] == sum(p == y for p, y in zip(two, labels)) / len(labels)
    agree = sum(a == b for a, b in zip(one, two)) / len(one)
    print(f"one process {one_scores}, two ranks {two_scores}, agreement {agree}")
    assert one_scores["accuracy"] >= 0.9 and two_scores["accuracy"] >= 0.9 and agree >= 0.9
    assert sorted(p.name for p in (tmp_path / "two").rglob("*") if p.is_file()) == sorted(
        p.name for p in (tmp_path / "one").rglob("*") if p.is_file()
    )


def test_a_finished_task_is_not_redone_and_foreign_results_are_kept(merged, tmp_path, capsys):
    data = write_rule_task(tmp_path, n_train=16, n_valid=8)
    out = tmp_path / "out"
    argv = ["--model", str(merged), "--data", str(data), "--out", str(out), "--tasks", "rte", "--epochs", "1"]
    assert main(argv) == 0
    folder = out / merged.stem / "main" / "finetune" / "rte"
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert set(before) == {"predictions.json", "results.txt", MARKER}
    assert main(argv) == 0
    assert "rte: done already" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before

    # a task folder this program did not write (the pipeline's own run, say) is refused, kept
    # a second task beside the finished one: only it is run (mnli: three labels, accuracy only)
    glue = data / "full_eval" / "glue_filtered"
    for split in ("train", "valid"):
        rows = [json.loads(line) for line in (glue / f"rte.{split}.jsonl").read_text().splitlines()]
        mnli = [{"premise": r["sentence1"], "hypothesis": r["sentence2"], "label": i % 3} for i, r in enumerate(rows)]
        (glue / f"mnli.{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mnli))
    assert main([*argv[:-3], "rte,mnli", "--epochs", "1"]) == 0
    assert "rte: done already" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
    preds, scores = read_results(out, merged.stem, "mnli")
    assert len(preds) == 8 and set(preds) <= {0, 1, 2} and set(scores) == {"accuracy"}

    # the finished task with other settings: refused, kept
    assert main([*argv, "--learning-rate", "1e-4"]) == 2
    assert "fine-tuned with other settings" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before

    (folder / MARKER).unlink()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds results this program did not write" in err[0]
    assert (folder / "predictions.json").is_file()


def test_load_time_merge_gives_the_disk_merges_predictions(toy, merged, tmp_path):
    data = write_rule_task(tmp_path, n_train=24, n_valid=16)
    common = ["--data", str(data), "--tasks", "rte", "--learning-rate", "1e-3", "--batch-size", "8", "--epochs", "2"]
    assert main(["--model", str(merged), "--out", str(tmp_path / "disk"), *common]) == 0
    assert main(["--model", str(toy.mm), "--lang", str(toy.lang), "--alpha", "0.3", "--name", "loadtime",
                 "--out", str(tmp_path / "mem"), *common]) == 0  # fmt: skip
    disk, disk_scores = read_results(tmp_path / "disk", merged.stem)
    mem, mem_scores = read_results(tmp_path / "mem", "loadtime")
    assert mem == disk
    assert mem_scores == pytest.approx(disk_scores, abs=1e-9)


@pytest.mark.parametrize(
    "change, match",
    [
        (["--tasks", "rte,cola"], "unknown GLUE task 'cola'"),
        (["--tasks", "mnli"], "no such mnli file"),
        (["--alpha", "0.5"], "need --lang"),
    ],
)
def test_bad_input_is_one_line_exit_2(merged, tmp_path, capsys, change, match):
    """Refused before the model is loaded: one line on stderr, exit 2, nothing written."""
    data = write_rule_task(tmp_path, n_train=8, n_valid=4)
    argv = ["--model", str(merged), "--data", str(data), "--out", str(tmp_path / "out"), "--tasks", "rte", *change]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], lines
    assert not (tmp_path / "out").exists()
