"""A job killed mid-training (SIGKILL, or SIGTERM as Slurm sends before preemption) and started
again in the same run folder resumes from its last checkpoint and ends with the same curve."""

import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

BASE = ["stage=ppo", "stage.build_upstream=true", "progress=false", "sft.steps=100", "sft.n_demos=500",
        "data.comparison_budget=384", "data.n_eval_prompts=32", "rm_train.epochs=1", "rm_train.batch_size=8",
        "ppo.steps=14", "ppo.prompts_per_step=8", "ppo.minibatch_size=8", "ppo.checkpoint_every=2"]


def cli(run_dir, artifacts, *extra):
    return [sys.executable, "-m", "rlhf_scaling.cli", f"hydra.run.dir={run_dir}", f"artifacts_dir={artifacts}",
            *BASE, *extra]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_ppo_job_resumes_to_the_same_curve(tmp_path, sig):
    artifacts = tmp_path / "artifacts"
    full = subprocess.run(cli(tmp_path / "full", artifacts), capture_output=True, text=True, timeout=600)
    assert full.returncode == 0, full.stderr[-2000:]

    job = subprocess.Popen(cli(tmp_path / "cut", artifacts), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "cut" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline:  # kill once a checkpoint exists and training has gone past it
        if (tmp_path / "cut" / "checkpoint" / "DONE").exists() and metrics.read_text().count('"ppo/step"') >= 5:
            break
        time.sleep(0.05)
    job.send_signal(sig)
    job.wait(60)
    done = pd.read_json(metrics, lines=True).dropna(subset=["ppo/step"])["ppo/step"].max()
    assert done < 13, "the job finished before it could be killed"

    again = subprocess.run(cli(tmp_path / "cut", artifacts), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    a = pd.read_csv(tmp_path / "full" / "ppo_curve.csv")
    b = pd.read_csv(tmp_path / "cut" / "ppo_curve.csv")
    pd.testing.assert_frame_equal(a, b, rtol=1e-5)
