"""The data stage's held-out splits, through `rlhf-scaling stage=data`: in the feature world the
held-out (eval) prompts are prompts no training comparison has, and the validation split
(data.n_val_prompts, what RM early stopping watches) shares a prompt with neither; adding it leaves
the training and held-out comparisons as they were. A world whose prompts are all in training is
an error, not a held-out set that was trained on."""

from __future__ import annotations

import json

import pytest

from rlhf_scaling.cli import compose
from rlhf_scaling.data.records import read_groups
from rlhf_scaling.config import ConfigError
from rlhf_scaling.stages.common import data_artifact, record_eval_prompts

from local_inputs import cli

pytestmark = pytest.mark.slow

# 8 prompt words x 2 per prompt = 64 prompts; 16 training prompts (96 comparisons at K = 4) cover ~14 of
# them, so 16 held-out prompts drawn independently would hit a training prompt ~3 times.
SMALL = ["stage=data", "stage.build_upstream=true", "task=features", "task.prompt_vocab=8", "task.prompt_length=2",
         "sft.steps=20", "sft.n_demos=100", "data.comparison_budget=96", "data.n_eval_prompts=16",
         "progress=false", "device=cpu"]


def prompts(path, split):
    return [g.prompt for g in read_groups(path / f"{split}.jsonl")]


def test_feature_world_held_out_and_validation_prompts_are_unseen_in_training(tmp_path):
    store = [f"artifacts_dir={tmp_path / 'artifacts'}"]
    runs = {}
    for n_val in (0, 8):
        overrides = [*SMALL, *store, f"data.n_val_prompts={n_val}"]
        proc = cli([*overrides, f"hydra.run.dir={tmp_path / f'run{n_val}'}"], cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[n_val] = data_artifact(compose(overrides)).path
    plain, with_val = runs[0], runs[8]
    assert plain != with_val  # the validation split is part of the data's identity
    train, held_out, val = (set(prompts(with_val, s)) for s in ("train", "eval", "val"))
    assert len(prompts(with_val, "eval")) == 16 and len(prompts(with_val, "val")) == 8
    assert not held_out & train and not val & (train | held_out)
    stats = json.loads((with_val / "stats.json").read_text())
    assert stats["data/eval_prompts_in_train"] == 0 == stats["data/val_prompts_in_train_or_eval"]
    assert stats["data/n_val_prompts"] == 8
    # generated last: the training and held-out comparisons are the same with the split or without it
    for split in ("train", "eval"):
        assert (with_val / f"{split}.jsonl").read_text() == (plain / f"{split}.jsonl").read_text()
    assert not (plain / "val.jsonl").exists()


def test_a_world_whose_every_prompt_is_trained_on_has_no_held_out_prompts(tmp_path):
    """2 words x 2 = 4 prompts, 16 training prompts: every prompt is in training. And a world that the
    training and held-out prompts fill (3,000 held-out draws take every prompt left) still builds its
    data when no validation split is asked for."""
    proc = cli([*SMALL, "task.prompt_vocab=2", "task.n_features=20", f"artifacts_dir={tmp_path / 'artifacts'}",
                f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert proc.returncode != 0
    assert "every one of the world's 4 prompts is a training (or held-out) prompt" in proc.stderr
    full = [*SMALL, "data.n_eval_prompts=3000", f"artifacts_dir={tmp_path / 'full'}"]
    proc = cli([*full, f"hydra.run.dir={tmp_path / 'run_full'}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = data_artifact(compose(full)).path
    assert len(set(prompts(path, "train")) | set(prompts(path, "eval"))) == 64  # every prompt used


def test_the_topics_world_holds_out_responses_and_counts_the_prompts_it_shares(tmp_path):
    """Its ~240 prompts recur: the held-out and validation prompts are drawn like the training ones, and the
    data's stats say how many of them are training prompts too (README: the validation split)."""
    overrides = ["stage=data", "stage.build_upstream=true", "task=synthetic", "sft.steps=20", "sft.n_demos=100",
                 "data.comparison_budget=1536", "data.n_eval_prompts=16", "data.n_val_prompts=8", "progress=false",
                 "device=cpu", f"artifacts_dir={tmp_path / 'artifacts'}"]
    proc = cli([*overrides, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads((data_artifact(compose(overrides)).path / "stats.json").read_text())
    assert stats["data/eval_prompts_in_train"] > 0 and stats["data/val_prompts_in_train_or_eval"] > 0


def test_policies_are_evaluated_on_prompts_their_proxy_and_their_rollouts_never_had(tmp_path):
    """The 64-prompt world (16 training and 8 validation prompts): best-of-n's prompts, PPO's and DPO's
    held-out prompts (each job's eval_prompts.json) hold none of the data's training or validation
    prompts (what the proxy trained on and chose its weights by; what DPO trains on), and no PPO rollout
    is on a held-out prompt (ppo/rollout_prompts_in_eval). Drawn independently, 16 held-out prompts would
    hit the ~20 used ones ~5 times, and 3 iterations of 8 rollout prompts the 16 held-out ones ~6 times."""
    store = [f"artifacts_dir={tmp_path / 'artifacts'}", "data.n_val_prompts=8", "model@rm=tiny-xs", "rm_train.epochs=1",
             "rm_train.batch_size=8", "stage.build_upstream=true"]
    jobs = {"bon": ["bon.n_max=4", "bon.n_eval_prompts=16"],
            "ppo": ["ppo.steps=3", "ppo.prompts_per_step=8", "ppo.minibatch_size=8", "ppo.eval_prompts=16",
                    "ppo.eval_every=3"],
            "dpo": ["dpo.batch_size=8", "dpo.epochs=1", "dpo.eval_every=4", "dpo.eval_prompts=16"]}
    for stage, keys in jobs.items():
        proc = cli([*SMALL, *store, f"stage={stage}", *keys, f"hydra.run.dir={tmp_path / stage}"], cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
    data = data_artifact(compose([*SMALL, *store])).path
    used = set(prompts(data, "train")) | set(prompts(data, "val"))
    assert len(used) > 16  # the validation prompts are excluded as well as the training ones
    for stage in jobs:
        held_out = json.loads((tmp_path / stage / "eval_prompts.json").read_text())
        assert len(held_out) == 16 and not set(held_out) & used, stage
    rows = [json.loads(line) for line in (tmp_path / "ppo" / "metrics.jsonl").read_text().splitlines()]
    logged = [r["ppo/rollout_prompts_in_eval"] for r in rows if "ppo/rollout_prompts_in_eval" in r]
    assert len(logged) == 3 and set(logged) == {0}


def test_a_resumed_job_refuses_evaluation_prompts_other_than_those_it_started_with(tmp_path):
    """record_eval_prompts (PPO and DPO call it with resumed = start > 0): written at the start, checked on a
    resume, where other prompts are an error rather than a curve of two prompt sets; a run started before
    the file existed gets it on resume."""
    path = tmp_path / "eval_prompts.json"
    record_eval_prompts(path, ["q0 q1", "q2 q3"])
    record_eval_prompts(path, ["q0 q1", "q2 q3"], resumed=True)
    with pytest.raises(ConfigError, match="not the ones it started with"):
        record_eval_prompts(path, ["q0 q1", "q3 q3"], resumed=True)
    assert json.loads(path.read_text()) == ["q0 q1", "q2 q3"]
    record_eval_prompts(tmp_path / "late.json", ["q1 q1"], resumed=True)
    assert json.loads((tmp_path / "late.json").read_text()) == ["q1 q1"]
    record_eval_prompts(tmp_path / "other_rank.json", ["q1 q1"], is_main=False)
    assert not (tmp_path / "other_rank.json").exists()


def test_with_a_fixed_rm_best_of_n_leaves_out_the_prompts_of_the_data_the_rm_trained_on(tmp_path):
    """The fixed-RM design (proxy.trained_on: one RM, trained on another policy's samples, for every
    policy size): best-of-n of a tiny-xs policy against the RM trained on tiny-m's data leaves out that
    data's training and validation prompts — the RM's, not a data set of its own policy, which is never built."""
    store = [f"artifacts_dir={tmp_path / 'artifacts'}", "data.n_val_prompts=8", "model@rm=tiny-xs", "rm_train.epochs=1",
             "rm_train.batch_size=8", "stage.build_upstream=true"]
    fixed = ["model@policy=tiny-xs", "+model@proxy.trained_on=tiny-m", "bon.n_max=4", "bon.n_eval_prompts=16"]
    proc = cli([*SMALL, *store, "stage=bon", *fixed, f"hydra.run.dir={tmp_path / 'bon'}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rm_data = data_artifact(compose([*SMALL, *store, "model@policy=tiny-m"])).path
    assert not data_artifact(compose([*SMALL, *store, "model@policy=tiny-xs"])).path.exists()
    used = set(prompts(rm_data, "train")) | set(prompts(rm_data, "val"))
    held_out = json.loads((tmp_path / "bon" / "eval_prompts.json").read_text())
    assert len(held_out) == 16 and not set(held_out) & used
