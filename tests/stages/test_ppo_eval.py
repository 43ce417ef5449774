"""PPO's held-out evaluation (eval/*): the initial policy's evaluation is a gold scoring of its own
samples from the evaluation seed; the same prompts every time; training (ppo/* batch metrics) is
the same with or without evaluation; and the fitted summary's peak and gains come from eval points."""

import json

import pandas as pd
import pytest
import torch

from rlhf_scaling.cli import compose
from rlhf_scaling.models import load_policy
from rlhf_scaling.sampling import sample
from rlhf_scaling.stages import ppo as ppo_stage
from rlhf_scaling.stages.common import open_tracker, policy_init_path, proxy_data_cfg, setup_task
from rlhf_scaling.stages.data import trained_prompts
from rlhf_scaling.summaries import ppo_fit_summary

PPO = ["stage=ppo", "progress=false", "device=cpu", "ppo.steps=4", "ppo.prompts_per_step=8",
       "ppo.minibatch_size=8", "ppo.eval_every=2", "ppo.eval_prompts=16", "ppo.lr=1e-3"]


def records(run_dir):
    return pd.DataFrame([json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
                         if line.strip()])


@pytest.fixture(scope="module")
def evaluated(ppo_store, tmp_path_factory):
    """A 4-iteration PPO run evaluated at 0, 2 and 4, recording the prompts each evaluation and
    each iteration's rollouts used."""
    cfg = compose([f"artifacts_dir={ppo_store.artifacts}", *ppo_store.overrides, *PPO])
    seen = {"eval": [], "rollout": []}
    evaluate, rollout_prompts = ppo_stage.evaluate, ppo_stage.rollout_prompts

    def recording_evaluate(trainer, reference, proxies, setup, prompts, *args):
        seen["eval"].append(list(prompts))
        return evaluate(trainer, reference, proxies, setup, prompts, *args)

    def recording_rollout_prompts(*args):
        seen["rollout"].append(rollout_prompts(*args))
        return seen["rollout"][-1]

    mp = pytest.MonkeyPatch()
    mp.setattr(ppo_stage, "evaluate", recording_evaluate)
    mp.setattr(ppo_stage, "rollout_prompts", recording_rollout_prompts)
    run_dir = tmp_path_factory.mktemp("ppo_eval") / "run"
    try:
        with open_tracker(cfg, run_dir, "ppo") as tracker:
            summary = ppo_stage.run(cfg, tracker)
    finally:
        mp.undo()
    return cfg, run_dir, summary, seen


@pytest.mark.slow
def test_initial_evaluation_is_a_gold_scoring_of_the_init_policys_samples(evaluated):
    cfg, run_dir, _, seen = evaluated
    evals = records(run_dir).dropna(subset=["eval/step"]).set_index("eval/step")
    assert evals.index.tolist() == [0, 2, 4]
    setup = setup_task(cfg)
    prompts, sample_seed = ppo_stage.held_out_prompts(setup, 16, cfg.seed + cfg.ppo.seed,
                                                      trained_prompts(proxy_data_cfg(cfg), setup))
    torch.manual_seed(sample_seed)
    samples = sample(load_policy(policy_init_path(cfg)), setup.tokenizer, prompts,
                     max_new_tokens=cfg.task.max_response_tokens, temperature=cfg.ppo.temperature)
    assert evals.loc[0, "eval/gold"] == pytest.approx(setup.gold.score(prompts, samples.texts).mean().item(), abs=1e-6)
    assert evals.loc[0, "eval/response_len"] == pytest.approx(samples.lengths.float().mean().item())
    assert abs(evals.loc[0, "eval/kl"]) < 1e-4  # the initial policy is the reference
    assert evals.loc[4, "eval/kl"] > 1e-3  # ...and the trained one is not (lr 1e-3)
    # The same held-out prompts at every evaluation, none of them a rollout's prompt (the feature world)
    # or one the proxy trained on.
    assert len(seen["eval"]) == 3 and all(e == prompts for e in seen["eval"])
    assert len(seen["rollout"]) == 4 and all(r != prompts[:8] and not set(r) & set(prompts) for r in seen["rollout"])
    assert not set(prompts) & trained_prompts(proxy_data_cfg(cfg), setup)


@pytest.mark.slow
def test_summary_fits_the_eval_points_and_keeps_batch_means_as_diagnostics(evaluated):
    _, run_dir, summary, _ = evaluated
    rows = records(run_dir)
    evals, batch = rows.dropna(subset=["eval/step"]), rows.dropna(subset=["ppo/step"])
    assert summary["ppo/fit_points"] == "eval"
    assert summary["ppo/peak_gold"] == pytest.approx(evals["eval/gold"].max())
    assert summary["ppo/init_gold"] == pytest.approx(evals["eval/gold"].iloc[0])
    assert summary["ppo/final_kl"] == pytest.approx(evals["eval/kl"].iloc[-1])
    assert summary["ppo/batch_peak_gold"] == pytest.approx(batch["ppo/gold"].max())
    assert pd.read_csv(run_dir / "ppo_eval_curve.csv")["eval/step"].tolist() == [0, 2, 4]
    assert pd.read_csv(run_dir / "ppo_curve.csv")["ppo/step"].tolist() == [0, 1, 2, 3]


@pytest.mark.slow
def test_evaluation_leaves_the_training_curve_unchanged(ppo_store, evaluated, tmp_path):
    cfg = compose([f"artifacts_dir={ppo_store.artifacts}", *ppo_store.overrides, *PPO, "ppo.eval_prompts=0"])
    with open_tracker(cfg, tmp_path / "plain", "ppo") as tracker:
        summary = ppo_stage.run(cfg, tracker)
    assert summary["ppo/fit_points"] == "batch"
    plain, with_eval = records(tmp_path / "plain"), records(evaluated[1])
    assert "eval/step" not in plain
    cols = [c for c in plain if c.startswith("ppo/") and "time" not in c and "per_s" not in c]
    assert len(cols) > 15
    pd.testing.assert_frame_equal(plain.dropna(subset=["ppo/step"])[cols].reset_index(drop=True),
                                  with_eval.dropna(subset=["ppo/step"])[cols].reset_index(drop=True), check_dtype=False,
                                  rtol=0, atol=0)


def test_summary_peak_comes_from_eval_points_not_the_noisy_batch_max(tmp_path):
    """Batch means peak at 5.0 (noise); the held-out evaluations at 2.5: the summary says 2.5."""
    rows = [{"ppo/step": s, "ppo/proxy": 0.1 * s, "ppo/gold": g, "ppo/kl": 0.5 * s, "ppo/sqrt_kl": (0.5 * s) ** 0.5}
            for s, g in enumerate([1.0, 5.0, 1.5, 2.0])]
    rows += [{"eval/step": s, "eval/proxy": 0.1 * s, "eval/gold": g, "eval/kl": 0.5 * s, "eval/sqrt_kl": (0.5 * s) ** 0.5}
             for s, g in [(0, 1.0), (2, 2.5), (4, 2.0)]]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = ppo_fit_summary(tmp_path)
    assert out["ppo/peak_gold"] == 2.5 and out["ppo/peak_gold_step"] == 2 and out["ppo/batch_peak_gold"] == 5.0
    assert out["ppo/final_kl"] == 2.0 and out["ppo/init_gold"] == 1.0 and out["ppo/fit_points"] == "eval"


@pytest.mark.slow
def test_figures_draw_the_eval_points(evaluated, tmp_path):
    from rlhf_scaling.analysis.figures import load_runs, overoptimization_curves, write_figures

    df = load_runs(str(evaluated[1]))
    curves = overoptimization_curves(df, "ppo")
    assert curves["points"].unique().tolist() == ["eval"] and curves["x"].tolist() == [0, 2, 4]
    evals = records(evaluated[1]).dropna(subset=["eval/step"])
    assert curves["gold_gain"].tolist() == pytest.approx((evals["eval/gold"] - evals["eval/gold"].iloc[0]).tolist())
    written = write_figures(df, tmp_path, "test", only=["overoptimization_ppo", "ppo_training"])
    assert sorted(p.name for p in written) == ["overoptimization_ppo.png", "ppo_training.png"]
