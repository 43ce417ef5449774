"""The method axis (issue 16): gold and proxy reward vs sqrt(KL) per optimisation method, with each
method's fitted Gao curve, and the table behind it. `rlhf-scaling-figures` draws it as `methods`.

method   which optimiser a run is, from its stage and ppo.algorithm (method_of): ppo | rloo | grpo
         (stage ppo), bon (stage bon), dpo (stage dpo, whose runs log the same eval/* keys)
points   the held-out evaluations (eval/step, eval/gold, eval/proxy, eval/kl) of the policy-gradient
         methods (training-batch means where a run has none), best-of-n's n grid with
         KL = log n − (n − 1)/n (figures.overoptimization_curves); gains over the initial policy / n = 1
fit      Gao et al. 2022 per run: the BoN form d(α − βd) for best-of-n, the RL form d(α − β log d) for
         the others; a (method, RM) line shows the mean coefficients over its runs (seeds)
table    method_table: per (sweep group, method, RM) the peak measured gold gain and the sqrt(KL) where
         it was reached (means over seeds), the fitted α, β with 95% bootstrap intervals over seeds
         (NaN with one seed), and the fitted curve's peak d* (curves.peak)
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from rlhf_scaling.analysis.figures import (FORM_FN, _footer, _fit, _size_order, overoptimization_curves,
                                           turns_down)
from rlhf_scaling.analysis.runs import per_run
from rlhf_scaling.analysis.style import FIT_LINESTYLE
from rlhf_scaling.curves import bootstrap_ci, peak

METHODS = ("ppo", "rloo", "grpo", "dpo", "bon")  # legend order; a fixed colour each, whatever is present
COLOURS = dict(zip(METHODS, plt.get_cmap("tab10").colors))
EQUATIONS = {"rl": "d(α − β log d)", "bon": "d(α − βd)"}


def form_of(method: str) -> str:
    """The Gao form a method's curve follows: BoN for best-of-n, RL for the optimisers that train."""
    return "bon" if method == "bon" else "rl"


def method_of(runs: pd.DataFrame) -> pd.Series:
    """Each run's method (runs: one row per run, with `stage`): ppo.algorithm for stage ppo (ppo where
    a run predates the key), otherwise the stage's name (bon, dpo; rm, sft, ... for other jobs)."""
    stage = runs["stage"].fillna("?").astype(str)
    algorithm = (runs["config.ppo.algorithm"] if "config.ppo.algorithm" in runs else pd.Series(None, index=runs.index))
    return stage.where(stage != "ppo", algorithm.astype(object).where(algorithm.notna(), "ppo").astype(str))


def method_curves(df: pd.DataFrame) -> pd.DataFrame:
    """figures.overoptimization_curves of PPO-like runs (eval points) and best-of-n together, with a
    `method` column; only runs of a known method (METHODS)."""
    parts = [c for c in (overoptimization_curves(df, "ppo"), overoptimization_curves(df, "bon")) if not c.empty]
    if not parts:
        return pd.DataFrame()
    runs = per_run(df)
    curves = pd.concat(parts, ignore_index=True)
    curves["method"] = curves["run_id"].map(dict(zip(runs["run_id"], method_of(runs))))
    return curves[curves["method"].isin(METHODS)].reset_index(drop=True)


def run_fits(curves: pd.DataFrame) -> pd.DataFrame:
    """One row per run: group, method, rm, n_params, peak_gold_gain (the largest measured gold gain),
    sqrt_kl_at_peak (where it was measured), alpha, beta (gold-gain fit of the method's form; NaN
    where the points cannot determine them), alpha_proxy, beta_proxy."""
    rows = []
    for run_id, c in curves.groupby("run_id", sort=True):
        method = c["method"].iloc[0]
        at = int(np.nanargmax(c["gold_gain"].to_numpy(float)))
        gold = _fit(c, "gold_gain", form_of(method)) or (np.nan, np.nan)
        proxy = _fit(c, "proxy_gain", form_of(method)) or (np.nan, np.nan)
        rows.append({"run_id": run_id, "group": c["group"].iloc[0], "method": method, "rm": c["rm"].iloc[0],
                     "n_params": c["n_params"].iloc[0], "peak_gold_gain": c["gold_gain"].iloc[at],
                     "sqrt_kl_at_peak": c["sqrt_kl"].iloc[at], "alpha": gold[0], "beta": gold[1],
                     "alpha_proxy": proxy[0], "beta_proxy": proxy[1]})
    return pd.DataFrame(rows)


def _mean_interval(values: np.ndarray, n_boot: int) -> tuple:
    """(mean, low, high): the mean over seeds and its 95% percentile-bootstrap interval (NaN with < 2)."""
    values = values[np.isfinite(values)]
    if not len(values):
        return np.nan, np.nan, np.nan
    low, high = bootstrap_ci(np.mean, values, n_boot=n_boot) if len(values) > 1 else (np.nan, np.nan)
    return float(values.mean()), low, high


def method_table(curves: pd.DataFrame, n_boot: int = 1000) -> pd.DataFrame:
    """Per (group, method, rm), in METHODS order: n_seeds, peak_gold_gain, sqrt_kl_at_peak (means over
    seeds of run_fits), alpha/beta with _low/_high (95% bootstrap over seeds), alpha_proxy,
    beta_proxy (means), fit_sqrt_kl_peak (curves.peak of the mean α, β: inf where β <= 0, no peak)."""
    fits = run_fits(curves) if not curves.empty else pd.DataFrame()
    rows = []
    for (group, method, rm), f in (fits.groupby(["group", "method", "rm"], sort=False) if not fits.empty else []):
        row = {"group": group, "method": method, "rm": rm, "n_params": f["n_params"].iloc[0], "n_seeds": len(f),
               "peak_gold_gain": f["peak_gold_gain"].mean(), "sqrt_kl_at_peak": f["sqrt_kl_at_peak"].mean()}
        for name in ("alpha", "beta"):
            row[name], row[f"{name}_low"], row[f"{name}_high"] = _mean_interval(f[name].to_numpy(float), n_boot)
        row.update(alpha_proxy=f["alpha_proxy"].mean(), beta_proxy=f["beta_proxy"].mean())
        row["fit_sqrt_kl_peak"] = (peak(row["alpha"], row["beta"], form_of(method))[0]
                                   if np.isfinite(row["beta"]) else np.nan)
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    order = {m: i for i, m in enumerate(METHODS)}
    return table.sort_values(["group", "rm", "method"], key=lambda s: s.map(order) if s.name == "method" else s,
                             kind="stable").reset_index(drop=True)


def fig_methods(df: pd.DataFrame, source: str):
    """(g) Gold (top) and proxy (bottom) reward gain vs sqrt(KL), one column per proxy RM, one colour
    per method: the measured points of every run and the method's fitted Gao curve (dashed, the mean
    coefficients over seeds). None unless the runs hold >= 2 methods."""
    curves = method_curves(df)
    if curves.empty or curves["method"].nunique() < 2:
        return None
    table = method_table(curves, n_boot=200).set_index(["group", "method", "rm"])
    by_rm = _size_order(df, curves["rm"].unique())
    fig, axes = plt.subplots(2, len(by_rm), figsize=(3.4 * len(by_rm) + 1.2, 6.4), squeeze=False, sharey="row")
    no_peak = []
    for col, rm in enumerate(by_rm):
        for (group, method), c in curves[curves["rm"] == rm].groupby(["group", "method"], sort=False):
            fit = table.loc[(group, method, rm)]
            grid = np.linspace(0.0, max(float(np.nanmax(c["sqrt_kl"])), 1e-3), 200)
            for ax, target, (a, b) in ((axes[0][col], "gold_gain", (fit["alpha"], fit["beta"])),
                                       (axes[1][col], "proxy_gain", (fit["alpha_proxy"], fit["beta_proxy"]))):
                ax.plot(c["sqrt_kl"], c[target], "o", ms=3.5, alpha=0.8, color=COLOURS[method], label=method)
                if not (np.isfinite(a) and np.isfinite(b)):
                    continue  # too few points to fit (e.g. a run still at its first evaluation)
                if target == "gold_gain" and not turns_down(b):
                    no_peak.append(f"{method} vs {rm}")
                else:
                    ax.plot(grid, FORM_FN[form_of(method)](grid, a, b), FIT_LINESTYLE, lw=1.2, color=COLOURS[method])
        axes[0][col].set_title(f"proxy RM {by_rm[rm][1]}")
        axes[1][col].set_xlabel("sqrt(KL(π ‖ π_init))  [nats^½]")
    for row, target in enumerate(("gold", "proxy")):
        axes[row][0].set_ylabel(f"{target} reward gain")
        for ax in axes[row]:
            ax.axhline(0, color="0.5", lw=0.6)
    handles = {label: h for ax in axes.flat for h, label in zip(*ax.get_legend_handles_labels())}
    axes[0][0].legend([handles[m] for m in METHODS if m in handles], [m for m in METHODS if m in handles],
                      title="method")
    forms = sorted({form_of(m) for m in curves["method"]})
    note = ("points: held-out evaluations (best-of-n: its n grid, KL = log n − (n−1)/n); dashed: Gao et al. fit, "
            + ", ".join(f"{'best-of-n' if f == 'bon' else 'RL'} form {EQUATIONS[f]}" for f in forms)
            + ", mean coefficients over seeds")
    if no_peak:
        note += f"; gold fit not drawn where β ≤ 0 (no peak): {', '.join(no_peak)}"
    _footer(fig, source, curves["run_id"].nunique(), note)
    return fig
