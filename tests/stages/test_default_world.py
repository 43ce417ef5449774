"""The default world (task=features: docs/world.md) through the stages, at test budgets: the effects the
embedded study exists to show, each of which fails on a broken world (checked in a scratch copy, 2026-12-03):
- more comparisons buy held-out accuracy: with gold's features replaced by a hash of the text (a gold with
  no learnable structure, penalties kept) tiny-s read 0.582 at 1,536 comparisons and 0.583 at 6,144;
- PPO against a weak proxy first raises gold, then loses it while the proxy keeps rising: with every
  penalty of gold set to 0 (no exploitable direction) gold rose from -0.12 to +0.33 and held (+0.30 at
  the end).
The budgets and thresholds were measured over 4 seeds (docs/world.md, sixth session)."""

import pandas as pd
import pytest

from rlhf_scaling.cli import compose
from rlhf_scaling.stages import data, ppo, rm, sft
from in_process import run_recipe as run  # one stage recipe in this process, with its run record

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # the module fixture trains the default SFT (3,000 steps)

# The default world's SFT policy (3,000 steps), proxies trained for 8 epochs on a few thousand comparisons.
BASE = ["progress=false", "device=cpu", "data.n_eval_prompts=128", "rm_train.epochs=8", "rm_train.eval_every=1000"]
BUDGETS = (1536, 6144)


def cfg_of(store, stage, *extra):
    return compose([f"artifacts_dir={store}", f"stage={stage}", *BASE, *extra])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The default SFT policy and K = 4 comparisons at two budgets (one policy for both)."""
    root = tmp_path_factory.mktemp("default_world")
    for budget in BUDGETS:
        cfg = cfg_of(root / "artifacts", "rm", f"data.comparison_budget={budget}")
        assert cfg.task.world == "features" and cfg.task.min_length == 2  # the default world, as the study runs it
        run(sft, cfg, root / f"sft{budget}", "sft")
        run(data, cfg, root / f"data{budget}", "data")
    return root / "artifacts"


def test_held_out_accuracy_rises_with_comparisons(store, tmp_path):
    """4 seeds: tiny-s at 24 epochs reads 0.62-0.70 on 1,536 comparisons, 0.73-0.81 on 6,144 (+0.07 to +0.13)."""
    accuracy = {b: run(rm, cfg_of(store, "rm", f"data.comparison_budget={b}", "model@rm=tiny-s", "rm_train.epochs=24"),
                       tmp_path / f"rm{b}", "rm")["rm/val_accuracy"] for b in BUDGETS}
    assert accuracy[6144] > accuracy[1536] + 0.04, accuracy


def test_ppo_against_a_weak_proxy_raises_gold_then_loses_it_while_the_proxy_keeps_rising(store, tmp_path):
    cfg = cfg_of(store, "ppo", "data.comparison_budget=1536", "model@rm=tiny-xs", "ppo.steps=100")
    run(rm, cfg, tmp_path / "rm", "rm")
    run(ppo, cfg, tmp_path / "ppo", "ppo")
    curve = pd.read_csv(tmp_path / "ppo" / "ppo_eval_curve.csv")  # held-out evaluations, every 10 iterations
    gold, proxy = curve["eval/gold"], curve["eval/proxy"]
    peak = gold.idxmax()
    # 4 seeds: gold gains 0.16-0.51 by its peak (at iteration 10), then falls 0.8-1.6 below it by iteration
    # 100 while the proxy gains another 0.51-0.68; one seed in CI, so the thresholds sit well inside.
    assert gold[peak] > gold[0] + 0.08, curve  # optimising the proxy first improves true quality ...
    assert gold.iloc[-1] < gold[peak] - 0.4, curve  # ... then loses it (overoptimization)
    assert proxy.iloc[-1] > proxy[peak] + 0.25 and proxy.iloc[-1] > proxy[0] + 0.5, curve  # while the proxy rises
