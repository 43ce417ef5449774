"""The ppo stage with ppo.critic=shared (a value head on the policy's trunk): it trains, logs proxy, gold
and KL, checkpoints only the value head beside the policy, and a job stopped at a checkpoint resumes
there, to the curve of an uninterrupted run. (The separate critic's runs are covered by test_faults,
test_run_folders, test_ppo_deepspeed and the pipeline tests.)"""

import json

import pandas as pd
import pytest
import torch

from rlhf_scaling.actor_critic import Critic, value_head
from rlhf_scaling.checkpoint import load_checkpoint
from rlhf_scaling.cli import compose
from rlhf_scaling.models import CheckpointMismatch, load_policy
from rlhf_scaling.stages import ppo as ppo_stage
from rlhf_scaling.stages.common import policy_init_path
from in_process import run_recipe  # one stage recipe in this process, with its run record

pytestmark = pytest.mark.slow

SHARED = ["stage=ppo", "progress=false", "device=cpu", "ppo.prompts_per_step=8", "ppo.minibatch_size=4",
          "ppo.checkpoint_every=2", "ppo.critic=shared", "ppo.lr=1e-3"]


def run(cfg, run_dir):
    run_recipe(ppo_stage, cfg, run_dir, "ppo")


def logged_steps(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r["ppo/step"] for r in records if "ppo/step" in r]


def test_shared_critic_trains_checkpoints_a_value_head_and_resumes_to_the_same_curve(ppo_store, tmp_path):
    cfg = lambda steps: compose([f"artifacts_dir={ppo_store.artifacts}", *ppo_store.overrides, *SHARED,  # noqa: E731
                                 f"ppo.steps={steps}"])
    run(cfg(4), tmp_path / "full")
    # Stopped after iteration 2 (its checkpoint), then the same folder run on to 4.
    run(cfg(2), tmp_path / "resumed")
    run(cfg(4), tmp_path / "resumed")
    assert logged_steps(tmp_path / "resumed") == [0, 1, 2, 3]  # resumed at the checkpoint, not run again from 0
    full = pd.read_csv(tmp_path / "full" / "ppo_curve.csv")
    assert list(full["ppo/step"]) == [0, 1, 2, 3] and full[["ppo/proxy", "ppo/gold", "ppo/kl"]].notna().all().all()
    assert full["ppo/kl"].iloc[-1] != 0  # the policy moved away from the reference
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "resumed" / "ppo_curve.csv"), full, rtol=1e-5)

    # The checkpoint holds the policy and a bare value head, nothing of a second transformer.
    policy = load_policy(policy_init_path(cfg(4)))
    shared = torch.nn.ModuleDict({"policy": policy, "critic": value_head(policy.config.hidden_size)})
    assert load_checkpoint(tmp_path / "full" / "checkpoint", shared)["step"] == 4
    assert shared["critic"].weight.abs().sum() > 0  # the value head was trained
    separate = torch.nn.ModuleDict({"policy": policy, "critic": Critic(policy)})
    with pytest.raises(CheckpointMismatch):
        load_checkpoint(tmp_path / "full" / "checkpoint", separate)
