"""The GLUE task table of ``train.glue`` against the official 2025 pipeline:
its dataset reader's texts and labels, its ``eval_finetuning.sh`` per-task settings and its
``finetune/run.py`` defaults; bad task files refused in one line naming file and line."""

import json
import re
import subprocess
import sys

import pytest
import torch

from babymerge.errors import BabyMergeError
from train.glue import RECIPE, TASKS, glue_task, optimizer_and_schedule, read_examples, task_file

from conftest import PIPELINE, needs_pipeline

FIELDS = ("question", "passage", "answer", "paragraph", "sentence1", "sentence2", "span1_text", "span2_text",
          "text", "question1", "question2", "premise", "hypothesis")  # fmt: skip


def write_task(data, task, n=4):
    rows = [
        {**{f: f"{f} {i} of {task}." for f in FIELDS}, "label": i % TASKS[task].num_labels, "idx": i} for i in range(n)
    ]
    path = task_file(data, task, "train")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


READ_WITH_PIPELINE = """
import json, pathlib, sys
from evaluation_pipeline.finetune.dataset import Dataset
out = {}
for task, path in zip(sys.argv[1::2], sys.argv[2::2]):
    d = Dataset(pathlib.Path(path), task)
    out[task] = [[list(t) for t in d.texts], d.labels]
print(json.dumps(out))
"""


@needs_pipeline
def test_texts_and_labels_are_the_pipelines(tmp_path):
    paths = {task: write_task(tmp_path, task) for task in TASKS}
    argv = [x for task in TASKS for x in (task, str(paths[task]))]
    result = subprocess.run([sys.executable, "-c", READ_WITH_PIPELINE, *argv], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PIPELINE)}, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    theirs = json.loads(result.stdout.strip().splitlines()[-1])
    for task in TASKS:
        texts, labels = read_examples(paths[task], task)
        assert [[list(t) for t in texts], labels] == theirs[task], task
    assert read_examples(paths["wsc"], "wsc")[0][0] == (
        'Does "span2_text 0 of wsc." refer to "span1_text 0 of wsc." in this passage?',
        "text 0 of wsc.",
    )


def script_runs():
    """Each ``finetune.run`` call of eval_finetuning.sh: {task: {flag: value}} with its variables' defaults."""
    script = (PIPELINE / "eval_finetuning.sh").read_text()
    defaults = dict(re.findall(r"^(\w+)=\$\{\d+:-([^}]+)\}", script, re.M))
    parts = re.split(r"python -m evaluation_pipeline\.finetune\.run", script)
    runs = {}
    for before, chunk in zip(parts, parts[1:]):
        flags = dict(re.findall(r"--(\w+)\s+(\"[^\"]*\"|[^\s\\]+(?:\s+(?!--)[^\s\\]+)*)", chunk.split("\ndone")[0]))
        flags = {
            k: re.sub(r"\$(\w+)", lambda m: defaults.get(m.group(1), m.group(0)), v.strip('"'))
            for k, v in flags.items()
        }
        loop = re.findall(r"for task in \{([^}]+)\}", before)  # a `for task in {a,b}` just before the call
        for task in loop[-1].split(",") if flags["task"] == "$task" else [flags["task"]]:
            runs[task] = flags
    return runs, defaults


@needs_pipeline
def test_recipe_is_eval_finetuning_sh_and_run_py():
    runs, defaults = script_runs()
    assert list(runs) == list(TASKS)
    for name, flags in runs.items():
        task = TASKS[name]
        assert (int(flags["num_labels"]), int(flags["batch_size"]), int(flags["num_epochs"])) == (
            task.num_labels, task.batch_size, task.epochs), name  # fmt: skip
        assert (tuple(flags["metrics"].split()), flags["metric_for_valid"]) == (task.metrics, task.metric_for_valid)
        assert (float(flags["learning_rate"]), int(flags["sequence_length"]), int(flags["seed"])) == (
            RECIPE["learning_rate"], RECIPE["sequence_length"], RECIPE["seed"])  # fmt: skip
    # run.py's own defaults for what the script leaves alone
    code = ("import sys; sys.argv = ['run', '--train_data', 'x', '--model_name_or_path', 'm', '--num_labels', '2', "
            "'--task', 'rte']; from evaluation_pipeline.finetune.run import _parse_arguments; import json; "
            "print(json.dumps(vars(_parse_arguments()), default=str))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PIPELINE)})  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    theirs = json.loads(result.stdout.strip().splitlines()[-1])
    for key in RECIPE.keys() - {"learning_rate", "sequence_length", "seed"}:
        assert RECIPE[key] == theirs[key], key


def test_bad_task_files_are_refused_naming_file_and_line(tmp_path):
    path = write_task(tmp_path, "rte")
    lines = path.read_text().splitlines()
    with pytest.raises(BabyMergeError, match=r"unknown GLUE task 'cola'.*boolq, multirc"):
        glue_task("cola")
    with pytest.raises(BabyMergeError, match=r"rte\.valid\.jsonl: no such rte file"):
        read_examples(task_file(tmp_path, "rte", "valid"), "rte")
    for bad, match in (
        ("{not json", r"rte\.train\.jsonl:3: not a JSON object"),
        ("[1, 2]", r"rte\.train\.jsonl:3: not a JSON object"),
        (json.dumps({"sentence1": "a", "label": 0}), r"rte\.train\.jsonl:3: no field 'sentence2'"),
        (
            json.dumps({"sentence1": "a", "sentence2": "b", "label": 2}),
            r":3: label 2 is not one of rte's 2 labels 0\.\.1",
        ),
        (json.dumps({"sentence1": "a", "sentence2": "b", "label": "0"}), r":3: label '0' is not one of"),
    ):
        path.write_text("\n".join([*lines[:2], bad, *lines[3:]]) + "\n")
        with pytest.raises(BabyMergeError, match=match):
            read_examples(path, "rte")
    path.write_text("\n".join(lines) + "\n")
    assert read_examples(path, "rte")[1] == [0, 1, 0, 1]


PIPELINE_LRS = """
import json, sys, torch
from evaluation_pipeline.finetune.utils import cosine_schedule_with_warmup
out = {}
for total in map(int, sys.argv[1:]):
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=3e-5)
    schedule = cosine_schedule_with_warmup(optimizer, int(0.06 * total), total, 0.1)  # as trainer.py builds it
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    out[total] = lrs
print(json.dumps(out))
"""


@needs_pipeline
def test_learning_rate_steps_through_the_pipelines_schedule():
    """Step by step (warm-up, cosine, the 0.1 floor), for step counts with and without warm-up."""
    totals = [3, 17, 50, 334]
    result = subprocess.run([sys.executable, "-c", PIPELINE_LRS, *map(str, totals)], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PIPELINE)})  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    theirs = json.loads(result.stdout.strip().splitlines()[-1])
    for total in totals:
        optimizer, schedule = optimizer_and_schedule([torch.nn.Parameter(torch.zeros(1))], total)
        ours = []
        for _ in range(total):
            ours.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.step()
        assert ours == pytest.approx(theirs[str(total)], rel=1e-12, abs=0), total
    assert theirs["334"][20] == pytest.approx(3e-5) and min(theirs["334"]) == 0.0  # warm-up from 0 over 20 steps
    assert theirs["334"][-1] == pytest.approx(3e-6, rel=1e-3)  # the floor: 0.1 x lr
