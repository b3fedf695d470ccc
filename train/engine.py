"""The optimiser step: DeepSpeed (ZeRO, any number of ranks) or plain single-process PyTorch.

Both engines expose the few methods the training loop uses, with DeepSpeed's meaning:
``engine(**batch)``, ``backward(loss)`` (scaled by 1/gradient-accumulation steps),
``step()`` (updates only at the accumulation boundary), ``global_steps``, ``module``,
``save_checkpoint(dir, tag, client_state)`` and ``load_checkpoint(dir, tag)``. The plain
engine is the reference the tests and ``bench/train.py`` compare ZeRO runs with.

The optimiser is AdamW with a cosine schedule after linear warm-up. The shipped DeepSpeed
configs leave batch sizes, clipping, precision and (for the offload variant) optimiser
settings as ``"auto"``; they are filled in here from the training config, as the HF Trainer
does, so the YAML file is the one place those numbers live.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import torch

from babymerge.errors import BabyMergeError

from .config import TrainConfig

# DeepSpeed's ZeRO calls torch's deprecated all_gather_into_tensor; the notice (once per rank and
# run) is DeepSpeed's to act on, not the user's
warnings.filterwarnings(
    "ignore", message=r"`torch.distributed.all_gather_into_tensor` is deprecated", category=FutureWarning
)


def use_bf16(config: TrainConfig) -> bool:
    if config.precision == "auto":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if config.precision == "bf16" and not torch.cuda.is_available():
        raise BabyMergeError("precision: bf16 needs a GPU here; use precision: fp32 (or auto) on CPU")
    return config.precision == "bf16"


def cosine_with_warmup(config: TrainConfig, total_steps: int):
    """lr multiplier: linear warm-up, then cosine decay to ``min_lr_ratio``."""
    o = config.optim
    warmup = o.warmup_steps or math.ceil(o.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def param_groups(config: TrainConfig, model: torch.nn.Module) -> list[dict]:
    """Weight decay on matrices only, not on biases and norms (the usual GPT recipe)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": config.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def adamw(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    o = config.optim
    return torch.optim.AdamW(param_groups(config, model), lr=o.lr, betas=tuple(o.betas), eps=o.eps)


def deepspeed_config(config: TrainConfig, world_size: int) -> dict:
    """The ZeRO JSON with every ``"auto"`` replaced by the training config's value."""
    path = Path(config.deepspeed)
    if not path.is_file():
        raise BabyMergeError(
            f"deepspeed config {str(path)!r} not found (shipped: train/configs/ds_zero{{1,2,3}}.json, ds_zero2_offload.json)"
        )
    ds = json.loads(path.read_text())
    o = config.optim
    auto = {
        "train_micro_batch_size_per_gpu": config.micro_batch_size,
        "gradient_accumulation_steps": grad_accum_steps(config, world_size),
        "train_batch_size": config.global_batch_size,
        "gradient_clipping": o.grad_clip,
        "lr": o.lr,
        "betas": list(o.betas),
        "eps": o.eps,
        "weight_decay": o.weight_decay,
    }

    def fill(node):
        if isinstance(node, dict):
            return {k: (auto[k] if v == "auto" and k in auto else fill(v)) for k, v in node.items()}
        return node

    ds = fill(ds)
    ds["bf16"] = {**ds.get("bf16", {}), "enabled": use_bf16(config)}
    ds.setdefault("steps_per_print", 10**9)  # the loop logs; keep DeepSpeed quiet
    leftover = [k for k, v in _walk(ds) if v == "auto"]
    if leftover:
        raise BabyMergeError(f'{path}: no value for "auto" key(s) {leftover}; fillable: {sorted(auto)}')
    return ds


def _walk(node, prefix=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{prefix}{k}.") if isinstance(v, dict) else [(prefix + k, v)]


def grad_accum_steps(config: TrainConfig, world_size: int) -> int:
    per_step = config.micro_batch_size * world_size
    if config.global_batch_size % per_step:
        raise BabyMergeError(
            f"global_batch_size {config.global_batch_size} is not a multiple of micro_batch_size x ranks "
            f"= {config.micro_batch_size} x {world_size}; change one of them"
        )
    return config.global_batch_size // per_step


def build_engine(config: TrainConfig, model: torch.nn.Module, world_size: int, total_steps: int):
    schedule = cosine_with_warmup(config, total_steps)
    if config.engine == "torch":
        if world_size != 1:
            raise BabyMergeError(
                "engine: torch is single-process; launch it with python -m train, not the deepspeed launcher"
            )
        return TorchEngine(config, model, schedule)
    import deepspeed

    ds = deepspeed_config(config, world_size)
    engine, *_ = deepspeed.initialize(
        model=model,
        # With an "optimizer" section (the offload config) DeepSpeed builds its own (CPU) AdamW
        # over these groups, so it decays the same parameters as ours.
        model_parameters=param_groups(config, model),
        optimizer=None if "optimizer" in ds else adamw(config, model),
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, schedule),
        config=ds,
    )
    return engine


class TorchEngine:
    """Single-process PyTorch with DeepSpeed's engine interface (see the module docstring)."""

    def __init__(self, config: TrainConfig, model: torch.nn.Module, schedule):
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # fp32: it is the reference
        self.module = model.to(self.device)
        self.optimizer = adamw(config, model)
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.accum = grad_accum_steps(config, 1)
        self.grad_clip = config.optim.grad_clip
        self.micro_steps = 0
        self.global_steps = 0

    def __call__(self, **batch):
        return self.module(**batch)

    def backward(self, loss: torch.Tensor) -> None:
        (loss / self.accum).backward()

    def is_gradient_accumulation_boundary(self) -> bool:
        return (self.micro_steps + 1) % self.accum == 0

    def step(self) -> None:
        if self.is_gradient_accumulation_boundary():
            if self.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip)
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.global_steps += 1
        self.micro_steps += 1

    def get_lr(self) -> list[float]:
        return self.lr_scheduler.get_last_lr()

    def save_checkpoint(self, save_dir, tag: str, client_state: dict, save_latest: bool = False) -> None:
        path = Path(save_dir) / tag
        path.mkdir(parents=True, exist_ok=True)
        torch.save(
            {"module": self.module.state_dict(), "optimizer": self.optimizer.state_dict(), "lr_scheduler": self.lr_scheduler.state_dict(),
             "global_steps": self.global_steps, "micro_steps": self.micro_steps, "client_state": client_state},
            path / "torch_state.pt",
        )  # fmt: skip

    def load_checkpoint(self, load_dir, tag: str):
        path = Path(load_dir) / tag / "torch_state.pt"
        state = torch.load(path, map_location=self.device, weights_only=False)
        self.module.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.global_steps, self.micro_steps = state["global_steps"], state["micro_steps"]
        return str(path), state["client_state"]
