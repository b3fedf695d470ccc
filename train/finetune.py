"""Fine-tune a checkpoint, or a merge made at load time, on the BabyLM (Super)GLUE tasks.

    python -m train.finetune --model CKPT [--lang LANG_CKPT --alpha 0.3 --method linear ...] \\
        --data evaluation_data --tasks all --out results

The pipeline's recipe (``train.glue``): the backbone (``AutoModel``) and the pipeline's
classifier head on the last token with left padding (its ``--take_final --padding_side
left``), AdamW, 6 % warm-up then cosine to 0.1, per-task batch size and epochs, seed 42, the
best epoch by the task's metric, predictions on the validation file. Results are written in
the pipeline's layout, ``<out>/<model name>/main/finetune/<task>/{predictions.json,results.txt}``,
each task's folder published by rename when the task is done: a rerun skips finished tasks.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm
from transformers import AutoModel

import babymerge.auto  # noqa: F401  (registers BabyLLaVA with the Auto classes)
from babymerge.errors import BabyMergeError
from babymerge.processing import BabyLlavaProcessor
from babymerge.publish import atomic_output_dir
from train.glue import RECIPE, TASKS, glue_task, optimizer_and_schedule, read_examples, task_file

# A task folder holding this file was written by this program (a rerun may skip it).
MARKER = ".babymerge_finetune.json"


class ClassifierHead(nn.Module):
    """The pipeline's head (``finetune/classifier_model.py``), same layers and parameter names."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float, eps: float):
        super().__init__()
        self.nonlinearity = nn.Sequential(
            nn.LayerNorm(hidden_size, eps, elementwise_affine=False),
            nn.Linear(hidden_size, hidden_size),
            nn.GELU(),
            nn.LayerNorm(hidden_size, eps, elementwise_affine=False),
            nn.Dropout(dropout),
            nn.Linear(hidden_size, num_labels),
        )

    def forward(self, encodings: torch.Tensor) -> torch.Tensor:
        return self.nonlinearity(encodings)


class Classifier(nn.Module):
    """Backbone + head on the last position (inputs are padded on the left)."""

    def __init__(self, backbone: nn.Module, num_labels: int, recipe: dict):
        super().__init__()
        self.transformer = backbone
        hidden = backbone.config.hidden_size
        self.classifier = ClassifierHead(
            hidden, num_labels, recipe["classifier_dropout"], recipe["classifier_layer_norm_eps"]
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.classifier(states[:, -1])


def metrics(preds: list[int], labels: list[int], names) -> dict[str, float]:
    """accuracy, binary f1 (positive label 1) and Matthews correlation, as scikit-learn computes them."""
    p, y = torch.tensor(preds), torch.tensor(labels)
    out = {}
    for name in names:
        if name == "accuracy":
            out[name] = (p == y).double().mean().item()
        elif name == "f1":
            tp, fp, fn = ((p == 1) & (y == 1)).sum(), ((p == 1) & (y != 1)).sum(), ((p != 1) & (y == 1)).sum()
            out[name] = (2 * tp / (2 * tp + fp + fn)).item() if tp + fp + fn else 0.0
        elif name == "mcc":  # the multiclass formula (Gorodkin), sklearn's matthews_corrcoef
            k = int(max(p.max(), y.max())) + 1
            c = torch.zeros(k, k, dtype=torch.float64)
            c.index_put_((y, p), torch.ones(len(y), dtype=torch.float64), accumulate=True)
            t, q, n, correct = c.sum(1), c.sum(0), c.sum(), c.trace()
            denom = ((n * n - q @ q) * (n * n - t @ t)).sqrt()
            out[name] = ((correct * n - t @ q) / denom).item() if denom > 0 else 0.0
    return out


def model_name(args) -> str:
    """The results folder's model name: ``--name``, the checkpoint's (as the pipeline names it,
    ``Path(model).stem``) or, for a merge, its recipe."""
    if args.name:
        return args.name
    if args.lang is None:
        return Path(args.model).stem
    return f"{Path(args.model).stem}+{Path(args.lang).stem}_{args.method}_alpha{_alpha_text(args)}"


def _alpha_text(args) -> str:
    """The alpha as given (``--alpha`` or ``--alpha-gradient``; 0.3 by default), for names and settings."""
    return args.alpha_gradient or args.alpha or "0.3"


def load_backbone(args) -> nn.Module:
    """The backbone of ``--model``, or of its merge with ``--lang`` (babymerge.merge, in memory)."""
    if args.lang is None:
        if not Path(args.model).is_dir():
            raise BabyMergeError(f"--model {args.model}: no such checkpoint directory")
        return AutoModel.from_pretrained(args.model, dtype=torch.float32)
    from babymerge.cli import alpha_from_args, method_options
    from babymerge.merge import merge

    for name, path in (("--model", args.model), ("--lang", args.lang), ("--base", args.base)):
        if path is not None and not Path(path).is_dir():
            raise BabyMergeError(f"{name} {path}: no such checkpoint directory")
    report = merge(
        args.model, args.lang, args.method, alpha_from_args(args), base_ckpt=args.base, **method_options(args)
    )
    return report.model.model.float()  # .model: the backbone AutoModel gives for the checkpoint


def encode(processor, pairs, max_length: int):
    enc = processor(pairs, return_tensors="pt", padding=True, truncation=True, max_length=max_length)
    return enc.input_ids, enc.attention_mask


@torch.no_grad()
def predict(model, processor, pairs, recipe: dict, desc: str) -> list[int]:
    model.eval()
    preds = []
    size = recipe["valid_batch_size"]
    for start in tqdm(range(0, len(pairs), size), desc=desc, leave=False):
        ids, mask = encode(processor, pairs[start : start + size], recipe["sequence_length"])
        preds += model(ids, mask).argmax(-1).tolist()
    return preds


def finetune_task(backbone, processor, data, task: str, recipe: dict, batch_size: int, epochs: int):
    """Fine-tune a fresh copy of ``backbone`` on one task: (validation metrics, predictions) of the best epoch."""
    spec = glue_task(task)
    train_pairs, train_labels = read_examples(task_file(data, task, "train"), task)
    valid_pairs, valid_labels = read_examples(task_file(data, task, "valid"), task)
    torch.manual_seed(recipe["seed"])  # each task alike, whether or not a run resumed
    model = Classifier(copy.deepcopy(backbone), spec.num_labels, recipe)
    # the pipeline's loader: shuffled, the last incomplete batch dropped
    loader = torch.utils.data.DataLoader(list(range(len(train_pairs))), batch_size, shuffle=True, drop_last=True)
    total = len(loader) * epochs
    optimizer, schedule = optimizer_and_schedule(model.parameters(), total, recipe)
    best, best_state = None, None
    bar = tqdm(total=total, desc=f"{task} fine-tune")
    for epoch in range(epochs):
        model.train()
        for batch in loader:
            ids, mask = encode(processor, [train_pairs[i] for i in batch], recipe["sequence_length"])
            loss = F.cross_entropy(model(ids, mask), torch.tensor([train_labels[i] for i in batch]))
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.4f}", epoch=epoch)
        scores = metrics(predict(model, processor, valid_pairs, recipe, f"{task} valid"), valid_labels, spec.metrics)
        if best is None or scores[spec.metric_for_valid] > best[spec.metric_for_valid]:  # the first best epoch
            best, best_state = scores, copy.deepcopy(model.state_dict())
    bar.close()
    if best_state is None:  # no epochs
        best = metrics(predict(model, processor, valid_pairs, recipe, f"{task} valid"), valid_labels, spec.metrics)
    else:
        model.load_state_dict(best_state)
    return best, predict(model, processor, valid_pairs, recipe, f"{task} predict")


def write_results(task_dir: Path, task: str, scores: dict, preds: list[int], settings: dict) -> None:
    """The pipeline's files (run.py): results.txt as ``key: value`` lines, predictions.json as
    ``{task: {"predictions": [{"id": "<task>_<i>", "pred": p}]}}``; one folder, published by rename."""
    with atomic_output_dir(task_dir, owner_marker=MARKER) as tmp:
        (tmp / "results.txt").write_text("\n".join(f"{k}: {v}" for k, v in scores.items()))
        pred = {task: {"predictions": [{"id": f"{task}_{i}", "pred": int(p)} for i, p in enumerate(preds)]}}
        (tmp / "predictions.json").write_text(json.dumps(pred))
        (tmp / MARKER).write_text(json.dumps(settings, indent=1))


def parse_args(argv=None):
    from babymerge.cli import add_alpha_arguments, add_method_options
    from babymerge.merge import METHODS

    p = argparse.ArgumentParser(prog="python -m train.finetune", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="checkpoint directory (the multimodal one with --lang)")
    p.add_argument("--lang", help="language-only checkpoint: fine-tune the merge made at load time")
    add_alpha_arguments(p)
    p.add_argument("--method", default="linear", choices=sorted(METHODS))
    p.add_argument("--base", help="shared base checkpoint for task-vector methods")
    add_method_options(p)
    p.add_argument("--data", required=True, help="the pipeline's evaluation_data folder (full_eval/glue_filtered/)")
    p.add_argument("--tasks", default="all", help=f"all or a comma-separated list of {','.join(TASKS)}")
    p.add_argument("--out", required=True, help="results folder (the pipeline's layout)")
    p.add_argument("--name", help="model name in the results path (default: the checkpoint's; a merge's recipe)")
    p.add_argument("--learning-rate", type=float, default=RECIPE["learning_rate"])
    p.add_argument("--batch-size", type=int, help="every task's batch size (default: the task's)")
    p.add_argument("--epochs", type=int, help="every task's epochs (default: the task's)")
    p.add_argument("--train-seed", type=int, default=RECIPE["seed"], help="fine-tuning seed (--seed is a merge option)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        tasks = list(TASKS) if args.tasks == "all" else [t.strip() for t in args.tasks.split(",") if t.strip()]
        for task in tasks:  # every input checked before the (long) load
            glue_task(task)
            for split in ("train", "valid"):
                read_examples(task_file(args.data, task, split), task)
        if args.lang is None and (args.module_alpha or args.base or args.alpha or args.alpha_gradient):
            raise BabyMergeError(
                "--alpha, --alpha-gradient, --module-alpha and --base need --lang <language-only checkpoint>"
            )
        recipe = {**RECIPE, "learning_rate": args.learning_rate, "seed": args.train_seed}
        todo = {}
        for task in tasks:
            spec = glue_task(task)
            options = {k: v for k, v in vars(args).items() if k.startswith("opt_") and v is not None}
            settings = {"model": args.model, "lang": args.lang, "alpha": _alpha_text(args), "module_alpha": args.module_alpha,
                        "method": args.method, "base": args.base, **options, "batch_size": args.batch_size or spec.batch_size,
                        "epochs": args.epochs or spec.epochs, **recipe}  # fmt: skip
            task_dir = Path(args.out) / model_name(args) / "main" / "finetune" / task
            if (task_dir / MARKER).is_file() and (task_dir / "predictions.json").is_file():
                if json.loads((task_dir / MARKER).read_text()) != settings:  # a rerun must not mix settings
                    raise BabyMergeError(
                        f"{task_dir} was fine-tuned with other settings ({task_dir / MARKER}); choose another --out"
                    )
                print(f"{task}: done already ({task_dir})", file=sys.stderr)
            elif task_dir.exists():
                raise BabyMergeError(f"{task_dir} holds results this program did not write; choose another --out")
            else:
                todo[task] = task_dir, settings
        if not todo:
            return 0
        backbone = load_backbone(args)
        processor = BabyLlavaProcessor.from_pretrained(args.model, padding_side="left")
        for task, (task_dir, settings) in todo.items():
            batch_size, epochs = settings["batch_size"], settings["epochs"]
            scores, preds = finetune_task(backbone, processor, args.data, task, recipe, batch_size, epochs)
            write_results(task_dir, task, scores, preds, settings)
            print(f"{task}: {scores}", file=sys.stderr)
    except BabyMergeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
