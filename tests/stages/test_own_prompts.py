"""Best-of-n and PPO prompts for loaded data: the file's held-out prompts (never trained on), or
the user's task.prompts_path; seeded draws, distinct while the pool allows."""

from __future__ import annotations

import json

import pytest

from rlhf_scaling.cli import compose
from rlhf_scaling.data.records import read_groups
from rlhf_scaling.stages import data
from rlhf_scaling.stages.common import data_artifact, open_tracker, setup_task

from local_inputs import preference_lines, save_model_dir, write_lines


@pytest.fixture
def cfg_for(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    write_lines(tmp_path / "prefs.jsonl", preference_lines(100))
    save_model_dir(tmp_path / "policy")

    def make(*extra):
        return compose(["stage=data", "task=jsonl", f"task.path={tmp_path / 'prefs.jsonl'}", "task.max_prompt_tokens=8",
                        "model@policy=local", f"policy.name_or_path={tmp_path / 'policy'}", "gold=model",
                        "gold.name_or_path=/unused", "data.n_eval_prompts=12", "progress=false",
                        f"artifacts_dir={tmp_path / 'artifacts'}", *extra])
    return make


def test_loaded_data_prompts_are_its_held_out_prompts_or_the_users_file(cfg_for, tmp_path):
    cfg = cfg_for()
    with open_tracker(cfg, tmp_path / "run", "data") as tracker:
        data.run(cfg, tracker)
    cfg_rm = cfg_for()
    cfg_rm.stage.name = "rm"
    own = setup_task(cfg_rm)
    assert own.task is None and own.gold is None  # data/rm jobs of loaded data load no gold
    path = data_artifact(cfg).path
    held_out = {g.prompt for g in read_groups(path / "eval.jsonl")}
    trained = {g.prompt for g in read_groups(path / "train.jsonl")}
    drawn = own.prompts(8, seed=1)
    assert len(set(drawn)) == 8 and set(drawn) <= held_out and not set(drawn) & trained
    assert own.prompts(8, seed=1) == drawn and own.prompts(8, seed=2) != drawn  # seeded: resume-stable
    assert set(own.prompts(40, seed=0)) == held_out  # more than the pool: repeats, every prompt usable
    mine = tmp_path / "mine.jsonl"
    write_lines(mine, [json.dumps({"prompt": p}) for p in ("about ocean : wave", "about ocean : tide")])
    cfg_rm.task.prompts_path = str(mine)
    assert set(setup_task(cfg_rm).prompts(4, seed=0)) == {"about ocean : wave", "about ocean : tide"}


def test_loaded_data_validation_split_comes_out_of_the_training_prompts(cfg_for, tmp_path, caplog):
    """data.n_val_prompts on a user's file: that many training prompts (all their records) move to
    val.jsonl; the held-out prompts stay the ones they were without it. More than a fifth of the training
    prompts is capped, with a warning saying so."""
    paths = {}
    for n_val in (0, 6):
        cfg = cfg_for(f"data.n_val_prompts={n_val}")
        with open_tracker(cfg, tmp_path / f"run{n_val}", "data") as tracker:
            stats = data.run(cfg, tracker)
        paths[n_val] = data_artifact(cfg).path
    split = {s: {g.prompt for g in read_groups(paths[6] / f"{s}.jsonl")} for s in ("train", "eval", "val")}
    before = {g.prompt for g in read_groups(paths[0] / "train.jsonl")}
    assert len(split["val"]) == 6 == stats["data/n_val_prompts"]
    assert split["val"] <= before and split["train"] == before - split["val"]
    assert (paths[6] / "eval.jsonl").read_text() == (paths[0] / "eval.jsonl").read_text()
    cfg = cfg_for("data.n_val_prompts=80")
    with caplog.at_level("WARNING", logger="rlhf_scaling.stages.data"), open_tracker(cfg, tmp_path / "capped", "data") as tracker:
        stats = data.run(cfg, tracker)
    assert stats["data/n_val_prompts"] == len(before) // 5 < 80
    assert f"the validation split is capped at a fifth of the {len(before)} training prompts" in caplog.text
