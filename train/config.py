"""The training config: one YAML file, four sections, every key checked.

    deepspeed --num_gpus 2 -m train --config train/configs/multimodal.yaml --set optim.lr=3e-4

A config is plain data (dataclasses below); the YAML may set any subset of their fields and
``--set section.key=value`` overrides single values (parsed as YAML: ``3e-4``, ``true``,
``[a, b]``). A key that does not exist is an error that lists the valid ones, so a typo
never silently falls back to a default. Numbers may be written ``3e-4``: YAML 1.1 (PyYAML)
reads that as a string, so number fields accept any string Python's ``float`` reads.
``load_config`` checks every value (ranges, batch arithmetic, the word-checkpoint schedule)
before the run does any work. Relative paths in the YAML are relative to the directory the
command runs in, as on the command line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from babymerge.errors import BabyMergeError
from babymerge.image_features import VISION_ENCODER


@dataclass
class ModelConfig:
    """The decoder and projector shape. ``kind`` is ``babyllava`` (LlavaForConditionalGeneration
    with one DINOv2 image token; used for both the multimodal model and, trained on text only,
    its language-only twin) or ``llama`` (a plain LlamaForCausalLM twin, text only)."""

    kind: str = "babyllava"
    num_layers: int = 6
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_heads: int = 12
    context_length: int = 128
    feature_size: int = 1024  # width of the image features (DINOv2-large: 1024)
    vision_encoder: str = VISION_ENCODER  # recorded in the config; used to encode images


@dataclass
class DataConfig:
    """Where the corpora are and how they become training sequences.

    ``text``: files, directories or globs of language-only text (``.txt``/``.train``: one
    segment per line; ``.jsonl``: a ``text`` field). ``multimodal``: a list of
    ``{captions: FILE, features: FILE or [FILES]}`` sources (captions as JSONL with a
    ``caption``/``text`` field or a JSON list; features as ``.npy``/``.npz``/``.safetensors``
    rows aligned with the captions by index, or by ``id`` when both carry ids).
    """

    text: list[str] = field(default_factory=list)
    multimodal: list[dict] = field(default_factory=list)
    text_image_prefix: str = "black"  # "black": each text sequence starts with a black image; "none"
    black_image_feature: str | None = None  # .npy written by train.encode_images; else computed with the encoder
    cache_dir: str = ".cache/babymerge-train"  # tokenised, packed sequences (datasets, memory-mapped)


@dataclass
class OptimConfig:
    lr: float = 1e-4
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 0
    warmup_ratio: float = 0.01  # used when warmup_steps is 0
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    grad_clip: float = 1.0


@dataclass
class TrainConfig:
    output_dir: str = "runs/mm"
    tokenizer: str = "tokenizer"  # a directory written by `python -m train.tokenizer`
    deepspeed: str = "train/configs/ds_zero2.json"  # ZeRO config; "auto" values are filled in from here
    engine: str = "deepspeed"  # or "torch": plain single-process PyTorch (the reference the tests compare with)
    precision: str = "auto"  # auto: bf16 on GPUs that support it, fp32 otherwise; or bf16 / fp32
    seed: int = 42
    epochs: int = 10
    micro_batch_size: int = 32  # sequences per rank per forward pass
    global_batch_size: int = 128  # sequences per optimiser step (gradient accumulation fills the gap)
    max_steps: int = 0  # stop after this many optimiser steps (0: run all epochs)
    save_every_steps: int = 0  # also checkpoint every N optimiser steps (0: only at epoch ends)
    keep_optimizer_states: int = 1  # DeepSpeed states kept for --resume (newest N); weights are always kept
    log_every_steps: int = 10
    # Word-count checkpoints chck_<N>M (babymerge.babylm.checkpoints): "babylm2025" is the 2025 track's
    # schedule, 1..10, 20..100, 200..1000 units of word_checkpoint_unit words; "none"; or a list
    # of word counts. A tiny run sets word_checkpoint_unit: 1000 (chck_0.001M, chck_0.002M, ...).
    word_checkpoints: str | list = "babylm2025"
    word_checkpoint_unit: int = 1_000_000
    dataloader_workers: int = -1  # processes preparing batches ahead of the step; -1: 2 with a GPU, 0 on CPU
    tensorboard: bool = False
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_CHOICES = {
    "model.kind": ("babyllava", "llama"),
    "data.text_image_prefix": ("black", "none"),
    "engine": ("deepspeed", "torch"),
    "precision": ("auto", "bf16", "fp32"),
}


def _build(cls, values: dict, where: str, prefix: str = ""):
    if not isinstance(values, dict):
        raise BabyMergeError(f"{where}: `{prefix.rstrip('.') or 'the config'}` must be a mapping, got {values!r}")
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise BabyMergeError(
            f"{where}: unknown config key(s) {[prefix + k for k in unknown]}; valid keys"
            f"{' in ' + prefix.rstrip('.') if prefix else ''}: {sorted(fields)}"
        )
    defaults, kwargs = cls(), {}
    for name, value in values.items():
        default = getattr(defaults, name)
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value or {}, where, f"{prefix}{name}.")
            continue
        key = prefix + name
        value = _number(value, 0 if key == "word_checkpoints" else default)
        if key in _CHOICES and value not in _CHOICES[key]:
            raise BabyMergeError(f"{where}: {key} must be one of {list(_CHOICES[key])}, got {value!r}")
        number = isinstance(value, (int, float))
        if (isinstance(default, bool) != isinstance(value, bool) or (isinstance(default, (int, float)) and not number)
                or (isinstance(default, int) and isinstance(value, float))):  # fmt: skip
            if not (default is None or value is None):
                raise BabyMergeError(f"{where}: {key} must be a {type(default).__name__}, got {value!r}")
        if isinstance(default, list) and isinstance(value, str):
            value = [value]
        kwargs[name] = value
    return cls(**kwargs)


def _number(value, default):
    """``3e-4`` for a number field: PyYAML (YAML 1.1) reads exponents without a dot as strings."""
    if isinstance(value, list):
        return [_number(v, default[0] if isinstance(default, list) and default else default) for v in value]
    if isinstance(default, bool) or not isinstance(default, (int, float)) or isinstance(value, bool):
        return value
    try:
        number = float(value) if isinstance(value, str) else value
    except ValueError:
        return value  # refused below as "must be a float/int"
    if isinstance(default, int) and isinstance(number, float):
        return int(number) if number.is_integer() else value  # 1e6 words, not 1e6 as a float
    return number


def _set(tree: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        tree = tree.setdefault(p, {})
        if not isinstance(tree, dict):
            raise BabyMergeError(f"--set {dotted}: {p} is not a section")
    tree[leaf] = value


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    """Read a YAML config (or start from the defaults) and apply ``key=value`` overrides."""
    raw: dict = {}
    where = "defaults"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise BabyMergeError(f"config file {str(path)!r} not found (the shipped ones are in train/configs/)")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:  # a syntax error, or a tag such as !!python/object that safe_load refuses
            mark = getattr(err, "problem_mark", None)
            at = f" (line {mark.line + 1})" if mark else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise BabyMergeError(
                f"config file {str(path)!r}{at}: not a plain YAML config: {problem}; fix that line (a config holds plain values: numbers, strings, lists, mappings)"
            ) from None
        where = str(path)
    for item in overrides:
        if "=" not in item:
            raise BabyMergeError(f"--set {item!r}: expected section.key=value, e.g. --set optim.lr=3e-4")
        key, value = item.split("=", 1)
        _set(raw, key.strip(), yaml.safe_load(value))
    if overrides:
        where = f"{where} (with --set)"
    config = _build(TrainConfig, raw, where)
    validate(config, where)
    return config


def validate(config: TrainConfig, where: str = "config") -> None:
    """Every value in range and consistent, so that a mistake is reported before the data is
    built or a process group started (not as a ZeroDivisionError or a torch error later)."""
    m, o = config.model, config.optim
    at_least = {
        "epochs": (config.epochs, 1), "micro_batch_size": (config.micro_batch_size, 1),
        "global_batch_size": (config.global_batch_size, 1), "max_steps": (config.max_steps, 0),
        "save_every_steps": (config.save_every_steps, 0), "keep_optimizer_states": (config.keep_optimizer_states, 0),
        "log_every_steps": (config.log_every_steps, 1), "word_checkpoint_unit": (config.word_checkpoint_unit, 1),
        "dataloader_workers": (config.dataloader_workers, -1),
        "model.num_layers": (m.num_layers, 1), "model.hidden_size": (m.hidden_size, 1),
        "model.intermediate_size": (m.intermediate_size, 1), "model.num_heads": (m.num_heads, 1),
        "model.context_length": (m.context_length, 2), "model.feature_size": (m.feature_size, 1),
        "optim.warmup_steps": (o.warmup_steps, 0), "optim.weight_decay": (o.weight_decay, 0),
        "optim.grad_clip": (o.grad_clip, 0),
    }  # fmt: skip
    for key, (value, low) in at_least.items():
        if value is not None and value < low:  # None: unset on purpose (model.feature_size: taken from the features)
            raise BabyMergeError(f"{where}: {key} must be >= {low}, got {value}")
    for key, value in (("optim.lr", o.lr), ("optim.eps", o.eps)):
        if not value > 0:
            raise BabyMergeError(f"{where}: {key} must be > 0, got {value}")
    for key, value in (("optim.min_lr_ratio", o.min_lr_ratio), ("optim.warmup_ratio", o.warmup_ratio)):
        if not 0 <= value <= 1:
            raise BabyMergeError(f"{where}: {key} must be in [0, 1], got {value}")
    if len(o.betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in o.betas):
        raise BabyMergeError(f"{where}: optim.betas must be two numbers in [0, 1), e.g. [0.9, 0.95]; got {o.betas}")
    if m.hidden_size % m.num_heads:
        raise BabyMergeError(
            f"{where}: model.hidden_size {m.hidden_size} is not a multiple of model.num_heads {m.num_heads}"
        )
    if config.global_batch_size % config.micro_batch_size:
        raise BabyMergeError(
            f"{where}: global_batch_size {config.global_batch_size} is not a multiple of "
            f"micro_batch_size {config.micro_batch_size}"
        )
    if config.model.kind == "llama" and (config.data.multimodal or config.data.text_image_prefix != "none"):
        raise BabyMergeError(
            f"{where}: model.kind=llama is text only: remove data.multimodal and set data.text_image_prefix: none"
        )
    words = config.word_checkpoints
    counts = isinstance(words, list) and all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in words)
    if words not in ("babylm2025", "none") and not counts:
        raise BabyMergeError(
            f"{where}: word_checkpoints must be 'babylm2025', 'none' or a list of positive word counts, got {words!r}"
        )
    if counts and sorted(set(words)) != words:
        raise BabyMergeError(f"{where}: word_checkpoints must be increasing without repeats, got {words}")
