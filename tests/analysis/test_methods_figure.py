"""The method axis end to end: a small real `rlhf-scaling -m +sweep=method` (ppo, rloo, grpo, bon against
one proxy RM) writes its records through the tracker, and the `methods` figure and table are drawn from
them: one method per run from stage + ppo.algorithm, held-out evaluation points for the policy-gradient
methods, the n grid with KL = log n − (n−1)/n for best-of-n, and a fitted Gao curve per method."""

import math
import subprocess
import sys

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from rlhf_scaling.analysis.figures import FIGURES, write_figures
from rlhf_scaling.analysis.methods import METHODS, fig_methods, method_curves, method_of, method_table
from rlhf_scaling.analysis.runs import load_local_runs, per_run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # a 4-job sweep: minutes on a loaded 2-core CPU

SMALL = ["progress=false", "ppo.steps=4", "ppo.eval_every=2", "ppo.eval_prompts=16", "ppo.prompts_per_step=4",
         "ppo.minibatch_size=8", "ppo.lr=1e-3", "bon.n_max=16", "bon.n_eval_prompts=16"]


@pytest.fixture(scope="module")
def sweep(ppo_store, tmp_path_factory):
    """The method sweep at small sizes, on the session's upstream artifacts (its proxy RM, tiny-s)."""
    root = tmp_path_factory.mktemp("method_sweep")
    proc = subprocess.run([sys.executable, "-m", "rlhf_scaling.cli", "-m", "+sweep=method", f"hydra.sweep.dir={root}",
                           f"artifacts_dir={ppo_store.artifacts}", *ppo_store.overrides, *SMALL,
                           "model@rm=tiny-s", "method=ppo,rloo,grpo,bon"],
                          capture_output=True, text=True, timeout=1200, cwd=root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root, load_local_runs(root)


def test_each_run_is_one_method_from_its_stage_and_algorithm(sweep):
    _, df = sweep
    runs = per_run(df)
    assert sorted(method_of(runs)) == ["bon", "grpo", "ppo", "rloo"]
    assert dict(zip(method_of(runs), runs["stage"])) == {"bon": "bon", "grpo": "ppo", "ppo": "ppo", "rloo": "ppo"}
    dpo = pd.DataFrame({"stage": ["dpo", "ppo", "bon"], "config.ppo.algorithm": [np.nan, np.nan, "ppo"]})
    assert method_of(dpo).tolist() == ["dpo", "ppo", "bon"]  # DPO runs (and runs before the key) too


def test_curves_are_the_held_out_evaluations_and_the_best_of_n_grid(sweep):
    _, df = sweep
    curves = method_curves(df)
    for method in ("ppo", "rloo", "grpo"):
        c = curves[curves["method"] == method]
        assert c["x"].tolist() == [0, 2, 4] and set(c["points"]) == {"eval"}
        assert c["gold_gain"].iloc[0] == 0 and c["sqrt_kl"].iloc[0] == pytest.approx(0, abs=1e-6)
    bon = curves[curves["method"] == "bon"]
    n = bon["x"].to_numpy()
    assert n.tolist() == [1, 2, 4, 8, 16]
    np.testing.assert_allclose(bon["sqrt_kl"], np.sqrt(np.log(n) - (n - 1) / n), rtol=1e-6)


def test_the_table_has_each_methods_peak_and_fitted_coefficients(sweep):
    _, df = sweep
    curves = method_curves(df)
    table = method_table(curves)
    assert table["method"].tolist() == [m for m in METHODS if m != "dpo"]
    assert (table["n_seeds"] == 1).all() and table["alpha_low"].isna().all()  # one seed: no interval
    for row in table.itertuples():
        c = curves[curves["method"] == row.method]
        assert row.peak_gold_gain == c["gold_gain"].max()
        assert row.sqrt_kl_at_peak == c["sqrt_kl"].iloc[int(np.argmax(c["gold_gain"]))]
        assert math.isfinite(row.alpha) and math.isfinite(row.beta)


def test_the_methods_figure_draws_every_method_with_its_fit(sweep, tmp_path):
    root, df = sweep
    fig = fig_methods(df, str(root))
    gold, proxy = fig.axes  # one proxy RM: one column, gold above proxy
    assert [t.get_text() for t in gold.get_legend().get_texts()] == ["ppo", "rloo", "grpo", "bon"]
    table = method_table(method_curves(df))
    fits = {"gold": int((table["beta"] > 0).sum()),  # a gold fit with β <= 0 has no peak: named, not drawn
            "proxy": int(table[["alpha_proxy", "beta_proxy"]].notna().all(axis=1).sum())}
    for ax, target in ((gold, "gold"), (proxy, "proxy")):
        assert len([line for line in ax.get_lines() if line.get_marker() == "o"]) == 4  # one set of points each
        assert len([line for line in ax.get_lines() if line.get_linestyle() == "--"]) == fits[target] > 0
    assert fits["gold"] == 4 or "no peak" in fig.texts[0].get_text()
    plt.close(fig)
    assert "methods" in FIGURES
    [png] = write_figures(df, tmp_path, str(root), only=["methods"])
    assert png.name == "methods.png" and png.stat().st_size > 10_000
