"""A job killed mid-training (SIGKILL, or SIGTERM as Slurm sends before preemption) and started
again in the same run folder resumes from its last checkpoint and ends with the same curve."""

import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

PPO = ["stage=ppo", "progress=false", "ppo.steps=14", "ppo.prompts_per_step=8", "ppo.minibatch_size=8",
       "ppo.checkpoint_every=2"]


def cli(run_dir, store, *extra):
    return [sys.executable, "-m", "rlhf_scaling.cli", f"hydra.run.dir={run_dir}", f"artifacts_dir={store.artifacts}",
            *store.overrides, *PPO, *extra]


@pytest.fixture(scope="module")
def uninterrupted(ppo_store, tmp_path_factory):
    """The curve of the same job run through without a signal (ppo_curve.csv)."""
    run_dir = tmp_path_factory.mktemp("kill_resume") / "full"
    full = subprocess.run(cli(run_dir, ppo_store), capture_output=True, text=True, timeout=600)
    assert full.returncode == 0, full.stderr[-2000:]
    return pd.read_csv(run_dir / "ppo_curve.csv")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_ppo_job_resumes_to_the_same_curve(ppo_store, uninterrupted, tmp_path, sig):
    job = subprocess.Popen(cli(tmp_path / "cut", ppo_store), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "cut" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline:  # kill once a checkpoint exists and training has gone past it
        if (tmp_path / "cut" / "checkpoint" / "DONE").exists() and metrics.read_text().count('"ppo/step"') >= 5:
            break
        assert job.poll() is None, "the job ended before it could be killed"
        time.sleep(0.05)
    job.send_signal(sig)
    job.wait(60)
    done = pd.read_json(metrics, lines=True).dropna(subset=["ppo/step"])["ppo/step"].max()
    assert done < 13, "the job finished before it could be killed"

    again = subprocess.run(cli(tmp_path / "cut", ppo_store), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    steps = pd.read_json(metrics, lines=True).dropna(subset=["ppo/step"])["ppo/step"].tolist()
    assert sorted(set(steps)) == list(range(14)) and steps.count(0) == 1  # resumed, not run again from 0
    pd.testing.assert_frame_equal(uninterrupted, pd.read_csv(tmp_path / "cut" / "ppo_curve.csv"), rtol=1e-5)
