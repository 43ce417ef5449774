"""The PPO job the subprocess tests start on `ppo_store` (tests/conftest.py), and its environment.

A plain module with a unique name, so test files in any folder import it unambiguously (every test
folder has its own conftest.py, so `from conftest import ...` finds whichever was loaded last)."""

from __future__ import annotations

import os
from pathlib import Path

# The PPO job the subprocess tests run on ppo_store: 8 iterations, a checkpoint every 2.
PPO_JOB = ("stage=ppo", "progress=false", "ppo.steps=8", "ppo.prompts_per_step=8", "ppo.minibatch_size=8",
           "ppo.checkpoint_every=2")


def ppo_job_env() -> dict:
    """The environment of a PPO job that a test starts and compares with `ppo_plain_run`: one OpenMP
    thread (same float rounding in every such job, and DeepSpeed's ranks do not oversubscribe the
    cores), no SLURM_*/torch.distributed variables leaking in, DeepSpeed's prebuilt CPU op."""
    leaked = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in leaked}
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "rlhf-scaling" / "torch_extensions"))
    env["OMP_NUM_THREADS"] = "1"
    return env
