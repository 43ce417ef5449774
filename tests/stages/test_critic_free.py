"""The critic-free algorithms through the CLI (`rlhf-scaling stage=ppo ppo.algorithm=rloo|grpo`, as a
user runs them): they raise the proxy reward of a tiny policy, train no critic (none in the
checkpoint, no value loss, no critic FLOPs), a killed job resumes to the uninterrupted curve, and
under DeepSpeed ZeRO-2 on one CPU rank they train the same policy as plain PyTorch."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # several CLI runs: minutes on a loaded 2-core CPU

ALGORITHM = {"rloo": ["ppo.algorithm=rloo"], "grpo": ["ppo.algorithm=grpo", "ppo.kl_estimator=k3"]}
# 8 prompts x 4 rollouts (the groups), two minibatches of 16: the ratio moves between them.
SMALL = ["stage=ppo", "progress=false", "ppo.prompts_per_step=8", "ppo.samples_per_prompt=4",
         "ppo.minibatch_size=16", "ppo.checkpoint_every=2", "ppo.eval_prompts=16", "ppo.eval_every=4"]


def env() -> dict:
    out = {k: v for k, v in os.environ.items()
           if not k.startswith("SLURM_") and k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    out.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "rlhf-scaling" / "torch_extensions"))
    out["OMP_NUM_THREADS"] = "1"
    return out


def cli(run_dir: Path, store, algorithm: str, *extra) -> list:
    return [sys.executable, "-m", "rlhf_scaling.cli", f"hydra.run.dir={run_dir}", f"artifacts_dir={store.artifacts}",
            *store.overrides, *SMALL, *ALGORITHM[algorithm], *extra]


def run(cmd, timeout=600):
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def metrics(run_dir: Path) -> pd.DataFrame:
    return pd.read_json(run_dir / "metrics.jsonl", lines=True)


@pytest.fixture(scope="module")
def trained(ppo_store, tmp_path_factory):
    """Each algorithm run through for 12 iterations (lr 1e-3), plain PyTorch: {algorithm: run folder}."""
    root = tmp_path_factory.mktemp("critic_free")
    for algorithm in ALGORITHM:
        run(cli(root / algorithm, ppo_store, algorithm, "ppo.steps=12", "ppo.lr=1e-3"))
    return {a: root / a for a in ALGORITHM}


@pytest.mark.parametrize("algorithm", list(ALGORITHM))
def test_critic_free_algorithm_raises_the_proxy_and_trains_no_critic(trained, algorithm):
    m = metrics(trained[algorithm])
    batches = m.dropna(subset=["ppo/step"])
    assert batches["ppo/step"].tolist() == list(range(12))
    # (this weak proxy's scores span about ±0.3; iteration-to-iteration noise is about 0.05)
    assert batches["ppo/proxy"].tail(4).mean() > batches["ppo/proxy"].head(2).mean() + 0.05
    evals = m.dropna(subset=["eval/step"])
    assert evals["eval/step"].tolist() == [0, 4, 8, 12]
    assert evals["eval/proxy"].iloc[-1] > evals["eval/proxy"].iloc[0] + 0.1  # held out, same sampling seed
    assert (batches["ppo/kl"] != 0).any() and evals[["eval/gold", "eval/kl"]].notna().all().all()
    # No critic: no value loss logged, none in the checkpoint, no critic parameters counted.
    assert "ppo/value_loss" not in batches or batches["ppo/value_loss"].isna().all()
    assert ("ppo/kl_loss" in batches and (batches["ppo/kl_loss"] > 0).all()) == (algorithm == "grpo")
    weights = load_file(str(trained[algorithm] / "checkpoint" / "model.safetensors"))
    assert weights and not any(k.startswith("critic.") for k in weights)
    summary = json.loads((trained[algorithm] / "summary.json").read_text())
    assert summary["ppo/n_params_critic"] == 0 and summary["ppo/n_params_policy"] > 0


@pytest.mark.parametrize("algorithm", list(ALGORITHM))
def test_killed_critic_free_job_resumes_to_the_same_curve(ppo_store, trained, tmp_path, algorithm):
    """SIGKILL once a checkpoint exists and training has gone past it; the same command again resumes
    there and ends with the curve (and held-out evaluations) of the uninterrupted run."""
    cmd = cli(tmp_path / "cut", ppo_store, algorithm, "ppo.steps=12", "ppo.lr=1e-3")
    job = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = tmp_path / "cut" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline:
        if (tmp_path / "cut" / "checkpoint" / "DONE").exists() and records.read_text().count('"ppo/step"') >= 5:
            break
        assert job.poll() is None, "the job ended before it could be killed"
        time.sleep(0.05)
    job.send_signal(signal.SIGKILL)
    job.wait(60)
    assert metrics(tmp_path / "cut").dropna(subset=["ppo/step"])["ppo/step"].max() < 11, "finished before the kill"
    run(cmd)
    steps = metrics(tmp_path / "cut").dropna(subset=["ppo/step"])["ppo/step"].tolist()
    assert sorted(set(steps)) == list(range(12)) and steps.count(0) == 1  # resumed, not run again from 0
    for name in ("ppo_curve.csv", "ppo_eval_curve.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(trained[algorithm] / name), pd.read_csv(tmp_path / "cut" / name),
                                      rtol=1e-5)


@pytest.mark.distributed
@pytest.mark.parametrize("algorithm", list(ALGORITHM))
def test_zero2_on_one_rank_matches_plain_pytorch(ppo_store, tmp_path, algorithm):
    """Same seed and rollouts: DeepSpeed ZeRO-2 (clipping, Adam on flat fp32 partitions) over the
    policy alone trains the same policy as the plain loop, to fp32 tolerance."""
    short = ["ppo.steps=4", "ppo.lr=1e-3"]
    run(cli(tmp_path / "plain", ppo_store, algorithm, *short))
    run(cli(tmp_path / "ds", ppo_store, algorithm, *short, "deepspeed=zero2", "deepspeed.bf16=false"))
    a, b = (metrics(tmp_path / d).dropna(subset=["ppo/step"]) for d in ("plain", "ds"))
    keys = ["ppo/proxy", "ppo/gold", "ppo/kl", "ppo/policy_loss", "ppo/entropy"] + (["ppo/kl_loss"] if algorithm == "grpo" else [])
    for key in keys:
        assert b[key].tolist() == pytest.approx(a[key].tolist(), rel=1e-4, abs=1e-5), key
    assert a["ppo/kl"].abs().max() > 1e-3  # the policy moved: a real comparison
    wa, wb = (load_file(str(tmp_path / d / "policy" / "model.safetensors")) for d in ("plain", "ds"))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-5)


def test_grpo_kl_coefficient_holds_the_policy_near_the_reference(ppo_store, trained, tmp_path):
    """ppo.kl_coef is GRPO's KL loss weight (no reward penalty): at 1.0 instead of 0.01, the same
    run ends much closer to the reference (a KL term left out of the loss would change nothing)."""
    run(cli(tmp_path / "strong", ppo_store, "grpo", "ppo.steps=12", "ppo.lr=1e-3", "ppo.kl_coef=1.0"))
    final = lambda d: metrics(d).dropna(subset=["eval/step"])["eval/kl"].iloc[-1]  # noqa: E731
    assert final(tmp_path / "strong") < 0.5 * final(trained["grpo"])
