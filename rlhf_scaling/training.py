"""Small training helpers the stage recipes share: seeding, optimizer + LR schedule, autocast, device."""

from __future__ import annotations

import contextlib
import math
import random

import numpy as np
import torch
from transformers import get_scheduler


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch once, at the entry point (never inside a constructor: TRL #1648)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but no CUDA device is visible")
    return torch.device(device)


def optimizer_and_schedule(params, *, lr: float, weight_decay: float, schedule: str, warmup_ratio: float,
                           total_steps: int):
    """AdamW plus a transformers LR schedule (cosine | linear | constant) with linear warm-up."""
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[schedule]
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=math.ceil(warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    return optimizer, scheduler


def autocast(precision: str, device: torch.device):
    """bf16 autocast when asked; fp32 otherwise (master weights stay fp32 either way)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def check_finite(value, where: str, step: int, what: str = "loss") -> None:
    """Stop with a clear message on NaN/inf instead of training on garbage. `value`: a tensor or a
    float; `what` names it in the message (the loss, or the gradient norm: a finite loss can still
    have a non-finite gradient, which would poison the weights at the optimizer step)."""
    value = torch.as_tensor(value)
    if not torch.isfinite(value).all():
        raise FloatingPointError(f"{where}: {what} is {value.item()} at step {step}; stopping (last good checkpoint kept)")
