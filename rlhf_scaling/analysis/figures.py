"""Every figure from a runs table: fetch (runs.py) -> fit (curves.py) -> plot, one function per figure.

    rlhf-scaling-figures --runs outputs/ --out figures/           # local run records (any folder)
    rlhf-scaling-figures --wandb my-entity/rlhf-scaling --out figures/

name                       what                                                           data it needs
overoptimization_bon  (a)  gold and proxy gain vs sqrt(KL), best-of-n, per RM size, fitted  bon/n, bon/sqrt_kl, bon/gold
overoptimization_ppo  (a)  the same for PPO with the RL form (Gao et al. Fig. 1)            ppo/step, ppo/sqrt_kl, ppo/gold
coefficients_vs_rm_size (b) fitted alpha, beta vs RM parameters, log-linear fit (Gao Fig. 3) (a) for >= 2 RM sizes
rm_accuracy           (c)  RM held-out accuracy vs comparisons and vs RM size               rm/val_accuracy
samples_per_prompt    (d)  gold reward vs samples per prompt: n in best-of-n, PPO rollouts  bon curves / >= 2 ppo.samples_per_prompt
samples_per_prompt_matched (d') PPO held-out gold gain at matched KL, rollouts and FLOPs  eval/* of >= 2 ppo.samples_per_prompt
diversity             (e)  gold and RM accuracy vs K at a fixed budget, one line per budget  >= 2 data.responses_per_prompt
diversity_heatmap     (e') gold reward over (budget, K), cells labelled with their prompts   >= 2 K and >= 2 budgets
ppo_training          (f)  PPO proxy / gold / KL training curves                            ppo/step
methods               (g)  gold and proxy vs sqrt(KL) per method (ppo, rloo, grpo, dpo, bon),  >= 2 methods
                           each with its fitted Gao curve (analysis/methods.py)

A figure whose data the runs lack, or that would mislead on them (a figure function may return
the reason as a str), is skipped with a printed note. Every figure's footer names
the source and the number of runs behind it. Output is deterministic: the same records give
byte-identical PNG and PDF files (no timestamps or software versions in the metadata).
Gains: best-of-n gains are over n = 1 (bon/*_gain as logged); PPO gains are over the first
logged iteration, so R(0) = 0 as the Gao forms assume (curves.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.optimize import OptimizeWarning  # noqa: E402

from rlhf_scaling.analysis.runs import (RM_RECIPE, RM_RECIPE_KEYS, as_text, load_local_runs,  # noqa: E402
                                        load_wandb_runs, named_once, per_run, varying_config, with_rm_facts)
from rlhf_scaling.analysis.style import FIT_LINESTYLE, SIZE_CMAP, figure_style  # noqa: E402
from rlhf_scaling.config import pairs_per_prompt  # noqa: E402
from rlhf_scaling.curves import (PowerLaw, bon_form, bootstrap_ci, fit_log_linear, fit_overoptimization,  # noqa: E402
                                 fit_power_law, fit_power_law_select, mean_interval, rl_form)

FORM_OF = {"bon": "bon", "ppo": "rl"}  # which Gao form each optimisation method follows
FORM_FN = {"bon": bon_form, "rl": rl_form}
PNG_METADATA = {"Software": None}  # no matplotlib version string: same bytes across runs
PDF_METADATA = {"CreationDate": None, "Producer": None, "Creator": None}
# Per-run gold value for cross-run figures, first present wins (BoN peak, then PPO end).
GOLD_SUMMARIES = ["summary.bon/best_gold", "summary.bon/gold_at_n_max", "summary.ppo/final_gold"]


# ----------------------------------------------------------------------------- fit: tables behind the figures


def rm_sizes(df: pd.DataFrame) -> Dict[str, float]:
    """RM name -> parameter count: config rm.n_params where set, else the rm/n_params an RM job
    reported (any run that trained or reused that RM)."""
    sizes: Dict[str, float] = {}
    if "config.rm.name" not in df:
        return sizes
    runs = per_run(df)
    for col in ("summary.rm/n_params", "config.rm.n_params"):  # later columns win
        if col in runs:
            known = runs.dropna(subset=[col]).groupby("config.rm.name", sort=True)[col].first()
            sizes.update({str(k): float(v) for k, v in known.items()})
    return sizes


def proxy_sizes(df: pd.DataFrame) -> Dict[str, float]:
    """run_id -> parameter count of the proxy RM the run used: config rm.n_params where set (a
    nominal size), else the run's own record (rm/n_params: an RM job's count, or a best-of-n / PPO
    job's record of its proxy where it has one), else that of the RM job with the same RM recipe
    (runs.with_rm_facts), else any run's count for the RM's name (rm_sizes)."""
    if "config.rm.name" not in df:
        return {}
    runs = with_rm_facts(per_run(df))
    size = pd.Series(np.nan, index=runs.index)
    for col in ("config.rm.n_params", "summary.rm/n_params"):
        if col in runs:
            size = size.fillna(pd.to_numeric(runs[col], errors="coerce"))
    size = size.fillna(runs["config.rm.name"].astype(str).map(rm_sizes(df)))
    return dict(zip(runs["run_id"], size.astype(float)))


_UNITS = {"k": 1e3, "m": 1e6, "b": 1e9}


def estimated_sizes(df: pd.DataFrame) -> Dict[str, float]:
    """RM name -> a size to ORDER by where none was counted: 12·n_layer·d_model² (the non-embedding
    parameters of a transformer block stack) for tiny specs, else the size a hub name spells
    ("pythia-410m" -> 4.1e8). Names with neither are left out."""
    out: Dict[str, float] = {}
    if "config.rm.name" not in df:
        return out
    runs = per_run(df).drop_duplicates("config.rm.name")
    for row in runs.to_dict("records"):
        name = str(row["config.rm.name"])
        layers, width = row.get("config.rm.n_layer"), row.get("config.rm.d_model")
        if row.get("config.rm.source", "tiny") == "tiny" and _is_number(layers) and _is_number(width):
            out[name] = 12.0 * float(layers) * float(width) ** 2
            continue
        spelled = re.findall(r"(\d+(?:\.\d+)?)([kmb])(?![a-z])", name.lower())
        if spelled:
            number, unit = spelled[-1]
            out[name] = float(number) * _UNITS[unit]
    return out


def _size_order(df: pd.DataFrame, names) -> Dict[str, tuple]:
    """RM name -> (colour, label), ordered by size: counted sizes, else estimated ones
    (estimated_sizes: so tiny-xs < tiny-s < tiny-m < tiny-l even where no run counted them), then
    the rest by name. The label shows counted sizes only."""
    sizes = rm_sizes(df)
    guess = {**estimated_sizes(df), **sizes}
    order = sorted(set(names), key=lambda n: (guess.get(n, math.inf), n))
    colours = plt.get_cmap(SIZE_CMAP)(np.linspace(0.05, 0.85, max(len(order), 1)))
    return {n: (colours[i], f"{n} ({_human(sizes[n])})" if n in sizes else n) for i, n in enumerate(order)}


def run_styles(df: pd.DataFrame, run_ids, kind: str) -> Tuple[Dict[str, tuple], Dict[str, tuple]]:
    """Colour and legend label per run of a `kind` ("bon" | "ppo") figure, by what was swept: the
    settings of the runs' recipe (runs.RM_RECIPE and the kind's own section) that vary across
    them, seeds left out, so runs that differ only in seed share a colour and a legend entry.
    Returns (run_id -> (colour, label), label -> (colour, label)) in size order (the second for
    _legend_once). Where only the RM varies, the RM-size colour map of _size_order."""
    runs = per_run(df)
    runs = runs[runs["run_id"].isin(set(run_ids))]
    recipe = [c for c in runs.columns if c.startswith(RM_RECIPE + (f"config.{kind}.",)) or c in RM_RECIPE_KEYS]
    varied = varying_config(runs[recipe], seeds=False)
    if "config.rm.name" in varied:  # the RM first: it orders the colours by size
        varied = ["config.rm.name"] + [c for c in varied if c != "config.rm.name"]
    shown = named_once(runs, varied)
    if shown in ([], ["config.rm.name"]):
        names = runs["config.rm.name"].astype(str) if "config.rm.name" in runs else pd.Series("?", index=runs.index)
        by_rm = _size_order(df, names)
        return {r: by_rm[n] for r, n in zip(runs["run_id"], names)}, {v[1]: v for v in by_rm.values()}
    sizes, guess = rm_sizes(df), {**estimated_sizes(df), **rm_sizes(df)}
    keys = as_text(runs[shown])
    labels = {r: _group_label(tuple(k), shown, runs, sizes) for r, k in zip(runs["run_id"], keys.itertuples(index=False))}
    first = {label: tuple(k) for label, k in zip(labels.values(), keys.itertuples(index=False))}

    def order(label):
        key = first[label]
        return (guess.get(key[0], math.inf) if shown[0] == "config.rm.name" else 0.0,
                tuple((0, float(v), "") if _is_number(v) else (1, 0.0, str(v)) for v in key))

    ordered = sorted(first, key=order)
    colours = (plt.get_cmap("tab10").colors if len(ordered) <= 10
               else plt.get_cmap(SIZE_CMAP)(np.linspace(0.05, 0.85, len(ordered))))
    style = {label: (colours[i], label) for i, label in enumerate(ordered)}
    return {r: style[label] for r, label in labels.items()}, style


def _human(n: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.0f}"


def overoptimization_curves(df: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Long table of the kind's ("bon" | "ppo") curves: run_id, run_name, group, rm, n_params, x (n or
    iteration), sqrt_kl, proxy_gain, gold_gain, gold, proxy, points. Sorted by (run_id, x).
    PPO: a run's held-out evaluations (eval/*, points "eval") where it has them, else its
    training-batch means (points "batch")."""
    if kind == "ppo" and "eval/step" in df:
        evaluated = df.loc[df["eval/gold"].notna(), "run_id"].unique() if "eval/gold" in df else []
        sizes = proxy_sizes(df)
        with_eval = _curves(df[df["run_id"].isin(evaluated)], "eval", "step", sizes).assign(points="eval")
        batch = _curves(df[~df["run_id"].isin(evaluated)], "ppo", "step", sizes).assign(points="batch")
        both = [c for c in (with_eval, batch) if not c.empty]
        return pd.concat(both, ignore_index=True).sort_values(["run_id", "x"], kind="stable").reset_index(drop=True) \
            if both else pd.DataFrame()
    out = _curves(df, kind, "n" if kind == "bon" else "step", proxy_sizes(df))
    return out.assign(points="batch") if kind == "ppo" and not out.empty else out


def _curves(df: pd.DataFrame, kind: str, step: str, sizes: dict) -> pd.DataFrame:
    """overoptimization_curves from the <kind>/{step, sqrt_kl, proxy, gold} records (kind: bon, ppo
    or eval), with the proxy sizes by run (proxy_sizes)."""
    x, d, proxy, gold = (f"{kind}/{k}" for k in (step, "sqrt_kl", "proxy", "gold"))
    if any(c not in df for c in (x, d, gold)):
        return pd.DataFrame()
    rows = df.dropna(subset=[x, d, gold]).sort_values(["run_id", x], kind="stable")
    rows = rows.assign(_sweep=_sweep_group(rows))
    rows = rows.drop_duplicates(["run_id", x], keep="last")  # a resumed run re-logs a few iterations
    out = []
    for run_id, r in rows.groupby("run_id", sort=True):
        rm = str(r["config.rm.name"].iloc[0]) if "config.rm.name" in r else "?"
        p = r[proxy].to_numpy(float) if proxy in r else np.full(len(r), np.nan)
        g = r[gold].to_numpy(float)
        # BoN logs its gains over n = 1 (the pool mean); PPO's baseline is its first iteration
        # (the iteration-0 evaluation of the initial policy, or the first training batch).
        g_gain = r[f"{kind}/gold_gain"].to_numpy(float) if f"{kind}/gold_gain" in r else g - g[0]
        p_gain = r[f"{kind}/proxy_gain"].to_numpy(float) if f"{kind}/proxy_gain" in r else p - p[0]
        # best-of-n's 95% interval of the gold gain over its prompts, as logged (bon.py); NaN elsewhere
        low, high = (r[f"{kind}/gold_gain_{e}"].to_numpy(float) if f"{kind}/gold_gain_{e}" in r else np.full(len(r), np.nan)
                     for e in ("low", "high"))
        out.append(pd.DataFrame({"run_id": run_id, "run_name": r["run_name"].to_numpy(), "group": r["_sweep"].iloc[0], "rm": rm,
                                 "n_params": sizes.get(run_id, np.nan), "x": r[x].to_numpy(float),
                                 "sqrt_kl": r[d].to_numpy(float), "proxy_gain": p_gain, "gold_gain": g_gain,
                                 "gold": g, "proxy": p, "gold_gain_low": low, "gold_gain_high": high}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def _fit(curve: pd.DataFrame, target: str, form: str) -> Optional[tuple]:
    """(alpha, beta) of one run's `target` gain, or None where the points cannot determine them."""
    ok = np.isfinite(curve["sqrt_kl"]) & np.isfinite(curve[target]) & (curve["sqrt_kl"] >= 0)
    try:
        return fit_overoptimization(curve.loc[ok, "sqrt_kl"], curve.loc[ok, target], form)
    except ValueError:
        return None


def turns_down(beta: float) -> bool:
    """Whether a fitted Gao gold curve has the form's shape: β > 0, so gold rises, peaks and falls.
    β <= 0 breaks the form (curves.peak would say inf): report it as such, never as a peak."""
    return bool(np.isfinite(beta) and beta > 0)


def fitted_coefficients(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (kind, run): kind, run_id, group, rm, n_params, alpha, beta (gold-gain fit of the
    kind's Gao form), alpha_proxy, beta_proxy, turns_down (β > 0: the gold fit has a peak). Runs
    whose points cannot be fitted are left out."""
    rows = []
    for kind, form in FORM_OF.items():
        curves = overoptimization_curves(df, kind)
        for run_id, c in (curves.groupby("run_id", sort=True) if not curves.empty else []):
            gold = _fit(c, "gold_gain", form)
            if gold is None:
                continue
            proxy = _fit(c, "proxy_gain", form) or (np.nan, np.nan)
            rows.append({"kind": kind, "run_id": run_id, "group": c["group"].iloc[0], "rm": c["rm"].iloc[0],
                         "n_params": c["n_params"].iloc[0], "alpha": gold[0], "beta": gold[1],
                         "alpha_proxy": proxy[0], "beta_proxy": proxy[1], "turns_down": turns_down(gold[1])})
    return pd.DataFrame(rows, columns=["kind", "run_id", "group", "rm", "n_params", "alpha", "beta", "alpha_proxy",
                                       "beta_proxy", "turns_down"])


def coefficient_intervals(df: pd.DataFrame, n_boot: int = 1000) -> pd.DataFrame:
    """Gao α, β per setting with a 95% bootstrap interval over seeds: the runs of fitted_coefficients
    grouped by (kind, sweep group, setting), the setting being the legend label of run_styles (the
    swept settings, seeds left out). Columns: kind, group, setting, n_seeds, alpha, alpha_low,
    alpha_high, beta, beta_low, beta_high, turns_down (β > 0 in every seed). Intervals are NaN with
    one seed; with 2-3 seeds a percentile bootstrap has few distinct resamples (coarse, too narrow)."""
    coef = fitted_coefficients(df)
    columns = ["kind", "group", "setting", "n_seeds", "alpha", "alpha_low", "alpha_high", "beta", "beta_low",
               "beta_high", "turns_down"]
    rows = []
    for kind, c in (coef.groupby("kind", sort=True) if not coef.empty else []):
        by_run = run_styles(df, c["run_id"].unique(), kind)[0]
        c = c.assign(setting=c["run_id"].map(lambda r: by_run[r][1]))
        for (group, setting), g in c.groupby(["group", "setting"], sort=False):
            row = {"kind": kind, "group": group, "setting": setting, "n_seeds": len(g),
                   "turns_down": bool(g["turns_down"].all())}
            for name in ("alpha", "beta"):
                values = g[name].to_numpy(float)
                low, high = bootstrap_ci(np.mean, values, n_boot=n_boot) if len(values) > 1 else (np.nan, np.nan)
                row.update({name: float(values.mean()), f"{name}_low": low, f"{name}_high": high})
            rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def seed_bootstrap_slope(n_params: np.ndarray, values: np.ndarray, n_boot: int = 1000, seed: int = 0,
                         level: float = 0.95) -> tuple:
    """Percentile bootstrap interval of the log-linear slope over seeds: the runs at each size
    (its seeds, the independent replicates) are resampled with replacement within that size, the
    slope refitted, n_boot times. (nan, nan) unless every size has >= 2 runs (one seed: no interval).
    n_params, values: shape (R,), one entry per run."""
    sizes = np.unique(n_params)
    at = [np.flatnonzero(n_params == n) for n in sizes]
    if len(sizes) < 2 or min(len(i) for i in at) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    slopes = []
    for _ in range(n_boot):
        pick = np.concatenate([rng.choice(i, size=len(i), replace=True) for i in at])
        slopes.append(fit_log_linear(n_params[pick], values[pick])[0])
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(slopes, [tail, 1.0 - tail])
    return float(low), float(high)


def coefficient_scaling(coef: pd.DataFrame) -> pd.DataFrame:
    """Gao Fig. 3: per (group, kind, coefficient) the log-linear fit coefficient ≈ slope·ln N +
    intercept over RM sizes N, within one study/sweep (runs of different sweeps differ in more than
    N), with the slope's 95% bootstrap interval over seeds (slope_low, slope_high:
    seed_bootstrap_slope; NaN with one seed per size). (group, kind) pairs with fewer than 2
    distinct known sizes are left out."""
    rows = []
    known = coef.dropna(subset=["n_params"]) if not coef.empty else coef
    for (group, kind), c in (known.groupby(["group", "kind"], sort=True) if not known.empty else []):
        if c["n_params"].nunique() < 2:
            continue
        for name in ("alpha", "beta"):
            n, v = c["n_params"].to_numpy(float), c[name].to_numpy(float)
            slope, intercept = fit_log_linear(n, v)
            low, high = seed_bootstrap_slope(n, v)
            rows.append({"group": group, "kind": kind, "coefficient": name, "slope": slope,
                         "intercept": intercept, "n_runs": len(c), "slope_low": low, "slope_high": high})
    return pd.DataFrame(rows, columns=["group", "kind", "coefficient", "slope", "intercept", "n_runs", "slope_low",
                                       "slope_high"])


def _sweep_group(runs: pd.DataFrame) -> pd.Series:
    """Each run's study/sweep (W&B group; config experiment in tables without a group column), so
    cross-run figures never join points from different sweeps into one line."""
    for col in ("group", "config.experiment"):
        if col in runs:
            return runs[col].fillna("").astype(str)
    return pd.Series("", index=runs.index)


def _run_gold(runs: pd.DataFrame) -> Optional[str]:
    """The summary column giving each run's gold reward for cross-run figures (first present)."""
    return next((c for c in GOLD_SUMMARIES if c in runs and runs[c].notna().any()), None)


# ----------------------------------------------------------------------------- plot: one function per figure


FOOTER_PT = 6.5  # footer font size (points)


def _footer(fig, source: str, n_runs: int, note: str = "") -> None:
    """The source, the runs behind the figure and a note, at the bottom, wrapped to the figure's
    width (about 0.6 em per character); `save` makes room for as many lines as it takes."""
    text = f"source: {source}  |  {n_runs} run{'s' if n_runs != 1 else ''}" + (f"  |  {note}" if note else "")
    width = int(0.98 * fig.get_figwidth() * 72 / (0.6 * FOOTER_PT))
    text = textwrap.fill(text, width, break_long_words=True, break_on_hyphens=False)
    fig.text(0.01, 0.01, text, fontsize=FOOTER_PT, color="0.4", ha="left", va="bottom", gid="footer")


def layout(fig) -> None:
    """Tight layout above the footer: its lines (FOOTER_PT, line spacing 1.2) plus a margin."""
    footer = [t for t in fig.texts if t.get_gid() == "footer"]
    lines = footer[0].get_text().count("\n") + 1 if footer else 0
    bottom = (0.02 * 72 + lines * 1.2 * FOOTER_PT + 4) / (fig.get_figheight() * 72) if footer else 0.0
    fig.tight_layout(rect=(0, bottom, 1, 1))


def _legend_once(ax, style: Optional[dict] = None, **kw) -> None:
    """A legend with one entry per label (several runs share an RM), in RM-size order given `style`."""
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    if style:
        rank = {label: i for i, (_, label) in enumerate(style.values())}
        unique = dict(sorted(unique.items(), key=lambda kv: (rank.get(kv[0].split(":")[0], len(rank)), kv[0])))
    if unique:
        ax.legend(unique.values(), unique.keys(), **kw)


def seed_bands(curves: pd.DataFrame, label_of: Dict[str, str], target: str) -> pd.DataFrame:
    """Mean and 95% t-interval over seeds of `target` (a column of overoptimization_curves) per
    setting (label_of: run_id -> legend label; runs that differ only in seeds share one) and per x
    (n for best-of-n, the iteration of a PPO evaluation), with the mean sqrt KL there. Columns:
    label, x, sqrt_kl, mean, low, high, n_seeds (low/high NaN with one seed)."""
    rows = []
    c = curves.assign(label=curves["run_id"].map(label_of))
    for (label, x), g in c.groupby(["label", "x"], sort=True):
        mean, low, high = mean_interval(g[target].to_numpy(float))
        rows.append({"label": label, "x": x, "sqrt_kl": float(g["sqrt_kl"].mean()), "mean": mean, "low": low,
                     "high": high, "n_seeds": int(g["run_id"].nunique())})
    return pd.DataFrame(rows, columns=["label", "x", "sqrt_kl", "mean", "low", "high", "n_seeds"])


SWEEP_MARKERS = "os^Dv"  # one per sweep where a figure holds several


def _labels_per_sweep(curves: pd.DataFrame, by_run: Dict[str, tuple]) -> Tuple[Dict[str, str], Dict[str, tuple], Dict[str, str]]:
    """(run_id -> legend label, label -> colour, label -> marker) from run_styles' run_id -> (colour,
    label). Never pools sweeps: one setting run by two sweeps (the same job, or its seeds, twice) is two
    lines, not twice the seeds; with several sweeps the sweep follows the setting (after ":", so the
    legend keeps its order) and each sweep has its own marker (a setting's colour is the same in each)."""
    label_of = {r: v[1] for r, v in by_run.items()}
    groups = curves.drop_duplicates("run_id").set_index("run_id")["group"]
    marker_of_group = {g: SWEEP_MARKERS[i % len(SWEEP_MARKERS)] for i, g in enumerate(sorted(groups.unique()))}
    if groups.nunique() > 1:
        label_of = {r: f"{label}: {groups[r]}" for r, label in label_of.items()}
    return (label_of, {label_of[r]: v[0] for r, v in by_run.items()},
            {label_of[r]: marker_of_group[groups[r]] for r in by_run})


def fig_overoptimization(df: pd.DataFrame, source: str, kind: str):
    """(a) Gao et al. Fig. 1: gold (left) and proxy (right) reward gain vs sqrt(KL), per setting (RM
    size, ...): the mean over seeds at each n / evaluation with its 95% band (seed_bands), the seeds'
    points faint, and the Gao form (BoN form for best-of-n, RL form for PPO) fitted to all seeds'
    points dashed. A setting with one seed has no seed band and the footer says so; a best-of-n one
    then draws the 95% interval over its prompts that the run logged (bon/gold_gain_low, _high), hatched."""
    curves = overoptimization_curves(df, kind)
    if curves.empty:
        return None
    form = FORM_OF[kind]
    by_run, style = run_styles(df, curves["run_id"].unique(), kind)
    label_of, colour_of, marker_of = _labels_per_sweep(curves, by_run)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    no_peak, one_seed, prompt_level = [], [], []  # β <= 0: no peak; settings without a seed band; of those, with prompt intervals
    for ax, target in zip(axes, ("gold_gain", "proxy_gain")):
        bands = seed_bands(curves, label_of, target)
        for label, b in bands.groupby("label", sort=False):
            colour = colour_of[label]
            c = curves[curves["run_id"].map(label_of) == label]
            batch = kind == "ppo" and c.get("points", pd.Series(["batch"])).iloc[0] != "eval"
            ax.plot(c["sqrt_kl"], c[target], ".", ms=2.5, alpha=0.35, color=colour)  # every seed's points
            ax.plot(b["sqrt_kl"], b["mean"], "-" if batch else f"{marker_of[label]}-", ms=4, lw=1.0, color=colour,
                    label=label)
            if b["n_seeds"].max() >= 2:
                ax.fill_between(b["sqrt_kl"], b["low"], b["high"], color=colour, alpha=0.18, lw=0)
            elif target == "gold_gain":
                one_seed.append(label)
                if c["gold_gain_low"].notna().any():  # one best-of-n seed: its prompt-level interval
                    ax.fill_between(c["sqrt_kl"], c["gold_gain_low"], c["gold_gain_high"], color=colour, alpha=0.12,
                                    hatch="///", lw=0, gid="prompt_interval")
                    prompt_level.append(label)
            fit = _fit(c, target, form)  # all seeds' points together
            grid = np.linspace(0.0, max(np.nanmax(c["sqrt_kl"]), 1e-3), 200)
            if fit is not None and target == "gold_gain" and not turns_down(fit[1]):
                no_peak.append(f"{label} ({', '.join(sorted(map(str, c['run_name'].unique())))})")  # not drawn
            elif fit is not None:
                ax.plot(grid, FORM_FN[form](grid, *fit), FIT_LINESTYLE, lw=1.2, color=colour)
    method = "best-of-n" if kind == "bon" else "PPO"
    for ax, target in zip(axes, ("gold", "proxy")):
        ax.axhline(0, color="0.5", lw=0.6)
        ax.set_xlabel("sqrt(KL(π ‖ π_init))  [nats^½]")
        ax.set_ylabel(f"{target} reward gain")
        ax.set_title(f"{method}: {target} reward")
    _legend_once(axes[0], style, title="proxy RM" if len(style) == len(set(curves["rm"])) else None)
    equation = "d(α − βd)" if form == "bon" else "d(α − β log d)"
    note = (f"lines: mean over seeds, band: its 95% t-interval, faint dots: each seed; dashed: least-squares fit "
            f"R(d) = {equation} (Gao et al. 2022) to all seeds")
    if one_seed:
        note += f"; ONE seed (no band): {', '.join(one_seed)}"
    if prompt_level:
        note += f"; hatched: 95% interval over prompts (bootstrap, as logged; one seed): {', '.join(prompt_level)}"
    if kind == "ppo":
        shown = sorted(set(curves["points"]))
        note += "; points: " + " and ".join({"eval": "held-out evaluations",
                                             "batch": "training-batch means"}[p] for p in shown)
    if no_peak:
        note += (f"; gold fit not drawn where β ≤ 0 (it never turns down: no peak, the form does not hold): "
                 f"{', '.join(no_peak)}")
    _footer(fig, source, curves["run_id"].nunique(), note)
    return fig


def fig_coefficients(df: pd.DataFrame, source: str):
    """(b) Gao et al. Fig. 3: fitted gold-reward α and β vs RM parameters (log x), per method,
    with the log-linear fit coefficient ≈ slope·ln N + intercept."""
    coef = fitted_coefficients(df)
    scaling = coefficient_scaling(coef)
    if scaling.empty:
        return None
    fitted = scaling[["group", "kind"]].drop_duplicates()
    coef = coef.dropna(subset=["n_params"]).merge(fitted, on=["group", "kind"])  # the runs behind a fit
    several = fitted["group"].nunique() > 1
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, name in zip(axes, ("alpha", "beta")):
        for i, ((group, kind), c) in enumerate(coef.groupby(["group", "kind"], sort=True)):
            fit = scaling[(scaling["group"] == group) & (scaling["kind"] == kind) & (scaling["coefficient"] == name)]
            method = ("best-of-n" if kind == "bon" else "PPO") + (f" ({group})" if several else "")
            colour, marker = f"C{i % 8}", "o" if kind == "bon" else "s"
            ax.plot(c["n_params"], c[name], marker, color=colour, label=method)
            slope, intercept = fit["slope"].iloc[0], fit["intercept"].iloc[0]
            n = np.geomspace(c["n_params"].min(), c["n_params"].max(), 50)
            low, high = fit["slope_low"].iloc[0], fit["slope_high"].iloc[0]
            interval = f", slope 95% [{low:+.3f}, {high:+.3f}] over seeds" if np.isfinite(low) else ", one seed per size"
            ax.plot(n, slope * np.log(n) + intercept, FIT_LINESTYLE, lw=1, color=colour,
                    label=f"{method} fit: {slope:+.3f}·ln N {intercept:+.3f}{interval}")
        ax.set_xscale("log")
        ax.set_xlabel("proxy RM parameters N")
        ax.set_ylabel(f"{name} (gold)")
        ax.set_title(f"fitted {name} vs RM size")
        _legend_once(ax)
    _footer(fig, source, coef["run_id"].nunique(), "one point per run's gold-gain fit; dashed: log-linear fit")
    return fig


RM_ACCURACY, RM_LOSS, RM_BUDGET = "summary.rm/val_accuracy", "summary.rm/val_loss", "config.data.comparison_budget"
RM_COMPARISONS = "summary.rm/train_comparisons"  # what the RM job logged it trained on (stages/rm.py)
RM_FIT_COLUMNS = ["against", "group", "metric", "n_points", "a", "b", "c", "floor"]
# The x of each panel of figure (c), and the config columns that x stands for (not grouped by).
RM_AXES = {"comparisons": ("comparisons", (RM_BUDGET,)), "rm_params": ("n_params", ("config.rm.",))}


def rm_runs(df: pd.DataFrame) -> pd.DataFrame:
    """One row per trained RM (a job's summary, one per RM artifact): the config and summary
    columns, plus
      comparisons  the comparisons it trained on: rm/train_comparisons as the job that built the
                   artifact logged it; without that record (older runs), the comparison budget for
                   synthetic data, which generates exactly the budget; otherwise NaN (not drawn);
      n_params     config rm.n_params where set (a nominal size), else the RM's counted rm/n_params.
    RM jobs only where there are any; the job that built an artifact is preferred to one that reused it.
    """
    if RM_ACCURACY not in df:
        return pd.DataFrame()
    runs = per_run(df)
    trained = runs[RM_COMPARISONS].notna() if RM_COMPARISONS in runs else pd.Series(False, index=runs.index)
    runs = with_rm_facts(runs).assign(_trained=trained).dropna(subset=[RM_ACCURACY])
    if (runs["stage"] == "rm").any():
        runs = runs[runs["stage"] == "rm"]
    if "summary.rm/artifact" in runs:
        runs = runs.sort_values("_trained", ascending=False, kind="stable").drop_duplicates("summary.rm/artifact")
        runs = runs.sort_values("run_id", kind="stable")
    if runs.empty or "config.rm.name" not in runs:
        return pd.DataFrame()
    runs = runs.copy()  # consolidated: columns added to a frame of many column blocks warn (PerformanceWarning)
    for col in (RM_BUDGET, RM_LOSS, RM_COMPARISONS):
        if col not in runs:
            runs[col] = np.nan
    task = runs["config.task.name"] if "config.task.name" in runs else pd.Series("synthetic", index=runs.index)
    synthetic = task.fillna("synthetic").eq("synthetic")
    budget = pd.to_numeric(runs[RM_BUDGET], errors="coerce").where(synthetic)
    own = runs["summary.rm/n_params"] if "summary.rm/n_params" in runs else np.nan
    nominal = runs["config.rm.n_params"] if "config.rm.n_params" in runs else np.nan
    by_name = runs["config.rm.name"].astype(str).map(rm_sizes(df))
    n_params = pd.Series(nominal, index=runs.index).fillna(pd.Series(own, index=runs.index)).fillna(by_name)
    return runs.drop(columns="_trained").assign(
        comparisons=pd.to_numeric(runs[RM_COMPARISONS], errors="coerce").fillna(budget),
        n_params=pd.to_numeric(n_params, errors="coerce"))


def rm_grouping(runs: pd.DataFrame, against: str) -> List[str]:
    """The columns that tell figure (c)'s lines apart on the panel `against` ("comparisons" or
    "rm_params"): every RM-recipe setting (runs.RM_RECIPE) that varies across the drawn RMs, less
    seeds (averaged over, with an interval) and less what the panel's x stands for. The RM name
    comes first (it labels and colours by size); on the size panel the budget does."""
    x_cols = RM_AXES[against][1]
    recipe = [c for c in runs.columns if c.startswith(RM_RECIPE) or c in RM_RECIPE_KEYS]
    varied = [c for c in varying_config(runs[recipe], seeds=False) if not c.startswith(x_cols) and c not in x_cols]
    first = "config.rm.name" if against == "comparisons" else RM_BUDGET
    return [first] + [c for c in varied if c != first] if first in runs else varied


# Short names of settings often varied, for legends.
SHORT_KEYS = {"config.data.responses_per_prompt": "K", "config.rm_train.loss": "loss",
              "config.data.comparison_budget": "budget", "config.rm_train.epochs": "epochs",
              "config.ppo.samples_per_prompt": "samples_per_prompt", "config.bon.n_max": "n_max"}


def _group_label(keys: tuple, columns: List[str], runs: pd.DataFrame, sizes: Dict[str, float]) -> str:
    """'tiny-s (25.5k), rm_train.loss=bt' for one group of figure (c): the RM name with its size,
    other settings as key=value (model spec fields that the name determines left out)."""
    parts = []
    shown = named_once(runs, columns)
    for col, value in zip(columns, keys):
        if col not in shown:
            continue
        if col == "config.rm.name":
            parts.append(f"{value} ({_human(sizes[value])})" if value in sizes else str(value))
        else:
            name = SHORT_KEYS.get(col, col.removeprefix("config."))
            parts.append(f"{name}={float(value):g}" if _is_number(value) else f"{name}={value}")
    return ", ".join(parts) or "all RMs"


def _is_number(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def rm_points(runs: pd.DataFrame, against: str) -> pd.DataFrame:
    """Figure (c)'s points on one panel: per (group, x) the mean held-out accuracy over the runs
    there (seeds) with its 95% t-interval (curves.mean_interval), and the mean loss. Columns: group
    (label), x, n_runs, accuracy, low, high, loss, accuracies (each seed's), plus the grouping
    columns. RMs without a known x are left out."""
    x_col = RM_AXES[against][0]
    columns = rm_grouping(runs, against)
    runs = runs.dropna(subset=[x_col])
    if runs.empty:
        return pd.DataFrame(columns=["group", "x", "n_runs", "accuracy", "low", "high", "loss"])
    sizes = dict(zip(runs["config.rm.name"].astype(str), runs["n_params"]))
    keys = as_text(runs[columns]) if columns else pd.DataFrame(index=runs.index)
    rows = []
    for key, r in (runs.groupby([keys[c] for c in columns], sort=False) if columns else [((), runs)]):
        key = key if isinstance(key, tuple) else (key,)
        label = _group_label(key, columns, runs, sizes)
        for x, at in r.groupby(x_col, sort=True):
            mean, low, high = mean_interval(at[RM_ACCURACY].to_numpy(float))
            rows.append({"group": label, "x": float(x), "n_runs": len(at), "accuracy": mean, "low": low, "high": high,
                         "loss": float(at[RM_LOSS].astype(float).mean()),
                         "accuracies": tuple(at[RM_ACCURACY].astype(float)), **dict(zip(columns, key)),
                         "_size": float(r["n_params"].min()), "_key": key})
    points = pd.DataFrame(rows)
    # Lines in RM-size order, then by their settings (numbers as numbers): the colour order.
    first = points.drop_duplicates("group")
    order = sorted(first.to_dict("records"), key=lambda p: (
        p["_size"] if np.isfinite(p["_size"]) else math.inf,
        tuple((0, float(v), "") if _is_number(v) else (1, 0.0, str(v)) for v in p["_key"])))
    rank = {p["group"]: i for i, p in enumerate(order)}
    points = points.assign(_rank=points["group"].map(rank)).sort_values(["_rank", "x"], kind="stable")
    return points.drop(columns=["_rank", "_size", "_key"]).reset_index(drop=True)


def rm_scaling_fits(df: pd.DataFrame) -> pd.DataFrame:
    """Power laws of RM held-out error (1 − accuracy) and loss against training comparisons and
    against RM parameters, each y ≈ a·x^(−b) (+ c floor where AICc prefers it,
    curves.fit_power_law_select), one per line of figure (c) (group: its label), fitted to the mean
    over seeds at each x; lines with fewer than 3 distinct x are not fitted. Columns: RM_FIT_COLUMNS.
    """
    runs = rm_runs(df)
    rows = []
    if runs.empty:
        return pd.DataFrame(columns=RM_FIT_COLUMNS)
    for against in RM_AXES:
        points = rm_points(runs, against)
        for group, p in (points.groupby("group", sort=False) if not points.empty else []):
            for metric, ys in (("error", 1.0 - p["accuracy"]), ("loss", p["loss"])):
                x, y = p["x"].to_numpy(float), ys.to_numpy(float)
                if len(x) < 3 or not np.all(np.isfinite(y)) or (y <= 0).any():
                    continue
                try:
                    with warnings.catch_warnings():  # the covariance is not used: an exact fit may lack one
                        warnings.simplefilter("ignore", OptimizeWarning)
                        fit, floor = fit_power_law_select(x, y)
                except (ValueError, RuntimeError):  # curve_fit failed to converge
                    continue
                rows.append({"against": against, "group": group, "metric": metric, "n_points": len(x),
                             "a": fit.a, "b": fit.b, "c": fit.c, "floor": floor})
    return pd.DataFrame(rows, columns=RM_FIT_COLUMNS)


def error_fit_band(fits: pd.DataFrame, against: str, p: pd.DataFrame, grid: np.ndarray, n_boot: int = 200,
                   seed: int = 0) -> Optional[tuple]:
    """The fitted error law of one line of figure (c) as accuracy on `grid`, with its 95% band by a
    bootstrap over seeds: each point's seeds (p["accuracies"]) resampled with replacement, the
    mean's error refitted with the same form (floor or not), n_boot times. (fit, low, high) arrays
    of shape grid.shape, or None where there is no fit or no interval (a point with one seed)."""
    row = fits[(fits["against"] == against) & (fits["group"] == p["group"].iloc[0]) & (fits["metric"] == "error")]
    if row.empty or p["n_runs"].min() < 2:
        return None
    law = PowerLaw(*(float(v) for v in row.iloc[0][["a", "b", "c"]]))
    floor, x = bool(row.iloc[0]["floor"]), p["x"].to_numpy(float)
    rng = np.random.default_rng(seed)
    curves = []
    for _ in range(n_boot):
        err = np.array([1.0 - rng.choice(v, size=len(v), replace=True).mean() for v in p["accuracies"]])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                curves.append(1.0 - fit_power_law(x, err, floor=floor).predict(grid))
        except (ValueError, RuntimeError):  # a resample the law cannot fit (y <= 0, no convergence)
            continue
    if len(curves) < n_boot // 2:
        return None
    low, high = np.quantile(np.array(curves), [0.025, 0.975], axis=0)
    return 1.0 - law.predict(grid), low, high


def _draw_error_fit(ax, fits: pd.DataFrame, against: str, p: pd.DataFrame, colour) -> bool:
    """The fitted error law of one line drawn as accuracy = 1 − error over its x range, with its
    seed-bootstrap band; only with the band (a fit without an interval is not drawn). Drawn or not."""
    x = p["x"].to_numpy(float)
    grid = np.geomspace(x.min(), x.max(), 50)
    band = error_fit_band(fits, against, p, grid)
    if band is None:
        return False
    fit, low, high = band
    ax.fill_between(grid, low, high, color=colour, alpha=0.15, lw=0)
    ax.plot(grid, fit, linestyle=FIT_LINESTYLE, color=colour, lw=1.0)
    return True


def fig_rm_accuracy(df: pd.DataFrame, source: str):
    """(c) RM held-out pair accuracy vs the comparisons each RM trained on, and vs RM size: one line
    per setting that varies across the RMs (RM, loss, K, budget, ...; rm_grouping), points the mean
    over seeds with a 95% interval, the fitted power laws of the error (rm_scaling_fits) dashed.
    A panel with no points is left out."""
    runs = rm_runs(df)
    if runs.empty:
        return None
    fits = rm_scaling_fits(df)
    panels = [(a, rm_points(runs, a)) for a in RM_AXES]
    panels = [(a, p) for a, p in panels if not p.empty]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    drawn_fits = undrawn_fits = 0
    for ax, (against, points) in zip(axes[0], panels):
        groups = list(dict.fromkeys(points["group"]))
        colours = plt.get_cmap(SIZE_CMAP)(np.linspace(0.05, 0.85, max(len(groups), 1)))
        for colour, group in zip(colours, groups):
            p = points[points["group"] == group]
            # The t-interval of 2-3 seeds can pass 0 or 1; an accuracy cannot.
            low, high = p["low"].clip(0.0, 1.0), p["high"].clip(0.0, 1.0)
            spread = np.vstack([p["accuracy"] - low, high - p["accuracy"]])
            ax.errorbar(p["x"], p["accuracy"], yerr=np.where(np.isfinite(spread), spread, 0.0), fmt="o-", lw=0.8,
                        capsize=2.5, color=colour, label=group)
            if _draw_error_fit(ax, fits, against, p, colour):
                drawn_fits += 1
            elif ((fits["against"] == against) & (fits["group"] == group) & (fits["metric"] == "error")).any():
                undrawn_fits += 1
        ax.set_xlabel("comparisons the RM trained on (rm/train_comparisons)" if against == "comparisons"
                      else "proxy RM parameters N")
        ax.set_title("RM accuracy vs comparisons" if against == "comparisons" else "RM accuracy vs RM size")
        ax.set_ylabel("held-out pair accuracy")
        ax.axhline(0.5, color="0.5", lw=0.6)
        ax.set_xscale("log")
        ax.legend(fontsize=6.5)
    seeds = pd.concat([p["n_runs"] for _, p in panels])
    note = (f"points: mean over seeds, bars: 95% t-interval, clipped to [0, 1] ({seeds.min()}–{seeds.max()} seeds per point)"
            if seeds.max() > 1 else "one seed per point: no interval")
    unknown = int(runs["comparisons"].isna().sum())
    if unknown:
        note += f"; {unknown} RM(s) without a recorded comparison count left off the left panel"
    if drawn_fits:
        note += "; dashed: power law of the error (+ floor where AICc prefers it), band: its 95% seed bootstrap"
    if undrawn_fits:
        note += f"; {undrawn_fits} power law(s) not drawn: no interval (a point with one seed; rm_scaling_fits has them)"
    _footer(fig, source, len(runs), note)
    return fig


def fig_samples_per_prompt(df: pd.DataFrame, source: str):
    """(d) Gold reward vs samples per prompt: best-of-n gold vs n (up to bon.n_max), and PPO
    final / peak gold vs ppo.samples_per_prompt (rollouts per prompt per iteration, >= 2 values)."""
    bon = overoptimization_curves(df, "bon")
    spp = "config.ppo.samples_per_prompt"
    ppo = per_run(df)
    ppo = ppo[ppo["stage"] == "ppo"] if "stage" in ppo else ppo.iloc[0:0]
    final = "summary.ppo/final_gold" if "summary.ppo/final_gold" in ppo else "summary.ppo/gold"
    ppo = ppo.dropna(subset=[final, spp]) if final in ppo and spp in ppo else ppo.iloc[0:0]
    ppo = ppo.assign(sweep=_sweep_group(ppo))
    varied = ppo.groupby("sweep")[spp].nunique()  # only the sweeps over rollouts per prompt
    ppo = ppo[ppo["sweep"].isin(varied[varied >= 2].index)]
    has_ppo = not ppo.empty
    if bon.empty and not has_ppo:
        return None
    panels = (["bon"] if not bon.empty else []) + (["ppo"] if has_ppo else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.6), squeeze=False)
    axes = dict(zip(panels, axes[0]))
    n_runs = 0
    if "bon" in axes:
        by_run, style = run_styles(df, bon["run_id"].unique(), "bon")
        for run_id, c in bon.groupby("run_id", sort=True):
            colour, label = by_run[run_id]
            axes["bon"].plot(c["x"], c["gold"], "o-", color=colour, label=label)
        axes["bon"].set_xscale("log", base=2)
        axes["bon"].set_xlabel("best-of-n: samples per prompt n (≤ bon.n_max)")
        axes["bon"].set_ylabel("gold reward")
        axes["bon"].set_title("best-of-n gold vs n")
        _legend_once(axes["bon"], style, title="proxy RM" if len(style) == len(set(bon["rm"])) else None)
        n_runs += bon["run_id"].nunique()
    if "ppo" in axes:
        ax = axes["ppo"]
        style = _size_order(df, ppo["config.rm.name"].astype(str))
        peak = "summary.ppo/peak_gold" if "summary.ppo/peak_gold" in ppo else None
        several = ppo["sweep"].nunique() > 1
        for (sweep, rm), r in ppo.groupby(["sweep", "config.rm.name"], sort=True):
            colour, label = style[str(rm)]
            label = f"{sweep}, {label}" if several else label
            mean = r.groupby(spp, sort=True)[[final] + ([peak] if peak else [])].mean()  # over seeds
            ax.plot(mean.index, mean[final], "o-", color=colour, label=f"{label}: final")
            if peak:
                ax.plot(mean.index, mean[peak], "s:", color=colour, alpha=0.7, label=f"{label}: peak")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("PPO: rollouts per prompt per iteration")
        ax.set_ylabel("gold reward")
        ax.set_title("PPO gold vs samples per prompt")
        _legend_once(ax)
        n_runs += len(ppo)
    _footer(fig, source, n_runs)
    return fig


def fig_diversity(df: pd.DataFrame, source: str):
    """(e') Prompt vs response diversity across comparison budgets: heatmap of gold reward over rows
    data.comparison_budget and columns K (data.responses_per_prompt), each cell labelled with its
    prompts = budget / C(K,2); one panel per (sweep, RM) that has >= 2 budgets and >= 2 values of K.
    At ONE budget each K has its own prompt count, so a (prompts, K) grid is a diagonal: the lines
    figure `diversity` shows that case, and this one is skipped, saying so (a str is returned)."""
    k, b = "config.data.responses_per_prompt", "config.data.comparison_budget"
    runs = per_run(df)
    value = _run_gold(runs)
    if value is None or k not in runs or b not in runs:
        return None
    runs = runs.dropna(subset=[value, k, b])
    rm = runs["config.rm.name"].astype(str) if "config.rm.name" in runs else pd.Series("", index=runs.index)
    runs = runs.assign(rm=rm, sweep=_sweep_group(runs))
    over_k = [(key, g) for key, g in runs.groupby(["sweep", "rm"], sort=True) if g[k].nunique() >= 2]
    panels = [(key, g) for key, g in over_k if g[b].nunique() >= 2]
    if not panels:
        return (f"one comparison budget per sweep over K ({', '.join(sorted({f'{x:g}' for _, g in over_k for x in g[b]}))}): "
                "a heatmap needs >= 2 budgets; see the `diversity` lines figure") if over_k else None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    for ax, ((sweep, rm_name), g) in zip(axes[0], panels):
        grid = g.pivot_table(index=b, columns=k, values=value, aggfunc="mean").sort_index(ascending=False).sort_index(axis=1)
        im = ax.imshow(grid.to_numpy(float), aspect="auto")
        ax.set_xticks(range(grid.shape[1]), [f"{c:g}" for c in grid.columns])
        ax.set_yticks(range(grid.shape[0]), [f"{i:g}" for i in grid.index])
        middle = np.nanmean([np.nanmin(grid.to_numpy(float)), np.nanmax(grid.to_numpy(float))])
        for i, budget in enumerate(grid.index):
            for j, kk in enumerate(grid.columns):
                v = grid.iloc[i, j]
                if np.isfinite(v):  # dark text on the bright end of viridis
                    prompts = int(budget) // pairs_per_prompt(int(kk))
                    ax.text(j, i, f"{v:.3f}\n{prompts} prompts", ha="center", va="center", fontsize=6.5,
                            color="black" if v > middle else "white")
        ax.set_xlabel("responses per prompt K")
        ax.set_ylabel("comparison budget")
        ax.set_title(", ".join(x for x in (sweep, f"RM {rm_name}" if rm_name else "") if x))
        ax.grid(False)
        fig.colorbar(im, ax=ax, label=value.replace("summary.", ""))
    _footer(fig, source, sum(len(g) for _, g in panels),
            "cell: mean over runs (seeds) and its prompts = budget / C(K,2); blank: not run")
    return fig


def _mean_band(ax, x, values_by_x: Dict[float, np.ndarray], colour, label: str, marker: str = "o-") -> bool:
    """Plot the mean over seeds at each x with its 95% t-interval as error bars; True if any x has >= 2 seeds."""
    xs = sorted(values_by_x)
    stats = [mean_interval(values_by_x[v]) for v in xs]
    mean = np.array([m for m, _, _ in stats])
    low = np.array([lo for _, lo, _ in stats])
    high = np.array([hi for _, _, hi in stats])
    banded = np.isfinite(low)
    ax.errorbar(xs, mean, yerr=[np.where(banded, mean - low, 0), np.where(banded, high - mean, 0)], fmt=marker,
                color=colour, capsize=3, ms=4, label=label)
    return bool(banded.any())


def fig_samples_per_prompt_matched(df: pd.DataFrame, source: str):
    """(d') PPO samples per prompt compared fairly (Hou et al. 2024): left, held-out gold gain at
    matched KL (each run's evaluations interpolated at the largest sqrt KL that every run of its sweep
    reached) vs ppo.samples_per_prompt; middle, held-out gold gain vs total rollouts (iterations x
    prompts per step x samples per prompt), one line per samples-per-prompt: at equal rollouts
    rather than equal prompts; right (where the runs logged ppo/flops), the same vs cumulative
    training FLOPs (training_flops: generation, scoring and updates of the training iterations,
    compute.py; not the held-out evaluations). Mean over seeds with 95% t-intervals."""
    spp, pps = "config.ppo.samples_per_prompt", "config.ppo.prompts_per_step"
    curves = overoptimization_curves(df, "ppo")
    runs = per_run(df)
    if curves.empty or spp not in runs or pps not in runs:
        return None
    runs = runs[runs["run_id"].isin(curves["run_id"])].assign(sweep=_sweep_group(runs))
    varied = runs.groupby("sweep")[spp].nunique()
    runs = runs[runs["sweep"].isin(varied[varied >= 2].index)]
    if runs.empty:
        return None
    curves = curves[curves["run_id"].isin(runs["run_id"])].merge(runs[["run_id", "sweep", spp, pps]], on="run_id")
    curves = curves.assign(flops=training_flops(df, curves))
    with_flops = bool(curves["flops"].notna().all())
    fig, axes = plt.subplots(1, 3 if with_flops else 2, figsize=(15 if with_flops else 10, 4))
    colours = plt.get_cmap(SIZE_CMAP)(np.linspace(0.05, 0.85, max(curves[spp].nunique(), 1)))
    colour_of = dict(zip(sorted(curves[spp].unique()), colours))
    one_seed, notes = False, []
    for sweep, c in curves.groupby("sweep", sort=True):
        d_ref = c.groupby("run_id")["sqrt_kl"].max().min()  # the KL every run reached
        at = {}
        for run_id, r in c.groupby("run_id", sort=True):
            r = r.sort_values("sqrt_kl")
            at.setdefault(float(r[spp].iloc[0]), []).append(float(np.interp(d_ref, r["sqrt_kl"], r["gold_gain"])))
        banded = _mean_band(axes[0], None, {k: np.array(v) for k, v in at.items()}, "0.2", str(sweep))
        notes.append(f"{sweep}: matched at sqrt KL = {d_ref:.3g}")
        one_seed |= not banded
        for n, g in c.groupby(spp, sort=True):
            rollouts = g["x"] * g[pps] * g[spp]
            by_x = {float(x): v.to_numpy(float) for x, v in g.groupby(rollouts)["gold_gain"]}
            one_seed |= not _mean_band(axes[1], None, by_x, colour_of[n], f"{n:g} per prompt", marker="o-")
            if with_flops:  # seeds differ a little in tokens: each iteration at its mean FLOPs over seeds
                by_flops = {float(v["flops"].mean()): v["gold_gain"].to_numpy(float) for x, v in g.groupby("x")
                            if x > 0}  # iteration 0 (no compute yet) has no place on a log axis
                one_seed |= not _mean_band(axes[2], None, by_flops, colour_of[n], f"{n:g} per prompt", marker="o-")
    _label_spp_axes(axes)
    note = "; ".join(notes) + "; mean over seeds, bars: 95% t-interval" + ("; ONE seed at some points (no bar)"
                                                                            if one_seed else "")
    _footer(fig, source, curves["run_id"].nunique(), note)
    return fig


def _label_spp_axes(axes) -> None:
    """Scales, labels and legend of fig_samples_per_prompt_matched's panels (KL, rollouts[, FLOPs])."""
    axes[0].set_xscale("log", base=2)
    axes[0].set_xlabel("PPO rollouts per prompt per iteration")
    axes[0].set_ylabel("held-out gold gain at matched KL")
    axes[0].set_title("at matched KL")
    axes[1].set_xlabel("total rollouts (iterations × prompts × samples per prompt)")
    axes[1].set_ylabel("held-out gold gain")
    axes[1].set_title("at matched rollouts")
    if len(axes) > 2:
        axes[2].set_xscale("log")
        axes[2].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels overlap at 2-10x spans
        axes[2].set_xlabel("cumulative training FLOPs (ppo/flops; evaluations not counted)")
        axes[2].set_ylabel("held-out gold gain")
        axes[2].set_title("at matched compute")
    for ax in axes:
        ax.axhline(0, color="0.5", lw=0.6)
    _legend_once(axes[1], title="samples per prompt")


def training_flops(df: pd.DataFrame, curves: pd.DataFrame) -> np.ndarray:
    """Cumulative training FLOPs (ppo/flops as each iteration logged it) at each point of the PPO
    `curves` (overoptimization_curves): after x iterations (x = eval/step), interpolated between
    logged iterations (log_every), 0 at x = 0; NaN for a run that logged no ppo/flops."""
    if "ppo/flops" not in df or "ppo/step" not in df:
        return np.full(len(curves), np.nan)
    logged = df.dropna(subset=["ppo/step", "ppo/flops"]).drop_duplicates(["run_id", "ppo/step"], keep="last")
    out = np.full(len(curves), np.nan)
    for run_id, r in logged.groupby("run_id"):
        r = r.sort_values("ppo/step")
        at = curves["run_id"].to_numpy() == run_id
        done = np.concatenate([[0.0], r["ppo/step"].to_numpy(float) + 1])  # iterations completed
        out[at] = np.interp(curves.loc[at, "x"].to_numpy(float), done, np.concatenate([[0.0], r["ppo/flops"].to_numpy(float)]))
    return out


def rm_steps(df: pd.DataFrame) -> Dict[str, int]:
    """run_id -> the RM optimiser steps its RM job logged (the last rm/step), for the RM jobs that trained."""
    if "rm/step" not in df:
        return {}
    return df.dropna(subset=["rm/step"]).groupby("run_id")["rm/step"].max().astype(int).to_dict()


def fig_diversity_lines(df: pd.DataFrame, source: str):
    """(e) Prompt vs response diversity at a fixed comparison budget: downstream gold (best-of-n's best
    gold) and the RM's held-out accuracy vs K = responses per prompt, one line per budget, each point
    labelled with its prompts (= budget / C(K,2)); mean over seeds with 95% t-intervals. The footer
    states the RM optimisation: the optimiser steps each K's RM took (rm/step as logged), since a
    fixed budget gives fewer, larger K-wise batches at large K."""
    k, b = "config.data.responses_per_prompt", "config.data.comparison_budget"
    runs = with_rm_facts(per_run(df))
    if k not in runs or b not in runs:
        return None
    runs = runs.dropna(subset=[k, b]).assign(sweep=_sweep_group(runs))
    varied = runs.groupby(["sweep", b])[k].nunique()
    keep = varied[varied >= 2].index
    runs = runs[[key in set(keep) for key in zip(runs["sweep"], runs[b])]]
    gold = "summary.bon/best_gold"
    panels = [(col, title) for col, title in ((gold, "best-of-n gold (best n)"),
                                               ("summary.rm/val_accuracy", "RM held-out accuracy"))
              if col in runs and runs.loc[runs["stage"] == ("bon" if col == gold else "rm"), col].notna().any()]
    if runs.empty or not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False)
    budgets = sorted(runs.groupby(["sweep", b]).groups)
    colours = plt.get_cmap("tab10").colors
    one_seed = False
    for ax, (col, title) in zip(axes[0], panels):
        stage = "bon" if col == gold else "rm"
        for i, (sweep, budget) in enumerate(budgets):
            r = runs[(runs["sweep"] == sweep) & (runs[b] == budget) & (runs["stage"] == stage)].dropna(subset=[col])
            if r.empty:
                continue
            by_k = {float(kk): g[col].to_numpy(float) for kk, g in r.groupby(k)}
            label = f"{budget:g} comparisons" + (f" ({sweep})" if len({s for s, _ in budgets}) > 1 else "")
            one_seed |= not _mean_band(ax, None, by_k, colours[i % 10], label)
            for kk, v in by_k.items():
                prompts = int(budget) // pairs_per_prompt(int(kk))
                ax.annotate(f"{prompts} prompts", (kk, float(np.mean(v))), textcoords="offset points", xytext=(4, 4),
                            fontsize=6.5, color=colours[i % 10])
        ax.set_xscale("log", base=2)
        ax.set_xlabel("responses per prompt K (prompts = budget / C(K,2))")
        ax.set_ylabel(title)
        ax.set_title(title)
    _legend_once(axes[0][0], title="fixed budget")
    note = (f"{rm_optimisation(df, runs)}; mean over seeds, bars: 95% t-interval"
            + ("; ONE seed at some points (no bar)" if one_seed else ""))
    _footer(fig, source, len(runs), note)
    return fig


def rm_optimisation(df: pd.DataFrame, runs: pd.DataFrame) -> str:
    """How the RMs of `runs` (per_run rows over K) were optimised, for a footer: trained to convergence
    (rm_train.early_stop_patience > 0: early stopping on the validation loss where the RMs logged
    rm/best_selection_loss, else on the held-out loss; the step of the kept weights per K) or for fixed
    epochs (the optimiser steps per K, which a fixed budget makes unequal)."""
    k, patience = "config.data.responses_per_prompt", "config.rm_train.early_stop_patience"
    steps = rm_steps(df)
    rms = runs[(runs["stage"] == "rm") & runs["run_id"].isin(steps)]
    if rms.empty:
        return "RM optimiser steps not logged in these runs (RMs reused)"
    stopped = patience in rms and (rms[patience].fillna(0) > 0).all()
    best = "summary.rm/best_step"
    kept = {i: int(b) for i, b in zip(rms["run_id"], rms[best])} if stopped and best in rms else steps
    by_k = rms.groupby(k)["run_id"].agg(lambda ids: sorted({kept[i] for i in ids}))
    per_k = ", ".join(f"K={kk:g}: {'/'.join(map(str, v))}" for kk, v in by_k.items())
    if stopped:
        first = rms.iloc[0]
        rule = (f"patience {int(first[patience])} evaluations x {int(first['config.rm_train.eval_every'])} steps, "
                f"min {int(first['config.rm_train.early_stop_min_steps'])} steps")
        chosen = "summary.rm/best_selection_loss"  # logged only where a validation split chose the weights
        watched = ("validation loss" if chosen in rms and rms[chosen].notna().all()
                   else "held-out loss, the accuracy's own set")
        return f"RMs trained to convergence (early stopping on {watched}, {rule}); kept step per K: {per_k}"
    return f"RMs trained for fixed epochs, NOT matched optimisation; optimiser steps per K: {per_k}"


def fig_ppo_training(df: pd.DataFrame, source: str):
    """(f) PPO training curves: proxy reward, gold reward and KL(π ‖ π_init) vs iteration, per run."""
    if "ppo/step" not in df:
        return None
    rows = df.dropna(subset=["ppo/step"]).drop_duplicates(["run_id", "ppo/step"], keep="last")
    if rows.empty:
        return None
    rm = rows["config.rm.name"].astype(str) if "config.rm.name" in rows else pd.Series("?", index=rows.index)
    rows = rows.assign(rm=rm)
    by_run, style = run_styles(df, rows["run_id"].unique(), "ppo")
    keys = [(k, t) for k, t in (("ppo/proxy", "proxy reward"), ("ppo/gold", "gold reward"),
                                ("ppo/kl", "KL(π ‖ π_init)  [nats/sequence]")) if k in rows]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.4), squeeze=False)
    for run_id, r in rows.groupby("run_id", sort=True):
        r = r.sort_values("ppo/step")
        colour, label = by_run[run_id]
        for ax, (key, _) in zip(axes[0], keys):
            ax.plot(r["ppo/step"], r[key], "-", lw=1.1, color=colour, label=label)
        evals = df[(df["run_id"] == run_id)].dropna(subset=["eval/gold"]) if "eval/gold" in df else df.iloc[:0]
        for ax, (key, _) in zip(axes[0], keys):  # the held-out evaluations on the same axes
            if not evals.empty:
                ax.plot(evals["eval/step"], evals[key.replace("ppo/", "eval/")], "o", ms=4, color=colour)
    for ax, (_, title) in zip(axes[0], keys):
        ax.set_title(title)
        ax.set_xlabel("PPO iteration")
    _legend_once(axes[0][0], style, title="proxy RM" if len(style) == len(set(rows["rm"])) else None)
    evaluated = "eval/gold" in df and df["eval/gold"].notna().any()
    _footer(fig, source, rows["run_id"].nunique(),
            "lines: training-batch means; dots: held-out evaluations" if evaluated else "")
    return fig


def fig_overoptimization_bon(df: pd.DataFrame, source: str):
    """(a) Best-of-n gold and proxy reward gain vs sqrt(KL) per RM size, with fitted BoN-form curves."""
    return fig_overoptimization(df, source, "bon")


def fig_overoptimization_ppo(df: pd.DataFrame, source: str):
    """(a) PPO gold and proxy reward gain vs sqrt(KL) per RM size, with fitted RL-form curves."""
    return fig_overoptimization(df, source, "ppo")


def fig_methods(df: pd.DataFrame, source: str):
    """(g) Gold and proxy reward gain vs sqrt(KL) per method (ppo, rloo, grpo, dpo, bon), fitted
    (rlhf_scaling/analysis/methods.py; imported here, not at the top: methods.py builds on this module)."""
    from rlhf_scaling.analysis.methods import fig_methods as draw

    return draw(df, source)


FIGURES: Dict[str, Callable] = {
    "overoptimization_bon": fig_overoptimization_bon,
    "overoptimization_ppo": fig_overoptimization_ppo,
    "coefficients_vs_rm_size": fig_coefficients,
    "rm_accuracy": fig_rm_accuracy,
    "samples_per_prompt": fig_samples_per_prompt,
    "samples_per_prompt_matched": fig_samples_per_prompt_matched,
    "diversity": fig_diversity_lines,
    "diversity_heatmap": fig_diversity,
    "ppo_training": fig_ppo_training,
    "methods": fig_methods,
}


# ----------------------------------------------------------------------------- write


def save(fig, out_dir: Path, name: str) -> Path:
    """name.png and name.pdf, without timestamps or version strings; returns the PNG path."""
    layout(fig)
    png = out_dir / f"{name}.png"
    fig.savefig(png, metadata=PNG_METADATA)
    fig.savefig(out_dir / f"{name}.pdf", metadata=PDF_METADATA)
    plt.close(fig)
    return png


def write_figures(df: pd.DataFrame, out_dir, source: str, only: Optional[List[str]] = None) -> List[Path]:
    """Every figure (or those named in `only`) the runs have data for; returns the PNG paths."""
    unknown = set(only or []) - set(FIGURES)
    if unknown:
        raise ValueError(f"unknown figures {sorted(unknown)}; choose from {list(FIGURES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with figure_style():
        for name, make in FIGURES.items():
            if only and name not in only:
                continue
            fig = make(df, source)
            if fig is None or isinstance(fig, str):  # a str: why the figure would mislead here
                print(f"  skipped {name}: {fig or 'no data for it'} in {source}")
                continue
            written.append(save(fig, out_dir, name))
    return written


def load_runs(runs: Optional[str] = None, wandb_path: Optional[str] = None,
              filters: Optional[dict] = None) -> pd.DataFrame:
    """The runs table from a local folder or (wandb_path given) a W&B project."""
    if wandb_path:
        return load_wandb_runs(wandb_path, filters=filters)
    return load_local_runs(runs)


def source_args(parser: argparse.ArgumentParser) -> None:
    """The --runs / --wandb / --filters options shared by the figures and report commands."""
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--runs", help="a folder of run records: a study, a sweep folder, or outputs/")
    src.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read the runs from a W&B project instead")
    parser.add_argument("--filters", type=json.loads, default=None,
                        help='W&B run filter as JSON, e.g. \'{"group": "rm_size"}\' (with --wandb)')


@contextlib.contextmanager
def one_line_warnings():
    """For the commands: loader warnings (a cut metrics line) as one 'warning: ...' line on stderr."""
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *args, **kwargs: print(f"warning: {message}", file=sys.stderr)
        yield


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="rlhf-scaling-figures",
                                     description="Regenerate every figure from run records or a W&B project.")
    source_args(parser)
    parser.add_argument("--out", default="figures", help="output folder for the PNG and PDF files")
    parser.add_argument("--only", nargs="+", choices=list(FIGURES), help="make only these figures")
    args = parser.parse_args(argv)
    source = args.wandb or args.runs
    if args.runs and not Path(args.runs).is_dir():
        parser.exit(2, f"{parser.prog}: error: no such runs folder: {args.runs}\n")
    with one_line_warnings():
        df = load_runs(args.runs, args.wandb, args.filters)
    if df.empty:
        raise SystemExit(f"no run records in {source} (a run is a folder with config.json and metrics.jsonl)")
    print(f"{df['run_id'].nunique()} runs from {source}")
    written = write_figures(df, args.out, source, only=args.only)
    print(f"{len(written)} figures (PNG + PDF) in {args.out}")
    for path in written:
        print(f"  {path}")


if __name__ == "__main__":
    main()
