"""The one place that reads the launcher's environment and sets up torch.distributed / DeepSpeed.

Ranks come from torchrun's variables (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)
when present, else from Slurm's (SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS, the first host of
SLURM_JOB_NODELIST, a port derived from SLURM_JOB_ID), else one process. A job with
`nodes=N, tasks_per_node=G` under submitit/srun therefore runs N x G ranks with no launcher of ours.

DeepSpeed numbers are filled here from the stage's own settings (one source of truth): HF's
"auto" values are only resolved by its Trainer, which we do not use.
"""

from __future__ import annotations

import datetime
import os
import re
import subprocess
from dataclasses import dataclass
from typing import Mapping, Optional


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
    """First host of a Slurm nodelist: "gpu[03-05,7],cpu1" -> "gpu03"; "node1,node2" -> "node1"."""
    nodelist = nodelist.strip()
    try:  # scontrol knows every form Slurm writes
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.split():
            return out.stdout.split()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    match = re.match(r"^([^,\[]+)(?:\[([^\]]+)\])?", nodelist)
    if not match:
        raise ValueError(f"cannot parse SLURM_JOB_NODELIST={nodelist!r}")
    prefix, ranges = match.group(1), match.group(2)
    if not ranges:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return prefix + first


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


def init_distributed(env: DistEnv, backend: Optional[str] = None, timeout_s: int = 600) -> None:
    """Export the variables torch needs and join the process group (gloo on CPU, nccl on CUDA).

    A rank that cannot reach the others fails after `timeout_s` with the address it tried,
    rather than hanging the job (peer hangs: DeepSpeedExamples #381, OpenRLHF #737).
    """
    import torch
    import torch.distributed as dist

    os.environ.update(RANK=str(env.rank), LOCAL_RANK=str(env.local_rank), WORLD_SIZE=str(env.world_size),
                      MASTER_ADDR=env.master_addr, MASTER_PORT=str(env.master_port))
    if dist.is_initialized():
        return
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(env.local_rank)
    try:
        dist.init_process_group(backend, rank=env.rank, world_size=env.world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))
    except Exception as err:  # noqa: BLE001 -- re-raised with where we tried to meet
        raise RuntimeError(f"rank {env.rank}/{env.world_size} could not join {env.master_addr}:{env.master_port} "
                           f"within {timeout_s}s ({type(err).__name__}: {err})") from err


def deepspeed_config(ds, *, micro_batch_per_gpu: int, grad_accum: int, world_size: int, max_grad_norm: float,
                     precision: str) -> dict:
    """A complete DeepSpeed config from the DeepSpeed profile and the stage's own settings.

    train_batch_size = micro_batch_per_gpu x grad_accum x world_size; clipping and bf16 come from
    the stage. No optimizer/scheduler block: the stage passes its own torch optimizer and LR
    schedule, which also avoids DeepSpeed's fused_adam / cpu_adam JIT builds.
    """
    zero = {"stage": ds.zero_stage, "overlap_comm": False, "contiguous_gradients": True}
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": False}
    if ds.offload_param and ds.zero_stage == 3:
        zero["offload_param"] = {"device": "cpu", "pin_memory": False}
    if ds.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "train_batch_size": micro_batch_per_gpu * grad_accum * world_size,
        "train_micro_batch_size_per_gpu": micro_batch_per_gpu,
        "gradient_accumulation_steps": grad_accum,
        "gradient_clipping": float(max_grad_norm or 0.0),
        "bf16": {"enabled": bool(ds.bf16 or precision == "bf16")},
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
