"""The one seam between a stage recipe and its training engine, and the helpers recipes share.

A recipe builds its model, optimizer and LR schedule, then hands them to `make_trainer`, which
returns one of two small classes with the same methods:

  TorchTrainer      a plain torch optimizer (+ schedule) in one process
  DeepSpeedTrainer  a DeepSpeed engine (ZeRO-2/3) over env.world_size data-parallel ranks

Both own everything that differs between the two: the forward context (`autocast`, `forward`),
`backward` (the finiteness check of the loss, over all ranks, and 1/grad_accum scaling),
`step` (at an accumulation boundary: clipping, the finiteness check of the gradient norm BEFORE
the weights move, optimizer and schedule steps), `scale_lr` (a cut of the learning rate that the
schedule's state keeps), `save` / `resume` of a resumable checkpoint, the
weights `whole` for generation, and the consolidated fp32 `export` of the trained module. A recipe
calls them the same way whichever it got, and never branches on the engine.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import random
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np
import torch
from torch import nn
from transformers import get_scheduler

from rlhf_scaling.checkpoint import load_checkpoint, save_checkpoint
from rlhf_scaling.distributed import (DistEnv, deepspeed_config, dist_env_from_environ, full_fp32_state_dict,
                                      gathered, load_deepspeed_checkpoint, mean_over_ranks,
                                      save_deepspeed_checkpoint, whole_for_generation, wrap_with_deepspeed,
                                      zero3_construction)

log = logging.getLogger(__name__)


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


# ----------------------------------------------------------------------------- the training seam


def rank_env(data_parallel: bool) -> DistEnv:
    """This process's place among the data-parallel ranks: from the launcher's environment when
    the stage trains through DeepSpeed (deepspeed.enabled), one process otherwise."""
    return dist_env_from_environ() if data_parallel else DistEnv()


def engine_config(*, enabled: bool, zero_stage: int, offload_optimizer: bool, offload_param: bool, bf16: bool,
                  micro_batch_per_gpu: int, grad_accum: int, world_size: int, max_grad_norm: float,
                  precision: str) -> Optional[dict]:
    """The complete DeepSpeed config of a stage (rlhf_scaling.distributed.deepspeed_config) from the
    `deepspeed` section's fields and the stage's own numbers, or None when the stage trains in one
    process with a plain torch optimizer (enabled=false)."""
    if not enabled:
        return None
    return deepspeed_config(zero_stage=zero_stage, offload_optimizer=offload_optimizer, offload_param=offload_param,
                            bf16=bf16, micro_batch_per_gpu=micro_batch_per_gpu, grad_accum=grad_accum,
                            world_size=world_size, max_grad_norm=max_grad_norm, precision=precision)


def build_for_training(build: Callable[[], nn.Module], device, engine_cfg: Optional[dict], *,
                       pretrained: bool = False, reinit: Optional[Callable[[nn.Module], None]] = None,
                       reinit_params: Callable[[nn.Module], Iterable[nn.Parameter]] = lambda m: m.parameters()
                       ) -> nn.Module:
    """The model to train, from `build()` (seeded by the caller).

    Built whole and moved to `device`, except under ZeRO-3 with `pretrained` weights: then loaded
    straight into shards (zero.Init), and `reinit(model)` re-initialises, with `reinit_params(model)`
    gathered (only those: the rest stays sharded), what the constructor initialised into empty
    shards (a fresh head: OpenRLHF #186). Random-init models are built whole in any case and
    deepspeed.initialize shards them: under zero.Init transformers' weight init would also hit
    empty shards and training would start from PyTorch's default init instead (measured: 19 of 30
    tensors differ), breaking the equality with one process.
    """
    zero3 = engine_cfg is not None and engine_cfg["zero_optimization"]["stage"] == 3
    if not (zero3 and pretrained):
        return build().to(device)
    try:
        with zero3_construction(engine_cfg, loads_pretrained=True):
            model = build()
    except RuntimeError as err:  # transformers' ZeRO-3 loading needs accelerate
        log.warning("%s; building the model whole on every rank and sharding it afterwards (more CPU memory)", err)
        return build().to(device)
    if reinit is not None:
        with gathered(list(reinit_params(model)), modifier_rank=0):
            reinit(model)
    return model


def make_trainer(model: nn.Module, optimizer, scheduler=None, *, engine_cfg: Optional[dict], where: str,
                 max_grad_norm: float, grad_accum: int = 1, precision: str = "fp32", device=None,
                 env: DistEnv = DistEnv()):
    """A DeepSpeedTrainer when `engine_cfg` is a DeepSpeed config (engine_config), else a TorchTrainer.

    where: the stage named in FloatingPointError messages; max_grad_norm: L2 clipping (0 = off);
    grad_accum: micro-batches per optimizer step; precision: fp32 | bf16 (autocast, one process).
    """
    if engine_cfg is not None:
        return DeepSpeedTrainer(model, optimizer, scheduler, engine_cfg, where=where, env=env)
    return TorchTrainer(model, optimizer, scheduler, where=where, max_grad_norm=max_grad_norm,
                        grad_accum=grad_accum, precision=precision, device=device)


class TorchTrainer:
    """Training through a plain torch optimizer (and optional LR schedule) in one process.

    `module` is the model; `forward_module` is what a recipe calls for a forward (the same model).
    Checkpoints: ours (rlhf_scaling/checkpoint.py: safetensors + a weights-only trainer state).
    """

    dtype = torch.float32  # the compute dtype of the parameters (bf16 runs under autocast)

    def __init__(self, model: nn.Module, optimizer, scheduler=None, *, where: str, max_grad_norm: float,
                 grad_accum: int = 1, precision: str = "fp32", device=None):
        self.module = self.forward_module = model
        self.optimizer, self.scheduler = optimizer, scheduler
        self.where, self.max_grad_norm, self.grad_accum = where, max_grad_norm, grad_accum
        self.precision, self.device = precision, device
        self._micro = 0

    def autocast(self):
        """The forward's context: bf16 autocast when the stage's precision asks for it."""
        return autocast(self.precision, self.device) if self.device is not None else contextlib.nullcontext()

    def whole(self):
        """Context in which `module` runs as a plain local model (always, in one process)."""
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor, step: int) -> torch.Tensor:
        """Backward of one micro-batch's loss (a mean over its examples), scaled by 1/grad_accum;
        FloatingPointError naming the stage and step on a NaN/inf loss. Returns loss/grad_accum, detached."""
        loss = loss / self.grad_accum
        check_finite(loss, self.where, step)
        loss.backward()
        return loss.detach()

    def step(self, step: int) -> Optional[float]:
        """After every backward: at an accumulation boundary, clip at max_grad_norm, check the
        gradient norm (before the weights move), step the optimizer and schedule; returns the
        gradient norm before clipping there, None between boundaries."""
        self._micro += 1
        if self._micro % self.grad_accum:
            return None
        grad_norm = nn.utils.clip_grad_norm_(self.module.parameters(), self.max_grad_norm or float("inf"))
        check_finite(grad_norm, self.where, step, "gradient norm")  # before the weights move
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(grad_norm)

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0] if self.scheduler is not None else self.optimizer.param_groups[0]["lr"]

    def scale_lr(self, factor: float) -> None:
        """Multiply the learning rate by `factor` from the next step on: the rate that step uses (set
        by the schedule's last step) and the schedule's base rates, which its state (in the checkpoints)
        holds, so a resumed run keeps the cut."""
        if self.scheduler is not None:
            self.scheduler.base_lrs = [lr * factor for lr in self.scheduler.base_lrs]
        for group in self.optimizer.param_groups:
            group["lr"] *= factor

    def save(self, ckpt_dir: Path, step: int, state: Optional[dict] = None, per_rank: Optional[dict] = None) -> None:
        """A resumable checkpoint after `step` optimizer steps / iterations: weights, optimizer,
        schedule, the recipe's `state` and `per_rank` (e.g. RNG) entries, written atomically."""
        extra = {"optimizer": self.optimizer.state_dict(), **(state or {}), **(per_rank or {}), "step": step}
        if self.scheduler is not None:
            extra["scheduler"] = self.scheduler.state_dict()
        save_checkpoint(ckpt_dir, self.module, extra)

    def resume(self, ckpt_dir: Path) -> Optional[dict]:
        """Load the last checkpoint in ckpt_dir into the model, optimizer and schedule; returns the
        recipe's state and per-rank entries with "step", or None when there is none yet."""
        state = load_checkpoint(ckpt_dir, self.module)
        if state is None:
            return None
        self.optimizer.load_state_dict(state.pop("optimizer"))
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state.pop("scheduler"))
        return state

    def export(self, child: Optional[str] = None, shell: Optional[Callable[[nn.Module], nn.Module]] = None):
        """The trained module (or its child `child`) whole, in fp32: here the live module itself."""
        return self.module if child is None else self.module[child]


class DeepSpeedTrainer:
    """Training through a DeepSpeed engine over env.world_size data-parallel ranks.

    The engine is built from the recipe's own torch optimizer and schedule (no DeepSpeed JIT
    builds); `module` is the wrapped model (ZeRO-3: its parameters are shards), `forward_module`
    the engine (what a forward goes through). engine.backward divides by gradient_accumulation_steps
    and averages gradients over ranks; engine.step clips (gradient_clipping) and steps the optimizer
    and schedule at accumulation boundaries only, so `step` is called after every micro-batch.
    Checkpoints are DeepSpeed's own (sharded optimizer state, exact resume), written by every rank,
    so the checkpoint folder must be on a filesystem the nodes share.
    """

    def __init__(self, model: nn.Module, optimizer, scheduler, engine_cfg: dict, *, where: str, env: DistEnv):
        self.engine = self.forward_module = wrap_with_deepspeed(model, optimizer, scheduler, engine_cfg, env)
        self.module = self.engine.module
        self.scheduler = self.engine.lr_scheduler
        self.where, self.env = where, env
        self.grad_accum = engine_cfg["gradient_accumulation_steps"]
        self.dtype = torch.bfloat16 if engine_cfg["bf16"]["enabled"] else torch.float32
        self._micro = 0

    def autocast(self):
        return contextlib.nullcontext()  # the engine holds bf16 weights itself when the profile asks

    def whole(self):
        """ZeRO-3: every parameter gathered once on every rank and ZeRO's hooks off (generation)."""
        return whole_for_generation(self.engine)

    def backward(self, loss: torch.Tensor, step: int) -> torch.Tensor:
        """engine.backward of this rank's loss; the finiteness check is on the mean over ranks, so
        every rank stops together. Returns that mean / grad_accum, detached."""
        total = mean_over_ranks(loss.detach())
        check_finite(total, self.where, step)
        self.engine.backward(loss)
        return total / self.grad_accum

    def step(self, step: int) -> Optional[float]:
        self.engine.step()
        self._micro += 1
        if self._micro % self.grad_accum:
            return None
        grad_norm = self.engine.get_global_grad_norm() or 0.0  # before clipping, like clip_grad_norm_
        # The step is taken inside engine.step: stop before any checkpoint can hold its weights.
        check_finite(grad_norm, self.where, step, "gradient norm")
        return float(grad_norm)

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0] if self.scheduler is not None else self.engine.get_lr()[0]

    def scale_lr(self, factor: float) -> None:
        """Multiply the learning rate by `factor` from the next step on: the rate that step uses (set
        by the schedule's last step; our AdamW's param groups, which ZeRO-2/3 step with and checkpoint)
        and the schedule's base rates, which its state (in DeepSpeed's checkpoints) holds, so a resumed
        run keeps the cut."""
        self.scheduler.base_lrs = [lr * factor for lr in self.scheduler.base_lrs]
        for group in self.scheduler.optimizer.param_groups:
            group["lr"] *= factor

    def save(self, ckpt_dir: Path, step: int, state: Optional[dict] = None, per_rank: Optional[dict] = None) -> None:
        save_deepspeed_checkpoint(self.engine, ckpt_dir, step, state or {}, self.env, per_rank=per_rank)

    def resume(self, ckpt_dir: Path) -> Optional[dict]:
        resumed = load_deepspeed_checkpoint(self.engine, ckpt_dir, self.env)
        if resumed is None:
            return None
        client, per_rank = resumed
        return {**client, **(per_rank or {})}

    def export(self, child: Optional[str] = None, shell: Optional[Callable[[nn.Module], nn.Module]] = None):
        """The trained module (or its child `child`) as ONE fp32 module on rank 0 (None elsewhere),
        gathered from the fp32 master weights of every rank into `shell(live)` built on the meta
        device (no init, no memory). A collective: every rank calls it."""
        state = full_fp32_state_dict(self.module)
        if not self.env.is_main:
            return None
        live = self.module if child is None else self.module[child]
        if child is not None:
            state = {k[len(child) + 1:]: v for k, v in state.items() if k.startswith(child + ".")}
        with torch.device("meta"):
            whole = (shell or _same_config)(live)
        whole.load_state_dict(state, strict=True, assign=True)
        if getattr(whole, "config", None) is not None:
            whole.config.torch_dtype = torch.float32
        return whole


def _same_config(module: nn.Module) -> nn.Module:
    """An empty Hugging Face model of `module`'s class and config."""
    return type(module)(copy.deepcopy(module.config))
