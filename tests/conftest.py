"""Shared pytest fixtures. Keep this file to fixtures; add yours below the existing ones."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository checkout (where conf/, slurm/ and rlhf_scaling/ live)."""
    return REPO_ROOT


# ----------------------------------------------------------------------------- local Slurm cluster


@dataclass(frozen=True)
class SlurmCluster:
    """The single-node test cluster of `slurm/local_cluster.sh` (node localhost, partition debug)."""

    state_dir: Path
    conf: Path  # its slurm.conf; SLURM_CONF points here for the whole test session
    partition: str = "debug"
    gpus: int = 2  # fake GPUs: gres jobs get CUDA_VISIBLE_DEVICES, nothing more

    def env(self, **extra: str) -> dict:
        """An environment for a process that submits jobs: this cluster's SLURM_CONF, no
        SLURM_*/torch.distributed variables leaking from an enclosing job, plus `extra`."""
        leaked = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in leaked}
        env["SLURM_CONF"] = str(self.conf)
        env.update(extra)
        return env


def _slurm_unavailable(reason: str) -> None:
    """Skip on a developer machine; fail under CI, where these tests are meant to run."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}\n(CI is set: the Slurm tests must run there, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """Ensure the local cluster is up (`slurm/local_cluster.sh start`, idempotent) and point
    SLURM_CONF at it for the session. Skips outside CI when it cannot be had; fails in CI."""
    script = REPO_ROOT / "slurm" / "local_cluster.sh"
    if shutil.which("sbatch") is None:
        _slurm_unavailable(f"sbatch not found: run `bash {script} start` as root (it installs slurm-wlm and munge)")
    state_dir = Path(os.environ.get("RLHF_SLURM_DIR", "/tmp/rlhf-slurm")).resolve()
    try:
        proc = subprocess.run(
            ["bash", str(script), "start"], capture_output=True, text=True, timeout=600,
            env={**os.environ, "RLHF_SLURM_DIR": str(state_dir)},
        )
    except subprocess.TimeoutExpired as err:
        _slurm_unavailable(f"`{script} start` did not finish in {err.timeout}s")
    if proc.returncode != 0:
        _slurm_unavailable(f"`{script} start` failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    cluster = SlurmCluster(state_dir=state_dir, conf=state_dir / "slurm.conf")
    mp = pytest.MonkeyPatch()
    mp.setenv("SLURM_CONF", str(cluster.conf))
    yield cluster
    mp.undo()  # the cluster stays up: the next session (or `make test`) reuses it


# ----------------------------------------------------------------------------- shared PPO upstream


@dataclass(frozen=True)
class PPOStore:
    """An artifact store holding a PPO job's upstream artifacts (SFT policy, preference data, the
    tiny-m proxy RM), and the overrides that name them: a job given `overrides` finds them there."""

    artifacts: Path
    overrides: tuple


@pytest.fixture(scope="session")
def ppo_store(tmp_path_factory) -> PPOStore:
    """Built once per session, in-process. The PPO jobs that tests run as subprocesses (kill/resume,
    preemption, DeepSpeed) only read these artifacts, so they share one store."""
    from rlhf_scaling.cli import compose
    from rlhf_scaling.stages import data, rm, sft
    from rlhf_scaling.stages.common import open_tracker

    root = tmp_path_factory.mktemp("ppo_store")
    store = PPOStore(root / "artifacts", ("sft.steps=100", "sft.n_demos=500", "data.comparison_budget=384",
                                          "data.n_eval_prompts=32", "rm_train.epochs=1", "rm_train.batch_size=8"))
    cfg = compose([f"artifacts_dir={store.artifacts}", "stage=ppo", "progress=false", "device=cpu", *store.overrides])
    for name, stage in (("sft", sft), ("data", data), ("rm", rm)):
        with open_tracker(cfg, root / "runs" / name, name) as tracker:
            tracker.summary(**stage.run(cfg, tracker))
    return store


from ppo_job import PPO_JOB, ppo_job_env  # noqa: E402  (tests/ppo_job.py: shared by the subprocess tests)


@pytest.fixture(scope="session")
def ppo_plain_run(ppo_store, tmp_path_factory) -> Path:
    """The run folder of PPO_JOB run through uninterrupted (`rlhf-scaling` in plain PyTorch, one
    process): the reference curve and policy of the resume and DeepSpeed tests, run once."""
    import sys

    run_dir = tmp_path_factory.mktemp("ppo_plain") / "plain"
    proc = subprocess.run([sys.executable, "-m", "rlhf_scaling.cli", f"hydra.run.dir={run_dir}",
                           f"artifacts_dir={ppo_store.artifacts}", *ppo_store.overrides, *PPO_JOB],
                          env=ppo_job_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run_dir
