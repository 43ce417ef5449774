"""PPO under DeepSpeed ZeRO on CPU: the same curves and policy as plain PyTorch on one rank (either critic);
on 2 ranks (gloo) ZeRO-3 generates with sharded weights, writes one consolidated policy, and a
killed job resumes from DeepSpeed's checkpoint to the curve of an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from ppo_job import PPO_JOB as PPO
from ppo_job import ppo_job_env as _env
from safetensors.torch import load_file

from rlhf_scaling.distributed import free_port

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

def _cli(run_dir: Path, store, *extra, ranks: int = 1) -> list:
    """The PPO job on `store` (the session's shared ppo_store), on `ranks` processes."""
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks),
              f"--master_port={free_port()}"] if ranks > 1 else [sys.executable]
    return [*launch, "-m", "rlhf_scaling.cli", f"hydra.run.dir={run_dir}", f"artifacts_dir={store.artifacts}",
            *store.overrides, *PPO, *extra]


def _run(cmd, timeout=600):
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _metrics(run_dir: Path) -> pd.DataFrame:
    return pd.read_json(run_dir / "metrics.jsonl", lines=True).dropna(subset=["ppo/step"])


@pytest.fixture(scope="module")
def plain(ppo_store, ppo_plain_run, tmp_path_factory):
    """The plain one-process PPO runs on the session's upstream artifacts, by critic: "separate" is the
    session's ppo_plain_run (PPO_JOB), "shared" the same job with ppo.critic=shared."""
    shared = tmp_path_factory.mktemp("ppo_ds") / "plain_shared"
    _run(_cli(shared, ppo_store, "ppo.critic=shared"))
    return {"separate": ppo_plain_run, "shared": shared}


@pytest.mark.parametrize("profile, critic", [("zero2", "separate"), ("zero3", "shared")])
def test_zero_on_one_rank_matches_plain_pytorch(ppo_store, plain, tmp_path, profile, critic):
    """Same seed and rollouts: DeepSpeed's engine (clipping, Adam on the flat fp32 partitions,
    ZeRO-3's gathered generation) trains the same policy as the plain loop, to fp32 tolerance, with
    either critic (shared: the engine holds the policy and a bare value head)."""
    _run(_cli(tmp_path / "ds", ppo_store, f"deepspeed={profile}", "deepspeed.bf16=false", f"ppo.critic={critic}"))
    reference = plain[critic]
    a, b = _metrics(reference), _metrics(tmp_path / "ds")
    for key in ("ppo/proxy", "ppo/gold", "ppo/kl", "ppo/policy_loss", "ppo/value_loss", "ppo/entropy"):
        assert b[key].tolist() == pytest.approx(a[key].tolist(), rel=1e-4, abs=1e-5), key
    assert a["ppo/kl"].abs().max() > 1e-3  # the policy moved: a real comparison
    wa = load_file(str(reference / "policy" / "model.safetensors"))
    wb = load_file(str(tmp_path / "ds" / "policy" / "model.safetensors"))
    assert {k: (v.dtype, v.shape) for k, v in wb.items()} == {k: (v.dtype, v.shape) for k, v in wa.items()}
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-5)


def test_zero3_on_two_ranks_resumes_a_killed_job_to_the_same_curve(ppo_store, ppo_plain_run, tmp_path):
    store = ppo_store
    zero3 = ["deepspeed=zero3", "deepspeed.bf16=false"]
    _run(_cli(tmp_path / "full", store, *zero3, ranks=2))
    full = _metrics(tmp_path / "full")
    assert full["ppo/step"].tolist() == list(range(8))
    assert full["ppo/rollouts"].iloc[-1] == 8 * 8 * 2  # global rollouts: both ranks' shares counted
    assert sorted(p.name for p in (tmp_path / "full" / "checkpoint" / "step8").glob("rank*.pt")) == ["rank0.pt", "rank1.pt"]

    cut = tmp_path / "cut"
    job = subprocess.Popen(_cli(cut, store, *zero3, ranks=2), env=_env(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:  # kill once a checkpoint exists and training has gone past it
        if (cut / "checkpoint" / "latest").is_file() and (cut / "metrics.jsonl").is_file() \
                and (cut / "metrics.jsonl").read_text().count('"ppo/step"') >= 3:
            break
        assert job.poll() is None, "the job ended before it could be killed"
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)  # every rank at once, as a node failure would
    job.wait(60)
    assert _metrics(cut)["ppo/step"].max() < 7, "the job finished before it could be killed"

    _run(_cli(cut, store, *zero3, ranks=2))
    steps = _metrics(cut)["ppo/step"].tolist()
    assert sorted(set(steps)) == list(range(8)) and steps.count(0) == 1  # resumed, not run again from 0
    a, b = pd.read_csv(tmp_path / "full" / "ppo_curve.csv"), pd.read_csv(cut / "ppo_curve.csv")
    pd.testing.assert_frame_equal(a, b, rtol=1e-5)

    # One consolidated fp32 policy in the one-process format, loadable as a pretrained model.
    from rlhf_scaling.models import load_policy

    whole = load_file(str(cut / "policy" / "model.safetensors"))
    single = load_file(str(ppo_plain_run / "policy" / "model.safetensors"))
    assert {k: (v.dtype, v.shape) for k, v in whole.items()} == {k: (v.dtype, v.shape) for k, v in single.items()}
    assert load_policy(cut / "policy").num_parameters() == load_policy(ppo_plain_run / "policy").num_parameters()


def test_rollouts_and_minibatch_must_split_evenly_over_ranks():
    from rlhf_scaling.stages.ppo import rank_batch

    assert rank_batch(12, 4, world_size=4) == (3, 1)  # 6 prompts x 2 samples, minibatch 4
    with pytest.raises(ValueError, match="minibatch_size = 4 must be divisible by the 3 ranks"):
        rank_batch(12, 4, world_size=3)
    with pytest.raises(ValueError, match="samples_per_prompt = 12 must be divisible by the 5 ranks"):
        rank_batch(12, 5, world_size=5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_zero3_bf16_ppo_on_gpu(ppo_store, tmp_path):
    """bf16 ZeRO-3 PPO on one GPU: finite curves, KL starting at 0 (the reference in bf16 too)."""
    _run(_cli(tmp_path / "gpu", ppo_store, "deepspeed=zero3", "device=cuda"))
    m = _metrics(tmp_path / "gpu")
    assert m[["ppo/proxy", "ppo/gold", "ppo/kl"]].notna().all().all()
    assert abs(m["ppo/kl"].iloc[0]) < 1e-2
