"""Shared pytest fixtures. Keep this file to fixtures; add yours below the existing ones."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from built_once import built_once  # tests/built_once.py: session artifacts shared by xdist workers
from ppo_job import PPO_JOB, ppo_job_env  # tests/ppo_job.py: shared by the subprocess tests

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
    """Built once per test run (once for all xdist workers: tests/built_once.py), in-process. The PPO
    jobs that tests run as subprocesses (kill/resume, preemption, DeepSpeed) only read these
    artifacts, so they share one store."""
    overrides = ("sft.steps=100", "sft.n_demos=500", "data.comparison_budget=384", "data.n_eval_prompts=32",
                 "rm_train.epochs=1", "rm_train.batch_size=8")

    def build(root: Path) -> None:
        from rlhf_scaling.cli import compose
        from rlhf_scaling.stages import data, rm, sft
        from rlhf_scaling.stages.common import open_tracker

        cfg = compose([f"artifacts_dir={root / 'artifacts'}", "stage=ppo", "progress=false", "device=cpu", *overrides])
        for name, stage in (("sft", sft), ("data", data), ("rm", rm)):
            with open_tracker(cfg, root / "runs" / name, name) as tracker:
                tracker.summary(**stage.run(cfg, tracker))

    return PPOStore(built_once(tmp_path_factory, "ppo_store", build) / "artifacts", overrides)


@pytest.fixture(scope="session")
def ppo_plain_run(ppo_store, tmp_path_factory) -> Path:
    """The run folder of PPO_JOB run through uninterrupted (`rlhf-scaling` in plain PyTorch, one
    process): the reference curve and policy of the resume and DeepSpeed tests, run once per test run."""
    import sys

    def build(folder: Path) -> None:
        proc = subprocess.run([sys.executable, "-m", "rlhf_scaling.cli", f"hydra.run.dir={folder / 'plain'}",
                               f"artifacts_dir={ppo_store.artifacts}", *ppo_store.overrides, *PPO_JOB],
                              env=ppo_job_env(), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    return built_once(tmp_path_factory, "ppo_plain", build) / "plain"


# ----------------------------------------------------------------------------- several workers (pytest-xdist)

# `make test` runs the suite on 2 xdist workers with --dist loadfile --no-loadscope-reorder: a free
# worker takes the next test file in collection order (so a module-scoped fixture is built once, on
# one worker), except that the Slurm test files form one unit (below). Two workers on 2 cores overlap
# well because much of a test's wall time is a subprocess importing torch, or a wait on Slurm.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    # One OpenMP thread per process: two workers (and the jobs they start) each spinning 2 OpenMP
    # threads on 2 cores slow each other down many times over. A value set by the caller wins.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# The files whose tests submit jobs to the local Slurm cluster (2 CPUs): run one after the other on
# one worker, so that no test's jobs queue behind another test's.
# Every file that uses the `slurm_cluster` fixture belongs here (tests/test_structure.py checks it).
SLURM_FILES = ("tests/test_preemption.py", "tests/test_sweeps_slurm.py", "tests/test_slurm_cluster.py",
               "tests/test_sweep_load.py", "tests/stages/test_paper.py")

# Test files by descending wall time (measured on 2 cores), run first so that the two workers finish
# together instead of one starting a 3-minute file when the other is done. Files not listed follow in
# collection order.
SLOW_FIRST = (
    "tests/stages/test_own_data.py",
    *SLURM_FILES,
    "tests/stages/test_ppo_deepspeed.py",
    "tests/benchmarks/test_gpu_bench_smoke.py",
    "tests/stages/test_critic_free.py",
    "tests/stages/test_study.py",
    "tests/test_distributed.py",
    "tests/stages/test_dpo.py",
    "tests/benchmarks/test_bench_trl_rloo_grpo.py",
    "tests/test_run_folders.py",
    "tests/analysis/test_report_cli.py",
    "tests/stages/test_faults.py",
)


def pytest_collection_modifyitems(config, items) -> None:
    """Slow files first (SLOW_FIRST); the order within a file is kept."""
    rank = {path: i for i, path in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


def pytest_xdist_make_scheduler(config, log):
    """--dist loadfile, with the Slurm files as one unit (xdist's own xdist_group marks do not group
    under pytest 9.2, whose node ids they cannot rewrite)."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SuiteScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::")[0]
            return "slurm" if path in SLURM_FILES else path

    return SuiteScheduling(config, log)
