"""The BabyLM (Super)GLUE fine-tuning tasks: files, fields, templates and the recipe.

What the official BabyLM 2025 pipeline fine-tunes (its ``eval_finetuning.sh`` and
``evaluation_pipeline/finetune/``), written down once for ``train``'s fine-tuning:

* **Files**: ``<data>/full_eval/glue_filtered/<task>.{train,valid}.jsonl``, one JSON object a
  line with an integer ``label``; predictions are made on the validation file.
* **Texts**: each task's first and second text are fields of a row, joined by a space or
  filled into a template (multirc, wsc), as the pipeline's ``finetune/dataset.py`` reads them.
* **Recipe**: ``RECIPE`` (its ``finetune/run.py`` defaults as ``eval_finetuning.sh`` sets them)
  and, per task, the batch size, epochs, metrics and the metric that picks the best epoch;
  ``optimizer_and_schedule``: AdamW on every parameter, linear warm-up over
  ``int(6 % of the steps)``, then cosine decay to 0.1 x the learning rate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from babymerge.errors import BabyMergeError

# The pipeline's fine-tuning recipe (eval_finetuning.sh's defaults and finetune/run.py's).
RECIPE = {
    "learning_rate": 3e-5,
    "weight_decay": 0.01,
    "beta1": 0.9,
    "beta2": 0.999,
    "optimizer_eps": 1e-8,
    "warmup_proportion": 0.06,
    "min_factor": 0.1,  # cosine decay to 0.1 x the learning rate
    "sequence_length": 512,
    "seed": 42,
    "valid_batch_size": 64,
    "classifier_dropout": 0.1,
    "classifier_layer_norm_eps": 1e-5,
}


@dataclass(frozen=True)
class GlueTask:
    """One task: where its texts are in a row and how it is fine-tuned."""

    name: str
    first: tuple[str, ...]  # fields of the first text
    second: tuple[str, ...]  # fields of the second text
    template: str | None = None  # fills the first text's fields; None: joined by a space
    num_labels: int = 2
    batch_size: int = 32
    epochs: int = 10
    metrics: tuple[str, ...] = ("accuracy", "f1", "mcc")
    metric_for_valid: str = "accuracy"

    def texts(self, row: dict) -> tuple[str, str]:
        first = [row[key] for key in self.first]
        first = self.template.format(*first) if self.template else " ".join(first)
        return first, " ".join(row[key] for key in self.second)


# In eval_finetuning.sh's order.
TASKS = {
    task.name: task
    for task in (
        GlueTask("boolq", ("question",), ("passage",), batch_size=16),
        GlueTask("multirc", ("question", "answer"), ("paragraph",), "Question: {} Answer: {}", batch_size=16),
        GlueTask("rte", ("sentence1",), ("sentence2",)),
        GlueTask("wsc", ("span2_text", "span1_text"), ("text",), 'Does "{}" refer to "{}" in this passage?', epochs=30),
        GlueTask("mrpc", ("sentence1",), ("sentence2",), metric_for_valid="f1"),
        GlueTask("qqp", ("question1",), ("question2",), metric_for_valid="f1"),
        GlueTask("mnli", ("premise",), ("hypothesis",), num_labels=3, metrics=("accuracy",)),
    )
}


def glue_task(name: str) -> GlueTask:
    if name not in TASKS:
        raise BabyMergeError(f"unknown GLUE task {name!r}: the BabyLM tasks are {', '.join(TASKS)}")
    return TASKS[name]


def task_file(data: str | Path, task: str, split: str) -> Path:
    """``<data>/full_eval/glue_filtered/<task>.<split>.jsonl`` (``data``: the pipeline's
    ``evaluation_data`` folder)."""
    return Path(data) / "full_eval" / "glue_filtered" / f"{task}.{split}.jsonl"


def read_examples(path: str | Path, task: str) -> tuple[list[tuple[str, str]], list[int]]:
    """The (first, second) texts and labels of a task file; a missing file, a line that is not
    a JSON object, a missing field or a label outside ``0 .. num_labels - 1`` is refused with
    the file and line named."""
    spec, path = glue_task(task), Path(path)
    if not path.is_file():
        raise BabyMergeError(f"{path}: no such {task} file (expected <data>/full_eval/glue_filtered/{path.name})")
    texts, labels = [], []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not a JSON object")
            except ValueError as err:
                raise BabyMergeError(f"{path}:{n}: not a JSON object ({err})") from None
            missing = [key for key in (*spec.first, *spec.second, "label") if key not in row]
            if missing:
                raise BabyMergeError(f"{path}:{n}: no field {', '.join(map(repr, missing))} (a {task} row needs them)")
            label = int(row["label"]) if isinstance(row["label"], bool) else row["label"]  # true/false: 1/0
            if not isinstance(label, int) or not 0 <= label < spec.num_labels:
                raise BabyMergeError(
                    f"{path}:{n}: label {label!r} is not one of {task}'s {spec.num_labels} labels 0..{spec.num_labels - 1}"
                )
            texts.append(spec.texts(row))
            labels.append(label)
    if not texts:
        raise BabyMergeError(f"{path}: no examples")
    return texts, labels


def optimizer_and_schedule(parameters, total_steps: int, recipe: dict = RECIPE):
    """The pipeline's optimiser and learning-rate schedule (``finetune/trainer.py`` and its
    ``utils.cosine_schedule_with_warmup``)."""
    optimizer = adamw(parameters, recipe)
    return optimizer, schedule(optimizer, total_steps, recipe)


def adamw(parameters, recipe: dict = RECIPE) -> torch.optim.AdamW:
    """AdamW with weight decay on all parameters, as the pipeline's trainer."""
    return torch.optim.AdamW(
        parameters,
        lr=recipe["learning_rate"],
        betas=(recipe["beta1"], recipe["beta2"]),
        eps=recipe["optimizer_eps"],
        weight_decay=recipe["weight_decay"],
    )


def schedule(optimizer, total_steps: int, recipe: dict = RECIPE):
    """Linear warm-up over ``int(6 % of the steps)``, then cosine decay to 0.1 x the learning
    rate: transformers' cosine with a floor, the pipeline's formula."""
    warmup = int(recipe["warmup_proportion"] * total_steps)
    return get_cosine_with_min_lr_schedule_with_warmup(optimizer, warmup, total_steps, min_lr_rate=recipe["min_factor"])
