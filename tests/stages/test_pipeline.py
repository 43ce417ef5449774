"""Tiny end-to-end CPU runs of the stage recipes: SFT -> data -> RM -> best-of-n / PPO.

Artifacts are built once per module in a temp store; each test checks behaviour a user relies
on (accuracy above chance, exact resume, the missing-artifact message, metrics logged)."""

import json
import shutil

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from rlhf_scaling.artifacts import MissingArtifact
from rlhf_scaling.cli import compose
from rlhf_scaling.stages import bon, data, ppo, rm, sft
from rlhf_scaling.stages.common import rm_artifact
from in_process import run_recipe as run  # one stage recipe in this process, with its run record
from local_inputs import preference_lines

pytestmark = pytest.mark.slow

SMALL = ["progress=false", "sft.steps=300", "sft.n_demos=2000", "data.n_eval_prompts=64",
         "rm_train.epochs=3", "rm_train.eval_every=20", "rm_train.checkpoint_every=1000", "model@rm=tiny-s"]


def make_cfg(store, *extra):
    return compose([f"artifacts_dir={store}", "stage=rm", *SMALL, *extra])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """SFT policy and K=4 / K=2 preference data at the same comparison budget (1536)."""
    root = tmp_path_factory.mktemp("store")
    runs = tmp_path_factory.mktemp("runs")
    for k in (4, 2):
        cfg = make_cfg(root / "artifacts", f"data.responses_per_prompt={k}", "data.comparison_budget=1536")
        run(sft, cfg, runs / f"sft{k}", "sft")
        stats = run(data, cfg, runs / f"data{k}", "data")
        assert stats["data/comparisons"] == 1536
        assert stats["data/n_train_prompts"] == 1536 // (k * (k - 1) // 2)
    return root


@pytest.mark.parametrize("k", [4, 2])
def test_rm_reaches_above_chance_accuracy(store, tmp_path, k):
    cfg = make_cfg(store / "artifacts", f"data.responses_per_prompt={k}", "data.comparison_budget=1536",
                   f"rm_train.loss={'kwise' if k > 2 else 'bt'}")
    out = run(rm, cfg, tmp_path / "rm", "rm")
    assert out["rm/val_accuracy"] > 0.56, out
    assert out["rm/val_gold_corr"] > 0
    records = [json.loads(line) for line in (tmp_path / "rm" / "metrics.jsonl").read_text().splitlines()]
    assert any("rm/val_accuracy" in r for r in records)
    # Re-centred: the init policy's eval responses score 0 on average.
    from rlhf_scaling.models import load_reward_model
    member = load_reward_model(rm_artifact(cfg).path / "member_0")
    assert float(member.offset) == pytest.approx(out["rm/val_reward_mean"])


def test_rm_resume_after_interruption_matches_uninterrupted(store, tmp_path):
    extra = ["data.responses_per_prompt=4", "data.comparison_budget=1536", "rm_train.epochs=2"]
    other = tmp_path / "other"
    shutil.copytree(store / "artifacts", other, ignore=shutil.ignore_patterns("rm"))
    cfg_a = make_cfg(store / "artifacts", *extra)
    cfg_b = make_cfg(other, *extra)
    full = run(rm, cfg_a, tmp_path / "a", "rm")
    with pytest.raises(InterruptedError):
        run(rm, cfg_b, tmp_path / "b", "rm", stop_at_step=7)  # like a preemption after step 7
    assert not rm_artifact(cfg_b).exists()
    resumed = run(rm, cfg_b, tmp_path / "b", "rm")
    for key in ("rm/val_loss", "rm/val_accuracy", "rm/val_reward_mean"):
        assert resumed[key] == pytest.approx(full[key], rel=1e-5, abs=1e-6)
    wa = load_file(str(rm_artifact(cfg_a).path / "member_0" / "reward_model.safetensors"))
    wb = load_file(str(rm_artifact(cfg_b).path / "member_0" / "reward_model.safetensors"))
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-5, atol=1e-6)


def test_missing_upstream_artifact_names_the_command(tmp_path):
    cfg = make_cfg(tmp_path / "empty")
    with pytest.raises(MissingArtifact, match="rlhf-scaling stage=data"):
        run(rm, cfg, tmp_path / "r", "rm")


def test_best_of_n_logs_proxy_gold_and_kl(store, tmp_path):
    extra = ["data.responses_per_prompt=4", "data.comparison_budget=1536", "bon.n_max=16", "bon.n_eval_prompts=16"]
    cfg = make_cfg(store / "artifacts", *extra)
    run(rm, cfg, tmp_path / "rm", "rm")
    out = run(bon, cfg, tmp_path / "bon", "bon")
    curve = pd.read_csv(tmp_path / "bon" / "bon_curve.csv")
    assert curve["n"].tolist() == [1, 2, 4, 8, 16]
    assert curve["kl"].iloc[0] == 0 and curve["kl"].is_monotonic_increasing
    assert curve["proxy"].is_monotonic_increasing  # selecting on the proxy can only raise it
    assert curve["gold_gain"].iloc[0] == pytest.approx(0, abs=1e-6)  # n = 1 is the plain mean
    assert {"bon/alpha_gold", "bon/beta_gold", "bon/best_n"} <= set(out)


def test_ppo_raises_proxy_reward_and_logs_gold_and_kl(store, tmp_path):
    extra = ["data.responses_per_prompt=4", "data.comparison_budget=1536", "ppo.steps=16", "ppo.lr=3e-4",
             "ppo.prompts_per_step=16", "ppo.minibatch_size=16"]
    cfg = make_cfg(store / "artifacts", *extra)
    run(rm, cfg, tmp_path / "rm", "rm")
    run(ppo, cfg, tmp_path / "ppo", "ppo")
    curve = pd.read_csv(tmp_path / "ppo" / "ppo_curve.csv")
    assert len(curve) == 16
    assert curve["ppo/proxy"].tail(4).mean() > curve["ppo/proxy"].head(2).mean() + 0.1
    assert curve["ppo/kl"].iloc[-1] > 0
    rows = pd.read_json(tmp_path / "ppo" / "metrics.jsonl", lines=True).dropna(subset=["ppo/step"])
    for key in ("ppo/gold", "ppo/kl", "ppo/sqrt_kl", "ppo/entropy", "ppo/clip_frac", "ppo/value_loss",
                "ppo/response_length"):
        assert rows[key].notna().all(), key


def test_ppo_resume_reproduces_the_uninterrupted_curve(store, tmp_path):
    base = ["data.responses_per_prompt=4", "data.comparison_budget=1536", "ppo.prompts_per_step=8",
            "ppo.minibatch_size=8", "ppo.checkpoint_every=3"]
    cfg_full = make_cfg(store / "artifacts", *base, "ppo.steps=6")
    run(rm, cfg_full, tmp_path / "rm", "rm")
    run(ppo, cfg_full, tmp_path / "full", "ppo")
    run(ppo, make_cfg(store / "artifacts", *base, "ppo.steps=3"), tmp_path / "cut", "ppo")  # stopped at 3
    run(ppo, cfg_full, tmp_path / "cut", "ppo")  # started again in the same folder
    a = pd.read_csv(tmp_path / "full" / "ppo_curve.csv")
    b = pd.read_csv(tmp_path / "cut" / "ppo_curve.csv")
    pd.testing.assert_frame_equal(a, b, rtol=1e-5)


def test_jsonl_preferences_with_a_pretrained_local_model(tmp_path):
    """The real-model path: policy/RM weights and tokenizer from a local directory, data from JSONL."""

    from rlhf_scaling.data.synthetic import build_tokenizer, make_task
    from rlhf_scaling.models import build_policy, save_policy

    task = make_task(8, 6, 6, 16)
    tok = build_tokenizer(task)
    torch.manual_seed(0)
    spec = compose(["stage=sft"]).policy
    save_policy(build_policy(spec, tok), tok, tmp_path / "model")
    lines = preference_lines(300, seed=1)  # the same task (make_task(8, 6, 6, 16)) and its gold
    lines.append(json.dumps({"prompt": "about ocean : wave tide", "chosen": "same", "rejected": "same"}))
    (tmp_path / "prefs.jsonl").write_text("\n".join(lines) + "\n")
    local = [f"model@policy=local", f"policy.name_or_path={tmp_path / 'model'}", "model@rm=local",
             f"rm.name_or_path={tmp_path / 'model'}", "task=jsonl", f"task.path={tmp_path / 'prefs.jsonl'}",
             "task.max_prompt_tokens=8", "task.max_response_tokens=16",  # no gold: data and RM need none
             "data.n_eval_prompts=40", "rm_train.loss=bt",
             "rm_train.epochs=1", "progress=false", f"artifacts_dir={tmp_path / 'artifacts'}"]
    from rlhf_scaling.data.loaders import DataError

    with pytest.raises(DataError, match=r"prefs.jsonl:\d+: 'chosen' and 'rejected' are identical"):
        run(data, compose(["stage=data", *local]), tmp_path / "d0", "data")
    cfg = compose(["stage=rm", *local, "task.on_bad_record=filter"])
    stats = run(data, cfg, tmp_path / "d1", "data")
    assert stats["data/records_filtered"] == 1 and stats["data/records_read"] == len(lines)
    out = run(rm, cfg, tmp_path / "rm", "rm")
    assert 0 <= out["rm/val_accuracy"] <= 1
