"""A preemption signal is held until the loop's safe point, where the checkpoint is written and
the previous handler (submitit's requeue) runs; the loop never goes on past it."""

import os
import signal

import pytest

from rlhf_scaling.preemption import Preemption, preempt_signal


def _loop(preemption, signal_at: int, steps: int = 10):
    """A training loop that receives the signal in the middle of iteration `signal_at`."""
    done, saves = [], []
    for step in range(steps):
        if step == signal_at:
            os.kill(os.getpid(), preemption.signum)
        done.append(step)  # the rest of the iteration still runs
        preemption.checkpoint_if_signalled(lambda: saves.append(step + 1))
    return done, saves


def test_signal_is_held_to_the_safe_point_then_the_previous_handler_runs():
    calls = []

    def submitit_like(signum, frame):  # records, then ends the job as submitit does after requeueing
        calls.append(signum)
        raise SystemExit(-1)

    previous = signal.signal(signal.SIGUSR2, submitit_like)
    done, saves = [], []
    try:
        with pytest.raises(SystemExit) as stop, Preemption(signal.SIGUSR2) as preemption:
            for step in range(10):
                if step == 3:
                    os.kill(os.getpid(), signal.SIGUSR2)
                done.append(step)
                preemption.checkpoint_if_signalled(lambda: saves.append(step + 1))
        assert stop.value.code == -1
        assert done == [0, 1, 2, 3] and saves == [4]  # saved after the signalled iteration, nothing after
        assert calls == [signal.SIGUSR2]
        assert signal.getsignal(signal.SIGUSR2) is submitit_like  # restored
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_without_a_handler_the_job_saves_and_exits_with_128_plus_signal():
    previous = signal.signal(signal.SIGUSR2, signal.SIG_DFL)
    try:
        with pytest.raises(SystemExit) as stop, Preemption(signal.SIGUSR2) as preemption:
            done, saves = _loop(preemption, signal_at=5)
        assert stop.value.code == 128 + signal.SIGUSR2
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_no_signal_no_checkpoint_and_handlers_restored():
    before = signal.getsignal(signal.SIGUSR2)
    with Preemption(signal.SIGUSR2) as preemption:
        done, saves = _loop(preemption, signal_at=-1)
    assert done == list(range(10)) and saves == []
    assert signal.getsignal(signal.SIGUSR2) == before


def test_signal_name_follows_submitit_variable(monkeypatch):
    monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL", raising=False)
    assert preempt_signal() == signal.SIGUSR2
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "USR1")
    assert preempt_signal() == signal.SIGUSR1
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "SIGTERM")
    assert preempt_signal() == signal.SIGTERM


# ----------------------------------------------------------------------------- on the real local Slurm

STEPS = 30  # enough that the job is still running when the signal reaches it (sent after iteration 2)
PPO = ["stage=ppo", "progress=false", f"ppo.steps={STEPS}", "ppo.prompts_per_step=8", "ppo.minibatch_size=8",
       "ppo.checkpoint_every=1000"]


def _wait(condition, timeout: float, what: str, poll: float = 0.05):
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.mark.slurm
@pytest.mark.slow
def test_preempted_slurm_job_checkpoints_requeues_and_resumes_to_the_same_curve(slurm_cluster, ppo_store, tmp_path):
    """`scancel --signal=USR2` (what a preemption or the time limit sends) to a PPO job launched by
    the submitit launcher: it checkpoints at the end of the iteration, submitit requeues it, and
    the requeued job resumes there: the curve equals an uninterrupted run's, no iteration twice."""
    import json
    import subprocess
    import sys

    import pandas as pd

    job_args = [f"artifacts_dir={ppo_store.artifacts}", *ppo_store.overrides, *PPO]
    # The uninterrupted run, beside the Slurm job (it mostly waits on the scheduler): its reference curve.
    with open(tmp_path / "full.log", "w") as log:
        full = subprocess.Popen([sys.executable, "-m", "rlhf_scaling.cli", f"hydra.run.dir={tmp_path / 'full'}",
                                 *job_args], env=slurm_cluster.env(), stdout=log, stderr=subprocess.STDOUT)

    sweep, job_dir = tmp_path / "sweep", tmp_path / "sweep" / "job"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "rlhf_scaling.cli", "-m", "hydra/launcher=slurm", "slurm=local", "slurm.mem_gb=2",
         f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=job", *job_args],
        cwd=tmp_path, env=slurm_cluster.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        metrics = job_dir / "metrics.jsonl"
        _wait(lambda: metrics.is_file() and metrics.read_text().count('"ppo/step"') >= 2, 300, "2 PPO iterations")
        (job_id,) = [p.name for p in (sweep / ".submitit").iterdir() if p.is_dir()]
        env = slurm_cluster.env()
        subprocess.run(["scancel", "--signal=USR2", job_id], env=env, check=True, timeout=60)
        status = lambda: json.loads((job_dir / "status.json").read_text())  # noqa: E731
        _wait(lambda: status()["status"] == "interrupted", 120, "the job to stop at the signal")
        stopped_at = pd.read_json(metrics, lines=True).dropna(subset=["ppo/step"])["ppo/step"].max()
        assert stopped_at < STEPS - 1, "the job finished before the signal reached it"
        assert (job_dir / "checkpoint" / "DONE").is_file()  # written at the signal: checkpoint_every is 1000
        # Slurm holds a requeued job back (BeginTime, ~2 min); let it start now.
        _wait(lambda: "PENDING" in subprocess.run(["scontrol", "show", "job", job_id], env=env, capture_output=True,
                                                  text=True).stdout, 120, "the requeue")
        subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], env=env, check=True, timeout=60)
        out, _ = launcher.communicate(timeout=600)
        assert launcher.returncode == 0, out[-3000:]
        assert full.wait(timeout=600) == 0, (tmp_path / "full.log").read_text()[-3000:]
    finally:
        if full.poll() is None:
            full.kill()
        if launcher.poll() is None:
            launcher.kill()
            subprocess.run(["scancel", "--name=cli"], env=slurm_cluster.env(), timeout=60)

    final = status()
    assert final["status"] == "completed" and final["attempt"] == 2
    logged = pd.read_json(metrics, lines=True).dropna(subset=["ppo/step"])["ppo/step"]
    assert logged.tolist() == list(range(STEPS))  # resumed right after the signalled iteration
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "full" / "ppo_curve.csv"),
                                  pd.read_csv(job_dir / "ppo_curve.csv"), rtol=1e-5)
