"""Fine-tune a checkpoint, or a merge made at load time, on the BabyLM (Super)GLUE tasks.

    python -m train.finetune --model CKPT [--lang LANG_CKPT --alpha 0.3 --method linear ...] \\
        --data evaluation_data --tasks all --out results
    deepspeed --num_gpus 2 --module train.finetune --model CKPT ... --deepspeed train/configs/ds_zero2.json

The pipeline's recipe (``train.glue``): the backbone (``AutoModel``) and the pipeline's
classifier head on the last token with left padding (its ``--take_final --padding_side
left``), AdamW, 6 % warm-up then cosine to 0.1, per-task batch size and epochs, seed 42, the
best epoch by the task's metric, predictions on the validation file. Two things make it
faster than the pipeline's fine-tuner at the same recipe: the model is loaded (or merged)
once for all tasks, and each text is tokenised once and batched with texts of similar
length (transformers' length-grouped order, shuffled each epoch), so a batch is padded to
its own length and not to that of one long text drawn into it.

Under the DeepSpeed launcher (``--deepspeed``: the ZeRO configs of pre-training, "auto"
values filled in by ``train.engine``) each of N ranks takes 1/N of every batch; the batches
are those of a one-process run. Results are written in the pipeline's layout,
``<out>/<model name>/main/finetune/<task>/{predictions.json,results.txt}``, each task's folder
published by rename when the task is done: a rerun skips finished tasks.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from torch import nn
from tqdm import tqdm
from transformers import AutoModel
from transformers.trainer_pt_utils import get_length_grouped_indices

import babymerge.auto  # noqa: F401  (registers BabyLLaVA with the Auto classes)
from babymerge.errors import BabyMergeError
from babymerge.processing import BabyLlavaProcessor
from babymerge.publish import atomic_output_dir
from train import distributed
from train.glue import RECIPE, TASKS, adamw, glue_task, optimizer_and_schedule, read_examples, schedule, task_file

# A task folder holding this file was written by this program (a rerun may skip it).
MARKER = ".babymerge_finetune.json"
# Started by the deepspeed launcher (its ranks find RANK in their environment from the start).
LAUNCHED = "RANK" in os.environ
METRICS = {"accuracy": accuracy_score, "f1": f1_score, "mcc": matthews_corrcoef}  # as the pipeline's trainer.py


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
    """The task's metrics as the pipeline computes them (scikit-learn; f1 of label 1)."""
    return {name: float(METRICS[name](labels, preds)) for name in names}


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


class Texts:
    """A task file's pairs tokenised once (the processor's prompt, truncated to the sequence
    length), batched on demand with left padding."""

    def __init__(self, processor, pairs, max_length: int):
        self.pad = processor.tokenizer.pad
        self.ids = processor(pairs, truncation=True, max_length=max_length)["input_ids"]

    def __len__(self) -> int:
        return len(self.ids)

    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.ids]

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.pad({"input_ids": [self.ids[i] for i in indices]}, padding=True, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]


def train_batches(lengths: list[int], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """One epoch's batches: transformers' length-grouped order (random mega-batches, each sorted
    by length) cut into batches, in a random order; the last incomplete one dropped, as the
    pipeline's loader does."""
    order = get_length_grouped_indices(lengths, batch_size, generator=generator)
    batches = [order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


@torch.no_grad()
def predict(model, texts: Texts, recipe: dict, dist: distributed.Dist, desc: str) -> list[int]:
    """Predictions in the file's order, made longest first in batches of similar length; with N
    ranks each makes every N-th batch and all get all predictions."""
    model.eval()
    order = sorted(range(len(texts)), key=lambda i: -len(texts.ids[i]))
    size = recipe["valid_batch_size"]
    batches = [order[i : i + size] for i in range(0, len(order), size)][dist.rank :: dist.world_size]
    mine = {}
    device = next(model.parameters()).device
    for batch in tqdm(batches, desc=desc, leave=False, disable=not dist.is_main):
        ids, mask = texts.batch(batch)
        mine.update(zip(batch, model(ids.to(device), mask.to(device)).argmax(-1).tolist()))
    if dist.world_size > 1:
        parts = [None] * dist.world_size
        torch.distributed.all_gather_object(parts, mine)
        mine = {i: p for part in parts for i, p in part.items()}
    return [mine[i] for i in range(len(texts))]


def deepspeed_engine(model: nn.Module, ds_config: str, batch_size: int, world: int, total: int, recipe: dict):
    """``deepspeed.initialize`` on the ZeRO config with its "auto" values filled in by
    ``train.engine.deepspeed_config`` (fp32, no clipping, as the pipeline), the pipeline's AdamW
    and schedule (``train.glue``)."""
    import deepspeed

    from train.config import OptimConfig, TrainConfig
    from train.engine import deepspeed_config

    optim = OptimConfig(lr=recipe["learning_rate"], betas=[recipe["beta1"], recipe["beta2"]], eps=recipe["optimizer_eps"],
                        weight_decay=recipe["weight_decay"], grad_clip=0.0)  # fmt: skip
    config = TrainConfig(deepspeed=ds_config, precision="fp32", micro_batch_size=batch_size // world,
                         global_batch_size=batch_size, optim=optim)  # fmt: skip
    ds = deepspeed_config(config, world)
    if ds.get("zero_optimization", {}).get("stage", 0) >= 3:  # the best epoch's weights are copied whole
        raise BabyMergeError(f"--deepspeed {ds_config}: fine-tuning takes ZeRO stage 0-2 (e.g. train/configs/ds_zero2.json), not 3")  # fmt: skip
    # with an "optimizer" section (the offload config) DeepSpeed builds its own (CPU) AdamW
    optimizer = None if "optimizer" in ds else adamw(model.parameters(), recipe)
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), optimizer=optimizer,
                                      lr_scheduler=lambda opt: schedule(opt, total, recipe), config=ds)  # fmt: skip
    return engine


def finetune_task(backbone, processor, data, task: str, recipe: dict, batch_size: int, epochs: int,
                  dist: distributed.Dist | None = None, ds_config: str | None = None):  # fmt: skip
    """Fine-tune a fresh copy of ``backbone`` on one task: (validation metrics, predictions) of the
    best epoch. With ``ds_config``, a DeepSpeed engine over ``dist``'s ranks."""
    dist = dist or distributed.Dist()
    spec = glue_task(task)
    train_pairs, train_labels = read_examples(task_file(data, task, "train"), task)
    valid_pairs, valid_labels = read_examples(task_file(data, task, "valid"), task)
    train, valid = (Texts(processor, p, recipe["sequence_length"]) for p in (train_pairs, valid_pairs))
    torch.manual_seed(recipe["seed"])  # each task alike, whether or not a run resumed
    model = Classifier(copy.deepcopy(backbone), spec.num_labels, recipe)
    generator = torch.Generator().manual_seed(recipe["seed"])  # the same batches on every rank
    steps_per_epoch = len(train) // batch_size
    total = steps_per_epoch * epochs
    if ds_config is None:
        engine = None
        model.to("cuda" if torch.cuda.is_available() else "cpu")  # as the pipeline's fine-tuner
        optimizer, scheduler = optimizer_and_schedule(model.parameters(), total, recipe)
    else:
        engine = deepspeed_engine(model, ds_config, batch_size, dist.world_size, total, recipe)
        if dist.is_main:
            print(f"{task}: {dist.world_size} ranks, DeepSpeed ZeRO-{engine.zero_optimization_stage()} ({ds_config})",
                  file=sys.stderr)  # fmt: skip
    device = next(model.parameters()).device
    micro = batch_size // dist.world_size
    best, best_state = None, None
    bar = tqdm(total=total, desc=f"{task} fine-tune", disable=not dist.is_main)
    for epoch in range(epochs):
        model.train()
        for batch in train_batches(train.lengths(), batch_size, generator):
            mine = batch[dist.rank * micro : (dist.rank + 1) * micro]  # this rank's share of the batch
            ids, mask = train.batch(mine)
            labels = torch.tensor([train_labels[i] for i in mine], device=device)
            loss = F.cross_entropy((engine or model)(ids.to(device), mask.to(device)), labels)
            if engine is None:
                loss.backward()
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            else:
                engine.backward(loss)
                engine.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.4f}", epoch=epoch)
        scores = metrics(predict(model, valid, recipe, dist, f"{task} valid"), valid_labels, spec.metrics)
        if best is None or scores[spec.metric_for_valid] > best[spec.metric_for_valid]:  # the first best epoch
            best, best_state = scores, copy.deepcopy(model.state_dict())
    bar.close()
    if best_state is None:  # no epochs
        best = metrics(predict(model, valid, recipe, dist, f"{task} valid"), valid_labels, spec.metrics)
    else:
        model.load_state_dict(best_state)
    return best, predict(model, valid, recipe, dist, f"{task} predict")


def write_results(task_dir: Path, task: str, scores: dict, preds: list[int], settings: dict) -> None:
    """The pipeline's files (run.py): results.txt as ``key: value`` lines, predictions.json as
    ``{task: {"predictions": [{"id": "<task>_<i>", "pred": p}]}}``; one folder, published by rename."""
    with atomic_output_dir(task_dir, owner_marker=MARKER) as tmp:
        (tmp / "results.txt").write_text("\n".join(f"{k}: {v}" for k, v in scores.items()))
        pred = {task: {"predictions": [{"id": f"{task}_{i}", "pred": int(p)} for i, p in enumerate(preds)]}}
        (tmp / "predictions.json").write_text(json.dumps(pred))
        (tmp / MARKER).write_text(json.dumps(settings, indent=1))


def add_merge_arguments(p: argparse.ArgumentParser) -> None:
    """--method, --base and every merge method's options (``babymerge methods``)."""
    from babymerge.cli import add_method_options
    from babymerge.merge import METHODS

    p.add_argument("--method", default="linear", choices=sorted(METHODS))
    p.add_argument("--base", help="shared base checkpoint for task-vector methods")
    add_method_options(p)


def add_finetune_arguments(p: argparse.ArgumentParser) -> None:
    """The data, tasks and recipe options (shared with ``train.finetune_sweep``)."""
    p.add_argument("--data", required=True, help="the pipeline's evaluation_data folder (full_eval/glue_filtered/)")
    p.add_argument("--tasks", default="all", help=f"all or a comma-separated list of {','.join(TASKS)}")
    p.add_argument("--learning-rate", type=float, default=RECIPE["learning_rate"])
    p.add_argument("--batch-size", type=int, help="every task's batch size (default: the task's)")
    p.add_argument("--epochs", type=int, help="every task's epochs (default: the task's)")
    p.add_argument("--train-seed", type=int, default=RECIPE["seed"], help="fine-tuning seed (--seed is a merge option)")
    p.add_argument("--deepspeed", metavar="CONFIG", help="ZeRO config (train/configs/ds_zero2.json; the default under the deepspeed launcher)")  # fmt: skip
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # passed by the deepspeed launcher


def parse_args(argv=None):
    from babymerge.cli import add_alpha_arguments

    p = argparse.ArgumentParser(prog="python -m train.finetune", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="checkpoint directory (the multimodal one with --lang)")
    p.add_argument("--lang", help="language-only checkpoint: fine-tune the merge made at load time")
    add_alpha_arguments(p)
    add_merge_arguments(p)
    add_finetune_arguments(p)
    p.add_argument("--out", required=True, help="results folder (the pipeline's layout)")
    p.add_argument("--name", help="model name in the results path (default: the checkpoint's; a merge's recipe)")
    return p.parse_args(argv)


def task_list(args) -> list[str]:
    """``--tasks`` checked, with every task's files read, before any (long) load."""
    tasks = list(TASKS) if args.tasks == "all" else [t.strip() for t in args.tasks.split(",") if t.strip()]
    for task in tasks:
        glue_task(task)
        for split in ("train", "valid"):
            read_examples(task_file(args.data, task, split), task)
    return tasks


def is_main() -> bool:
    """Rank 0 of a launcher's ranks, or the one process (before and after ``distributed.setup``)."""
    return os.environ.get("RANK", "0") == "0"


@functools.cache
def _ranks() -> distributed.Dist:
    return distributed.setup("deepspeed")  # once per process, whatever the number of tasks and cells


def deepspeed_setup(args, batch_sizes) -> tuple[distributed.Dist, str | None]:
    """The ranks and ZeRO config: ``--deepspeed`` or, under the launcher, ZeRO-2; one process otherwise."""
    config = args.deepspeed or (str(Path(__file__).parent / "configs" / "ds_zero2.json") if LAUNCHED else None)
    if config is None:
        return distributed.Dist(), None
    if not Path(config).is_file():
        raise BabyMergeError(f"--deepspeed {config}: no such file (shipped: train/configs/ds_zero{{1,2,3}}.json)")
    world = int(os.environ.get("WORLD_SIZE", 1))
    bad = sorted({b for b in batch_sizes if b % world})
    if bad:
        raise BabyMergeError(f"batch size {bad[0]} is not a multiple of the {world} ranks; set --batch-size or change --num_gpus")  # fmt: skip
    return _ranks(), config


def run(args, tasks: list[str], backbone=None) -> dict[str, dict]:
    """Fine-tune ``args``' model on ``tasks`` not done yet in ``args.out``; return every task's
    scores. ``backbone``: the model already loaded (a sweep's merge), else loaded here."""
    if args.lang is None and (args.module_alpha or args.base or args.alpha or args.alpha_gradient):
        raise BabyMergeError(
            "--alpha, --alpha-gradient, --module-alpha and --base need --lang <language-only checkpoint>"
        )
    recipe = {**RECIPE, "learning_rate": args.learning_rate, "seed": args.train_seed}
    options = {k: v for k, v in vars(args).items() if k.startswith("opt_") and v is not None}
    todo, scores = {}, {}
    for task in tasks:
        spec = glue_task(task)
        settings = {"model": args.model, "lang": args.lang, "alpha": _alpha_text(args), "module_alpha": args.module_alpha,
                    "method": args.method, "base": args.base, **options, "batch_size": args.batch_size or spec.batch_size,
                    "epochs": args.epochs or spec.epochs, **recipe}  # fmt: skip
        task_dir = Path(args.out) / model_name(args) / "main" / "finetune" / task
        if (task_dir / MARKER).is_file() and (task_dir / "predictions.json").is_file():
            if json.loads((task_dir / MARKER).read_text()) != settings:  # a rerun must not mix settings
                raise BabyMergeError(
                    f"{task_dir} was fine-tuned with other settings ({task_dir / MARKER}); choose another --out"
                )
            if is_main():
                print(f"{task}: done already ({task_dir})", file=sys.stderr)
            scores[task] = read_scores(task_dir)
        elif task_dir.exists():
            raise BabyMergeError(f"{task_dir} holds results this program did not write; choose another --out")
        else:
            todo[task] = task_dir, settings
    if not todo:
        return scores
    dist, ds_config = deepspeed_setup(args, [s["batch_size"] for _, s in todo.values()])
    backbone = load_backbone(args) if backbone is None else backbone
    processor = BabyLlavaProcessor.from_pretrained(args.model, padding_side="left")
    for task, (task_dir, settings) in todo.items():
        batch_size, epochs = settings["batch_size"], settings["epochs"]
        scores[task], preds = finetune_task(backbone, processor, args.data, task, recipe, batch_size, epochs, dist, ds_config)  # fmt: skip
        if dist.is_main:
            write_results(task_dir, task, scores[task], preds, settings)
            print(f"{task}: {scores[task]}", file=sys.stderr)
        dist.barrier()
    return {task: scores[task] for task in tasks}


def read_scores(task_dir: Path) -> dict[str, float]:
    """A results.txt's ``key: value`` lines (ours or the pipeline's)."""
    lines = (Path(task_dir) / "results.txt").read_text().splitlines()
    return {key: float(value) for key, value in (line.split(": ", 1) for line in lines if ": " in line)}


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run(args, task_list(args))
    except BabyMergeError as err:
        if is_main():  # every rank checks the same; the first one says why
            print(f"error: {err}", file=sys.stderr)
        distributed.exit_on_error(2)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
