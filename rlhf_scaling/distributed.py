"""The one place that reads the launcher's environment and sets up torch.distributed / DeepSpeed.

Ranks come from torchrun's variables (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)
when present, else from Slurm's (SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS, the first host of
SLURM_JOB_NODELIST, a port derived from SLURM_JOB_ID), else one process. A job with
`nodes=N, tasks_per_node=G` under submitit/srun therefore runs N x G ranks with no launcher of ours.

DeepSpeed numbers are filled here from the stage's own settings (one source of truth): HF's
"auto" values are only resolved by its Trainer, which we do not use.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import re
import socket
import subprocess
from dataclasses import dataclass
from typing import Iterator, Mapping, Optional


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def first_host(nodelist: str) -> str:
    """First host of a Slurm nodelist: "gpu[03-05,7],cpu1" -> "gpu03"; "node1,node2" -> "node1";
    "node[1-2]-ib" -> "node1-ib"."""
    nodelist = nodelist.strip()
    try:  # scontrol knows every form Slurm writes
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.split():
            return out.stdout.split()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    # Our fallback: the first entry is `prefix[ranges]suffix` or a plain name; the first host is
    # the prefix, the first number of the first range (zero padding kept), the suffix.
    match = re.match(r"^([^,\[]+)(?:\[([^\]]+)\]([^,]*))?", nodelist)
    if not match:
        raise ValueError(f"cannot parse SLURM_JOB_NODELIST={nodelist!r}")
    prefix, ranges, suffix = match.group(1), match.group(2), match.group(3) or ""
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0] + suffix


def dist_env_from_environ(environ: Mapping[str, str] = os.environ) -> DistEnv:
    """torchrun's variables, else Slurm's, else a single process."""
    if "RANK" in environ and "WORLD_SIZE" in environ:
        return DistEnv(int(environ["RANK"]), int(environ.get("LOCAL_RANK", 0)), int(environ["WORLD_SIZE"]),
                       environ.get("MASTER_ADDR", "127.0.0.1"), int(environ.get("MASTER_PORT", 29500)))
    if "SLURM_PROCID" in environ and int(environ.get("SLURM_NTASKS", "1")) > 1:
        nodelist = environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST") or "127.0.0.1"
        port = 10000 + int(environ.get("SLURM_JOB_ID", "0")) % 20000
        return DistEnv(int(environ["SLURM_PROCID"]), int(environ.get("SLURM_LOCALID", 0)),
                       int(environ["SLURM_NTASKS"]), first_host(nodelist), port)
    return DistEnv()


def free_port() -> int:
    """A TCP port nobody listens on right now (for one-process groups and tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(env: DistEnv, backend: Optional[str] = None, timeout_s: int = 600, *,
                     single_process: bool = False) -> bool:
    """Export the variables torch needs and join the process group (gloo on CPU, nccl on CUDA).

    One process (world_size 1) needs no group and this is a no-op, unless `single_process`:
    DeepSpeed wants a group even alone (it would otherwise go looking for MPI); that group
    rendezvous on a free local port unless MASTER_PORT is set, so two one-process jobs on a node
    do not collide on 29500.
    A rank that cannot reach the others fails after `timeout_s` with the address it tried, rather
    than hanging the job (peer hangs: DeepSpeedExamples #381, OpenRLHF #737, #898).
    Returns whether a process group is up.
    """
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return True
    if env.world_size == 1 and not single_process:
        return False
    if env.world_size == 1 and "MASTER_PORT" not in os.environ:
        env = dataclasses.replace(env, master_addr="127.0.0.1", master_port=free_port())
    os.environ.update(RANK=str(env.rank), LOCAL_RANK=str(env.local_rank), WORLD_SIZE=str(env.world_size),
                      MASTER_ADDR=env.master_addr, MASTER_PORT=str(env.master_port))
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(env.local_rank)
    try:
        dist.init_process_group(backend, rank=env.rank, world_size=env.world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))
    except Exception as err:  # noqa: BLE001 -- re-raised with where we tried to meet
        raise RuntimeError(
            f"rank {env.rank}/{env.world_size} could not join the process group at {env.master_addr}:"
            f"{env.master_port} within {timeout_s}s ({type(err).__name__}: {err}). Check that every rank "
            f"was started (srun/torchrun), that the first host is reachable from this one and the port is "
            f"free.") from err
    return True


def deepspeed_config(*, zero_stage: int, offload_optimizer: bool, offload_param: bool, bf16: bool,
                     micro_batch_per_gpu: int, grad_accum: int, world_size: int, max_grad_norm: float,
                     precision: str) -> dict:
    """A complete DeepSpeed config from the DeepSpeed profile (zero_stage, offload_*, bf16: the
    `deepspeed` config section) and the stage's own settings.

    Every number is filled here (HF's "auto" is resolved only by its Trainer):
      train_batch_size = micro_batch_per_gpu x grad_accum x world_size (DeepSpeed asserts this);
      gradient_clipping = the stage's max_grad_norm (0 = off); bf16 when the profile or the stage
      asks for it. No optimizer/scheduler block: the stage passes its own torch optimizer and LR
      schedule, which also avoids DeepSpeed's fused_adam / cpu_adam JIT builds.
    Optimizer offload with a client optimizer: DeepSpeed refuses anything but its DeepSpeedCPUAdam
    unless `zero_force_ds_cpu_optimizer` is false. We set it false, so torch's AdamW steps the fp32
    master weights on the CPU: identical maths, no JIT build, slower than DeepSpeedCPUAdam on big
    models (a throughput cost only where offload is used).
    """
    zero = {"stage": zero_stage, "overlap_comm": False, "contiguous_gradients": True}
    if offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": False}
    if offload_param and zero_stage == 3:
        zero["offload_param"] = {"device": "cpu", "pin_memory": False}
    if zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "train_batch_size": micro_batch_per_gpu * grad_accum * world_size,
        "train_micro_batch_size_per_gpu": micro_batch_per_gpu,
        "gradient_accumulation_steps": grad_accum,
        "gradient_clipping": float(max_grad_norm or 0.0),
        "bf16": {"enabled": bool(bf16 or precision == "bf16")},
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,  # torch AdamW is "untested" to DeepSpeed, and fine
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


# ----------------------------------------------------------------------------- DeepSpeed engine and weights


@contextlib.contextmanager
def zero3_construction(ds_config: dict, loads_pretrained: bool = False) -> Iterator[None]:
    """Build a model whose parameters are partitioned as they are created (ZeRO-3 only).

    Each module's parameters are sharded across the ranks as soon as its __init__ returns, so a
    model too large for one device never exists whole; `from_pretrained` inside this context
    loads the checkpoint into the shards when `loads_pretrained` keeps an HfDeepSpeedConfig alive
    (transformers needs `accelerate` installed for that).
    Anything that reads or re-initialises a parameter afterwards must do so inside `gathered`:
    outside it the tensors are empty placeholders (OpenRLHF #186, TRL #3097). A no-op for ZeRO-0/2.
    """
    if ds_config["zero_optimization"]["stage"] != 3:
        yield
        return
    import importlib.util

    import deepspeed

    hf_ds = None
    if loads_pretrained:
        # Check first: HfDeepSpeedConfig registers itself before it fails on a missing accelerate,
        # and a half-built one then breaks every later from_pretrained.
        if importlib.util.find_spec("accelerate") is None:
            raise RuntimeError("loading pretrained weights into ZeRO-3 shards needs transformers' DeepSpeed "
                               "integration, which needs `pip install accelerate`")
        from transformers.integrations import HfDeepSpeedConfig

        hf_ds = HfDeepSpeedConfig(ds_config)  # transformers holds only a weakref: keep it alive here
    _join_for_deepspeed()  # zero.Init reads the world size from deepspeed.comm
    with deepspeed.zero.Init(config_dict_or_path=ds_config):
        yield
    del hf_ds  # models built later (e.g. for writing on rank 0) are whole again


def gathered(params, modifier_rank: Optional[int] = None):
    """Context in which ZeRO-3-partitioned `params` are whole on every rank (writes on
    `modifier_rank` are broadcast back into the shards on exit); a no-op for unpartitioned ones."""
    params = [p for p in params if hasattr(p, "ds_id")]
    if not params:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=modifier_rank)


@contextlib.contextmanager
def whole_for_generation(engine) -> Iterator[None]:
    """Context in which a ZeRO-3 engine's module runs as a plain local model: every parameter
    gathered whole on every rank, ZeRO-3's per-module hooks removed (re-registered on exit).

    Why: under the hooks each forward all-gathers each layer, so ranks that stop sampling at
    different lengths would wait forever on each other's collectives; gathering once per rollout
    phase also replaces one all-gather per layer per generated token. Costs the memory of the
    whole module on every rank while generating. Uses DeepSpeed's own unwrap_model_for_generation.
    A no-op without an engine or below ZeRO-3 (the weights are whole there already).
    """
    if engine is None or engine.zero_optimization_stage() != 3:
        yield
        return
    from deepspeed.runtime.zero.stage3 import unwrap_model_for_generation

    with unwrap_model_for_generation(engine):
        yield


def wrap_with_deepspeed(model, optimizer, scheduler, ds_config: dict, env: Optional[DistEnv] = None):
    """deepspeed.initialize with our own torch optimizer and LR schedule; returns the engine.

    engine.backward divides the loss by gradient_accumulation_steps and engine.step steps the
    optimizer, clips and steps the schedule at accumulation boundaries only; gradients are
    averaged over the ranks. The process group is joined first if the launcher has not (one
    process included, which DeepSpeed requires).
    """
    import deepspeed

    _join_for_deepspeed(env)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=ds_config)
    return engine


def _join_for_deepspeed(env: Optional[DistEnv] = None) -> None:
    """Our process group (one process included: DeepSpeed wants one), then deepspeed.comm on top of it."""
    import deepspeed
    import torch.distributed as dist

    init_distributed(env or dist_env_from_environ(), single_process=True)
    deepspeed.init_distributed(dist_backend=dist.get_backend())


def full_fp32_state_dict(model) -> Optional[dict]:
    """The consolidated fp32 state dict of a DeepSpeed-wrapped `model` on rank 0, None elsewhere.

    Parameters come from the optimizer's fp32 master weights (under bf16 the module itself only
    holds bf16 copies), assembled from the shards of every rank; buffers are not sharded and come
    from the module (upcast to fp32 when bf16 cast them down). A collective: EVERY rank must call it.
    The result has the same keys, shapes and dtypes as the unwrapped model's state_dict, so the
    files written from it are identical in format to a single-process run's.
    """
    import torch
    import torch.distributed as dist
    from deepspeed.utils import safe_get_full_fp32_param

    main = not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
    names = {id(p): n for n, p in model.named_parameters()}
    state = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in names:
            full = safe_get_full_fp32_param(tensor)
            if full is None:  # not managed by a ZeRO/bf16 optimizer: the module holds the fp32 value
                with gathered([tensor]):
                    full = tensor.detach().float().clone()
        else:
            full = tensor.detach().clone()
            full = full.float() if full.is_floating_point() else full
        if main:
            state[name] = full.cpu()
    return state if main else None


# ----------------------------------------------------------------------------- collectives the stages share
# Each is the identity (and needs no process group) in one process, so a recipe calls them unconditionally.


def _group_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def barrier() -> None:
    import torch.distributed as dist

    if _group_size() > 1:
        dist.barrier()


def mean_over_ranks(x):
    """The mean over ranks of a per-rank tensor (what one process would have computed from equal shares)."""
    import torch.distributed as dist

    if _group_size() > 1:
        x = x.clone()
        dist.all_reduce(x)
        x /= dist.get_world_size()
    return x


def sum_over_ranks(x):
    """The sum over ranks of a per-rank tensor."""
    import torch.distributed as dist

    if _group_size() > 1:
        x = x.clone()
        dist.all_reduce(x)
    return x


def cat_over_ranks(x):
    """(B, ...) per rank -> (W·B, ...) on every rank, rank 0's rows first; every rank must pass the same B."""
    import torch
    import torch.distributed as dist

    if _group_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def from_rank0(value):
    """Rank 0's `value` (any picklable object) on every rank: e.g. a path every rank must share
    when the ranks composed their configs at slightly different times, or whether rank 0 builds."""
    import torch.distributed as dist

    if _group_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def save_deepspeed_checkpoint(engine, ckpt_dir, step: int, client_state: dict, env: DistEnv,
                              per_rank: Optional[dict] = None) -> None:
    """DeepSpeed's sharded checkpoint in ckpt_dir/step<step> (every rank writes its part, so
    ckpt_dir must be on a filesystem the nodes share). `per_rank` (e.g. RNG states) goes to
    rank<r>.pt in the tag folder BEFORE DeepSpeed moves its `latest` pointer there. Older tags are
    deleted once the new one is complete, so a kill mid-save leaves the previous checkpoint."""
    import shutil
    from pathlib import Path

    import torch

    ckpt_dir, tag = Path(ckpt_dir), f"step{step}"
    if per_rank is not None:
        (ckpt_dir / tag).mkdir(parents=True, exist_ok=True)
        torch.save(per_rank, ckpt_dir / tag / f"rank{env.rank}.pt")
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state={**client_state, "step": step})
    barrier()
    if env.is_main:
        for old in ckpt_dir.glob("step*"):
            if old.name != tag and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)


def load_deepspeed_checkpoint(engine, ckpt_dir, env: DistEnv) -> Optional[tuple]:
    """(client_state, per_rank or None) of the latest complete DeepSpeed checkpoint in ckpt_dir, loaded
    into `engine` (weights, optimizer, schedule), or None when there is none yet."""
    from pathlib import Path

    import torch

    ckpt_dir = Path(ckpt_dir)
    if not (ckpt_dir / "latest").is_file():
        return None
    path, client = engine.load_checkpoint(str(ckpt_dir))
    if path is None:
        raise RuntimeError(f"could not load the DeepSpeed checkpoint in {ckpt_dir}")
    tag = (ckpt_dir / "latest").read_text().strip()
    mine = ckpt_dir / tag / f"rank{env.rank}.pt"
    per_rank = torch.load(mine, weights_only=True) if mine.is_file() else None  # never unpickle objects
    return client, per_rank
