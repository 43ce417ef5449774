"""The claims logic: verdicts from known effects, the replicate interval's coverage, and a claims
table computed from a runs table whose effects are known."""

import math

import numpy as np
import pandas as pd
import pytest

from rlhf_scaling.analysis import claims
from rlhf_scaling.curves import bootstrap_ci, mean_interval


@pytest.mark.parametrize("mean,expected", [(1.0, "supported"), (-1.0, "contradicted"), (0.0, "inconclusive")])
def test_summarise_known_effects_positive_claim(mean, expected):
    rng = np.random.default_rng(0)
    effects = mean + 0.2 * rng.standard_normal(5)
    out = claims.summarise(effects, side=+1)
    assert out["verdict"] == expected
    assert out["low"] < out["effect"] < out["high"]
    assert out["n_replicates"] == 5


def test_verdict_follows_the_claimed_side():
    assert claims.verdict(0.1, 0.3, -1) == "contradicted"
    assert claims.verdict(-0.3, -0.1, -1) == "supported"
    assert claims.verdict(-0.1, 0.3, +1) == "inconclusive"
    assert claims.summarise([0.5], +1)["verdict"] == "inconclusive"  # one replicate: no interval
    # every best-of-n run peaking at its largest n: each replicate's slope of equal peak_d values is ~1e-17, the
    # interval has zero width; rounding noise is no effect (it was "supported" on the feature world's runs)
    assert claims.summarise([1.7e-17, 1.7e-17, 1.7e-17], +1)["verdict"] == "inconclusive"
    assert claims.summarise([-1.7e-17] * 3, +1)["verdict"] == "inconclusive"
    assert claims.summarise([1e-6, 1.1e-6, 1.2e-6], +1)["verdict"] == "supported"  # small but real


def test_replicate_interval_covers_the_true_mean_at_the_nominal_rate():
    """3 replicates per effect, 4000 simulated experiments: the t interval over replicates covers the
    true mean ~95% of the time; a percentile bootstrap over the same 3 seeds covers far less (why
    the claims use the t interval)."""
    rng = np.random.default_rng(1)
    true = 0.3
    draws = true + rng.standard_normal((4000, 3))
    hits = [lo <= true <= hi for _, lo, hi in (mean_interval(d) for d in draws)]
    assert 0.93 <= np.mean(hits) <= 0.97
    boot = [lo <= true <= hi for lo, hi in (bootstrap_ci(np.mean, d, n_boot=200, seed=i) for i, d in enumerate(draws[:400]))]
    assert np.mean(boot) < 0.85


def _rm_runs(slope_per_log_budget: float, noise: float = 0.01, replicates: int = 3, seed: int = 0) -> pd.DataFrame:
    """A runs table of RM jobs of a data_size sweep whose accuracy rises by `slope_per_log_budget`
    per unit of ln(comparisons), two RM sizes, `replicates` seeds."""
    rng = np.random.default_rng(seed)
    rows = []
    for rep in range(replicates):
        for rm in ("tiny-xs", "tiny-s"):
            for budget in (768, 1536, 3072):
                acc = 0.6 + slope_per_log_budget * math.log(budget) + noise * rng.standard_normal()
                rows.append({"run_id": f"{rm}_{budget}_{rep}", "group": "data_size", "stage": "rm", "_step": 0,
                             "config.rm.name": rm, "config.data.comparison_budget": budget,
                             "config.replicate": rep, "config.rm_train.seed": rep,
                             "summary.rm/val_accuracy": acc})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("true_slope,expected", [(0.05, "supported"), (-0.05, "contradicted"), (0.0, "inconclusive")])
def test_claims_table_measures_a_known_effect(true_slope, expected):
    table = claims.claims_table(_rm_runs(true_slope)).set_index("id")
    row = table.loc["G5-accuracy"]
    assert row["verdict"] == expected
    assert row["n_replicates"] == 3 and row["n_runs"] == 18
    assert row["low"] <= true_slope <= row["high"]
    # the other sweeps were not run: reported as such, never guessed
    assert table.loc["G6", "verdict"] == "not run" and table.loc["H4-gain", "verdict"] == "not run"
    assert math.isnan(table.loc["G6", "effect"])


def test_replicates_without_the_key_come_from_seed_ranks():
    runs = _rm_runs(0.05).drop(columns=["config.replicate"])
    reps = claims.replicates(runs, claims.RM_SETTING)
    assert sorted(reps.unique()) == [0, 1, 2]
    assert (reps.to_numpy() == runs["config.rm_train.seed"].to_numpy()).all()


def test_write_claims_writes_a_row_per_claim(tmp_path):
    table = claims.write_claims(_rm_runs(0.05), tmp_path)
    text = (tmp_path / "claims.md").read_text()
    for claim in claims.CLAIMS:
        assert f"| {claim.id} (" in text
    assert len(pd.read_csv(tmp_path / "claims.csv")) == len(claims.CLAIMS) == len(table)


@pytest.mark.slow
def test_a_sweep_folder_of_best_of_n_jobs_alone_gives_claims_not_a_crash(real_runs_root):
    """A user's folder of best-of-n jobs over data budgets (their RMs trained by another sweep): the RM-accuracy
    claims have no RM jobs to read and say "not run"; they used to crash in with_rm_facts on the empty table."""
    from rlhf_scaling.analysis.runs import load_local_runs

    df = load_local_runs(real_runs_root / "reuse")
    df = df[df["stage"] == "bon"].assign(group="data_size")
    assert len(df) and df["stage"].eq("bon").all()
    table = claims.claims_table(df).set_index("id")
    assert table.loc["G5-accuracy", "verdict"] == claims.NOT_RUN
    assert table.loc["G5-accuracy", "n_runs"] > 0  # the sweep's runs were found; they hold no RM job
