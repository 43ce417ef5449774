"""Faults in a real stage run: a NaN/inf loss stops the run with a message naming the stage and the
step, the run record says failed, the last good checkpoint stays on disk intact (finite weights,
the step it was written at), nothing after the bad step is checkpointed, and the same job started
again once the cause is gone resumes from that checkpoint.

The NaN is injected by wrapping the loss the stage calls (deterministic), and once produced by a
plain config value (rm_train.lr=1e12). Upstream artifacts (SFT policy, data, an RM for PPO) are
built once per module."""

import json
import re
import shutil

import pandas as pd
import pytest
import torch

from rlhf_scaling.actor_critic import Critic, value_head
from rlhf_scaling import ppo_math as P
from rlhf_scaling.checkpoint import load_checkpoint
from rlhf_scaling.cli import compose
from rlhf_scaling.models import build_reward_model, load_policy
from rlhf_scaling.stages import data, rm, sft
from rlhf_scaling.stages import ppo as ppo_stage
from rlhf_scaling.stages.common import policy_init_path, rm_artifact, setup_task
from in_process import run_recipe as run  # one stage recipe in this process, with its run record

pytestmark = pytest.mark.slow

BASE = ["progress=false", "sft.steps=100", "sft.n_demos=500", "data.comparison_budget=384", "data.n_eval_prompts=32",
        "rm_train.batch_size=8", "rm_train.eval_every=1000", "model@rm=tiny-s"]
# 64 prompts x K=4 -> 8 micro-batches (= optimizer steps) per epoch; 16 steps in all.
RM_FAULT = ["rm_train.epochs=2", "rm_train.checkpoint_every=2"]
PPO = ["rm_train.epochs=1", "rm_train.checkpoint_every=1000", "ppo.steps=6", "ppo.prompts_per_step=8",
       "ppo.minibatch_size=8", "ppo.checkpoint_every=2"]


def make_cfg(artifacts, stage, *extra):
    return compose([f"artifacts_dir={artifacts}", f"stage={stage}", *BASE, *extra])


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def status(run_dir):
    return json.loads((run_dir / "status.json").read_text())


def all_finite(module) -> bool:
    return all(torch.isfinite(t).all() for t in module.state_dict().values() if t.is_floating_point())


def nan_from(threshold, counter):
    """A wrapper factory: the wrapped loss is NaN (still in the graph) once counter() >= threshold."""
    def wrap(fn):
        def wrapped(*args, **kwargs):
            out = fn(*args, **kwargs)
            if counter() < threshold:
                return out
            if isinstance(out, tuple):
                return (out[0] + float("nan"), *out[1:])
            return out + float("nan")
        return wrapped
    return wrap


class NaNGradient(torch.autograd.Function):
    """Identity forward, NaN backward: a finite loss whose gradient overflowed."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


@pytest.fixture(scope="module")
def store(ppo_store, tmp_path_factory):
    """SFT policy, K=4 preference data and (for PPO) a normally trained RM. The SFT policy and the
    data are the session's shared ones (tests/conftest.py: the same settings, so the same artifact
    keys; the run calls below reuse them), copied so that no test here can damage them."""
    root = tmp_path_factory.mktemp("faults_store")
    runs = tmp_path_factory.mktemp("faults_runs")
    shutil.copytree(ppo_store.artifacts, root / "artifacts", ignore=shutil.ignore_patterns("rm"))
    cfg = make_cfg(root / "artifacts", "ppo", *PPO)
    run(sft, cfg, runs / "sft", "sft")
    run(data, cfg, runs / "data", "data")
    run(rm, cfg, runs / "rm", "rm")
    return root / "artifacts"


def fresh_store(store, tmp_path):
    """A copy of the upstream artifacts without any RM (so RM tests build and fail their own)."""
    out = tmp_path / "artifacts"
    shutil.copytree(store, out, ignore=shutil.ignore_patterns("rm"))
    return out


def rm_checkpoint(cfg):
    """The member-0 checkpoint in the RM artifact's partial folder, loaded into a fresh RM: (state, model)."""
    model = build_reward_model(cfg.rm, setup_task(cfg).tokenizer)
    return load_checkpoint(rm_artifact(cfg).partial / "member_0.ckpt", model), model


def assert_no_leftovers(ckpt_dir):
    for suffix in (".tmp", ".old"):
        assert not ckpt_dir.with_name(ckpt_dir.name + suffix).exists(), f"{suffix} folder left next to {ckpt_dir}"


# ----------------------------------------------------------------------------- RM


def test_rm_nan_loss_stops_and_keeps_the_last_good_checkpoint_then_resumes(store, tmp_path, monkeypatch):
    arts = fresh_store(store, tmp_path)
    cfg = make_cfg(arts, "rm", *RM_FAULT)
    calls = {"n": 0}

    def count(fn):
        def counted(*a, **k):
            out = fn(*a, **k)
            calls["n"] += 1
            return out
        return counted

    # kwise_loss runs once per training micro-batch (evaluation does not use it): call n is step n-1.
    # NaN from the 6th call = the loss of step index 5; a checkpoint would be due after it (step 6).
    monkeypatch.setattr(rm, "kwise_loss", nan_from(6, lambda: calls["n"])(count(rm.kwise_loss)))
    with pytest.raises(FloatingPointError) as err:
        run(rm, cfg, tmp_path / "rm", "rm")
    message = str(err.value)
    assert re.search(r"\brm\b.*member 0.*\bnan\b.*at step 5\b", message), message
    st = status(tmp_path / "rm")
    assert st["status"] == "failed"
    assert st["error"] == f"FloatingPointError: {message}"
    assert not rm_artifact(cfg).exists()
    # The last good checkpoint: step 4 (every 2 steps; steps 1..5 finished), finite, nothing later.
    state, model = rm_checkpoint(cfg)
    assert state is not None and state["step"] == 4
    assert all_finite(model)
    assert_no_leftovers(rm_artifact(cfg).partial / "member_0.ckpt")
    steps = [r["rm/step"] for r in records(tmp_path / "rm") if "rm/step" in r]
    assert steps == [1, 2, 3, 4, 5]

    # Cause gone, same store and run folder: resumes at step 4 and ends where an uninterrupted run ends.
    monkeypatch.undo()
    before = len(records(tmp_path / "rm"))
    resumed = run(rm, cfg, tmp_path / "rm", "rm")
    after = [r["rm/step"] for r in records(tmp_path / "rm")[before:] if "rm/step" in r]
    assert after[0] == state["step"] + 1 and after[-1] == 16  # rm/step counts steps finished: 5 is the first
    st = status(tmp_path / "rm")
    assert st["status"] == "completed" and st["attempt"] == 2
    full = run(rm, make_cfg(fresh_store(store, tmp_path / "ref"), "rm", *RM_FAULT), tmp_path / "ref_rm", "rm")
    for key in ("rm/val_loss", "rm/val_accuracy", "rm/val_reward_mean"):
        assert resumed[key] == pytest.approx(full[key], rel=1e-5, abs=1e-6)


def test_rm_nan_gradient_with_finite_loss_never_checkpoints_nan_weights(store, tmp_path, monkeypatch):
    """The loss of step index 3 is finite but its gradient is NaN, so the optimizer writes NaN weights
    and a checkpoint is due right after (step 4). That checkpoint must not replace step 2's."""
    arts = fresh_store(store, tmp_path)
    cfg = make_cfg(arts, "rm", *RM_FAULT)
    calls = {"n": 0}
    original = rm.kwise_loss

    def poisoned(*a, **k):
        calls["n"] += 1
        out = original(*a, **k)
        return NaNGradient.apply(out) if calls["n"] == 4 else out

    monkeypatch.setattr(rm, "kwise_loss", poisoned)
    # Stopped by the NaN gradient of step index 3 or by the refusal to checkpoint step 4's NaN weights.
    with pytest.raises(FloatingPointError, match=r"step [34]\b"):
        run(rm, cfg, tmp_path / "rm", "rm")
    assert status(tmp_path / "rm")["status"] == "failed"
    state, model = rm_checkpoint(cfg)
    assert state is not None and state["step"] == 2
    assert all_finite(model)
    assert_no_leftovers(rm_artifact(cfg).partial / "member_0.ckpt")


def test_rm_nan_gradient_in_the_last_step_does_not_complete_the_artifact(store, tmp_path, monkeypatch):
    cfg = make_cfg(fresh_store(store, tmp_path), "rm", "rm_train.epochs=1", "rm_train.checkpoint_every=1000")
    calls = {"n": 0}
    original = rm.kwise_loss

    def poisoned(*a, **k):
        calls["n"] += 1
        out = original(*a, **k)
        return NaNGradient.apply(out) if calls["n"] == 8 else out  # 8 steps in one epoch: the last one

    monkeypatch.setattr(rm, "kwise_loss", poisoned)
    with pytest.raises(FloatingPointError, match=r"rm member 0: gradient norm is nan at step 8"):
        run(rm, cfg, tmp_path / "rm", "rm")
    assert status(tmp_path / "rm")["status"] == "failed"
    assert not rm_artifact(cfg).exists()


def test_rm_huge_learning_rate_stops_with_a_finite_checkpoint(store, tmp_path):
    """No injection: rm_train.lr=1e12 blows the RM up within a few steps (measured: NaN at step 2)."""
    cfg = make_cfg(fresh_store(store, tmp_path), "rm", "rm_train.epochs=2", "rm_train.checkpoint_every=1",
                   "rm_train.lr=1e12")
    with pytest.raises(FloatingPointError) as err:
        run(rm, cfg, tmp_path / "rm", "rm")
    found = re.search(r"rm member 0: loss is (nan|inf|-inf) at step (\d+)", str(err.value))
    assert found, str(err.value)
    bad = int(found.group(2))
    assert status(tmp_path / "rm")["status"] == "failed"
    assert bad >= 1, "blew up before any checkpoint: the test no longer covers 'keeps the last checkpoint'"
    state, model = rm_checkpoint(cfg)
    assert state is not None and state["step"] == bad  # checkpoint_every=1: every finished step, none after
    assert all_finite(model)
    assert_no_leftovers(rm_artifact(cfg).partial / "member_0.ckpt")


# ----------------------------------------------------------------------------- PPO


@pytest.fixture
def ppo_iteration(monkeypatch):
    """Tracks the PPO iteration being run (rollout_prompts is called once per iteration with it)."""
    current = {"step": -1}
    original = ppo_stage.rollout_prompts

    def tracked(setup, step, *args):
        current["step"] = step
        return original(setup, step, *args)

    monkeypatch.setattr(ppo_stage, "rollout_prompts", tracked)
    return current


def ppo_checkpoint(cfg, run_dir):
    """<run dir>/checkpoint loaded into a fresh policy + critic, as the stage resumes: (state, modules)."""
    policy = load_policy(policy_init_path(cfg))
    trainable = torch.nn.ModuleDict({"policy": policy, "critic": Critic(policy)})
    return load_checkpoint(run_dir / "checkpoint", trainable), trainable


def test_ppo_nan_loss_stops_and_keeps_the_last_good_checkpoint_then_resumes(store, tmp_path, monkeypatch,
                                                                             ppo_iteration):
    cfg = make_cfg(store, "ppo", *PPO)
    # NaN policy loss from iteration 3 on; checkpoints after iterations 1, 3, 5 (steps 2, 4, 6).
    monkeypatch.setattr(P, "policy_loss", nan_from(3, lambda: ppo_iteration["step"])(P.policy_loss))
    run_dir = tmp_path / "ppo"
    with pytest.raises(FloatingPointError) as err:
        run(ppo_stage, cfg, run_dir, "ppo")
    message = str(err.value)
    assert re.search(r"\bppo\b.*\bnan\b.*at step 3\b", message), message
    st = status(run_dir)
    assert st["status"] == "failed" and st["error"] == f"FloatingPointError: {message}"
    state, trainable = ppo_checkpoint(cfg, run_dir)
    assert state is not None and state["step"] == 2
    assert all_finite(trainable)
    assert_no_leftovers(run_dir / "checkpoint")
    assert not (run_dir / "policy").exists()
    steps = [r["ppo/step"] for r in records(run_dir) if "ppo/step" in r]
    assert steps == [0, 1, 2]

    monkeypatch.undo()  # the cause is gone; the same job again in the same folder
    run(ppo_stage, cfg, run_dir, "ppo")
    # Resumed at the checkpoint's step 2: its record replaces the failed attempt's step 2, so the
    # record holds every iteration once.
    assert [r["ppo/step"] for r in records(run_dir) if "ppo/step" in r] == [0, 1, 2, 3, 4, 5]
    st = status(run_dir)
    assert st["status"] == "completed" and st["attempt"] == 2
    run(ppo_stage, cfg, tmp_path / "full", "ppo")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "full" / "ppo_curve.csv"),
                                  pd.read_csv(run_dir / "ppo_curve.csv"), rtol=1e-5)


def test_ppo_nan_gradient_before_a_checkpoint_never_checkpoints_nan_weights(store, tmp_path, monkeypatch,
                                                                            ppo_iteration):
    """The last update of iteration 3 has a finite loss but a NaN gradient: the weights go NaN with no
    forward left in the iteration to notice, and a checkpoint is due right after (step 4). The step-2
    checkpoint must stay, and the run must stop as a FloatingPointError."""
    cfg = make_cfg(store, "ppo", *PPO)
    original = P.policy_loss
    calls = {}  # policy_loss calls per iteration: ppo_epochs (2) x minibatches (16 rollouts / 8) = 4

    def poisoned(*a, **k):
        step = ppo_iteration["step"]
        calls[step] = calls.get(step, 0) + 1
        pg, *rest = original(*a, **k)
        return (NaNGradient.apply(pg) if (step, calls[step]) == (3, 4) else pg, *rest)

    monkeypatch.setattr(P, "policy_loss", poisoned)
    run_dir = tmp_path / "ppo"
    with pytest.raises(FloatingPointError, match=r"step [34]\b"):
        run(ppo_stage, cfg, run_dir, "ppo")
    assert status(run_dir)["status"] == "failed"
    state, trainable = ppo_checkpoint(cfg, run_dir)
    assert state is not None and state["step"] == 2
    assert all_finite(trainable)
    assert_no_leftovers(run_dir / "checkpoint")


def test_ppo_nan_gradient_between_checkpoints_stops_as_a_floating_point_error(store, tmp_path, monkeypatch,
                                                                              ppo_iteration):
    """Iteration 2's gradients are NaN (finite losses) and no checkpoint is due after it: the next
    iteration samples from NaN weights. The run must still stop with a FloatingPointError naming PPO,
    not an error from deep inside sampling, and keep the step-2 checkpoint."""
    cfg = make_cfg(store, "ppo", *PPO)
    original = P.policy_loss
    calls = {}

    def poisoned(*a, **k):  # only the iteration's last update: no forward of iteration 2 sees the NaN weights
        step = ppo_iteration["step"]
        calls[step] = calls.get(step, 0) + 1
        pg, *rest = original(*a, **k)
        return (NaNGradient.apply(pg) if (step, calls[step]) == (2, 4) else pg, *rest)

    monkeypatch.setattr(P, "policy_loss", poisoned)
    run_dir = tmp_path / "ppo"
    with pytest.raises(FloatingPointError, match=r"ppo: gradient norm is nan at step 2\b"):
        run(ppo_stage, cfg, run_dir, "ppo")
    state, trainable = ppo_checkpoint(cfg, run_dir)
    assert state is not None and state["step"] == 2
    assert all_finite(trainable)
