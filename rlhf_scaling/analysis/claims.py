"""The papers' claims, computed: one row per claim of Gao et al. 2022 and Hou et al. 2024 with the
measured effect, its 95% interval over seeds and a verdict computed from them (DESIGN §4b).

Every claim is a signed effect measured on the runs of one sweep (the runs' W&B group: the sweep's
`experiment`, or the `tracking.group` a paper study gives each of its sweeps), e.g. "the slope of
RM accuracy vs ln(comparisons)". The unit of replication is the **replicate** (config `replicate`,
else the rank of the run's stage seed among the runs of its setting): replicate r's runs form one
complete miniature experiment, so the effect is computed once per replicate, e_1..e_R, and

    effect = mean_r e_r,   95% interval = Student-t interval over the R values (curves.mean_interval).

The t interval over replicates rather than a percentile bootstrap over seeds: with R = 3 replicates
a bootstrap has 10 distinct resamples and its interval covers the true mean far less than 95% of the
time (tests/analysis/test_claims.py measures both); the t interval is exact for normal replicate
effects. Verdict (`verdict`): the interval excludes 0 on the claimed side -> supported, on the other
side -> contradicted, otherwise (or with one replicate: no interval) inconclusive; a claim whose
sweep has no runs is "not run", never guessed.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import pandas as pd

from rlhf_scaling.analysis.runs import per_run, with_rm_facts
from rlhf_scaling.curves import bon_form, fit_overoptimization, mean_interval, rl_form

SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_RUN = "supported", "contradicted", "inconclusive", "not run"
FORMS = {"bon": bon_form, "rl": rl_form}
KIND_FORM = {"bon": "bon", "ppo": "rl"}


def verdict(low: float, high: float, side: int) -> str:
    """supported / contradicted / inconclusive from a 95% interval [low, high] and the claimed sign
    of the effect (side = +1: the claim says the effect is positive; -1: negative). A NaN bound (one
    replicate) is inconclusive, and so is an interval within rounding of 0: identical per-replicate effects of
    ~1e-17 (every run of the sweep peaking at its largest n, a slope of equal values) are no effect."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return INCONCLUSIVE
    tol = 1e-9 * max(1.0, abs(low), abs(high))
    if side * low > tol and side * high > tol:
        return SUPPORTED
    if side * low < -tol and side * high < -tol:
        return CONTRADICTED
    return INCONCLUSIVE


def summarise(effects, side: int) -> dict:
    """effects: one value per replicate (NaN: that replicate could not measure it, left out) ->
    {n_replicates, effect, low, high, verdict}."""
    e = np.asarray(effects, dtype=float)
    e = e[np.isfinite(e)]
    if e.size == 0:
        return {"n_replicates": 0, "effect": math.nan, "low": math.nan, "high": math.nan, "verdict": INCONCLUSIVE}
    mean, low, high = mean_interval(e)
    return {"n_replicates": int(e.size), "effect": mean, "low": low, "high": high, "verdict": verdict(low, high, side)}


# ----------------------------------------------------------------------------- per-run measurements


def replicates(runs: pd.DataFrame, setting: List[str]) -> pd.Series:
    """Each run's replicate index: config `replicate` where recorded, else the rank (0, 1, ...) of
    its seeds among the runs of the same `setting` columns (one row per run)."""
    if "config.replicate" in runs and runs["config.replicate"].notna().all():
        return runs["config.replicate"].astype(int)
    seeds = [c for c in runs.columns if c.startswith("config.") and c.rsplit(".", 1)[-1] == "seed"]
    key = runs[seeds].astype(str).agg("|".join, axis=1) if seeds else pd.Series("", index=runs.index)
    cols = [c for c in setting if c in runs]
    if not cols:
        return key.rank(method="dense").astype(int) - 1
    return key.groupby([runs[c].astype(str) for c in cols]).rank(method="dense").astype(int) - 1


def curves(df: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The (run_id, sqrt_kl, gold_gain, proxy_gain) points of each `kind` ("bon" | "ppo") run: best-of-n
    over n (gains over n = 1), PPO's held-out evaluations where logged (gains over the iteration-0
    evaluation of the initial policy), else its batch means (gains over the first batch)."""
    from rlhf_scaling.analysis.figures import overoptimization_curves

    c = overoptimization_curves(df, kind)
    return c[["run_id", "sqrt_kl", "gold_gain", "proxy_gain"]] if not c.empty else c


def r2(d: np.ndarray, y: np.ndarray, form: str) -> float:
    """Fraction of the (uncentred) sum of squares of y explained by the least-squares Gao `form`
    through the origin; NaN where it cannot be fitted."""
    try:
        alpha, beta = fit_overoptimization(d, y, form)
    except ValueError:
        return math.nan
    total = float(np.sum(y ** 2))
    return 1.0 - float(np.sum((y - FORMS[form](d, alpha, beta)) ** 2)) / total if total > 0 else math.nan


def end_slope(d: np.ndarray, y: np.ndarray, form: str) -> float:
    """dR/dd of the fitted Gao `form` at the largest d reached: BoN α − 2βd, RL α − β(ln d + 1)."""
    try:
        alpha, beta = fit_overoptimization(d, y, form)
    except ValueError:
        return math.nan
    end = float(np.max(d))
    return alpha - 2 * beta * end if form == "bon" else alpha - beta * (math.log(end) + 1.0)


def run_measures(df: pd.DataFrame, kind: str) -> pd.DataFrame:
    """One row per `kind` run: run_id, peak_gain (largest gold gain measured), peak_d (its sqrt KL),
    r2_own / r2_other (the kind's Gao form and the other one, fitted to the gold gains), alpha, beta
    (own form), gold_end_slope, proxy_end_slope (own form's slope at the largest d)."""
    c = curves(df, kind)
    rows = []
    own = KIND_FORM[kind]
    other = "rl" if own == "bon" else "bon"
    for run_id, r in (c.groupby("run_id", sort=True) if not c.empty else []):
        r = r.dropna(subset=["sqrt_kl", "gold_gain"])
        if len(r) < 3:
            continue
        d, g, p = (r[k].to_numpy(float) for k in ("sqrt_kl", "gold_gain", "proxy_gain"))
        try:
            alpha, beta = fit_overoptimization(d, g, own)
        except ValueError:
            alpha, beta = math.nan, math.nan
        at = int(np.argmax(g))
        rows.append({"run_id": run_id, "peak_gain": float(g[at]), "peak_d": float(d[at]), "r2_own": r2(d, g, own),
                     "r2_other": r2(d, g, other), "alpha": alpha, "beta": beta,
                     "gold_end_slope": end_slope(d, g, own),
                     "proxy_end_slope": end_slope(d, p, own) if np.isfinite(p).all() else math.nan})
    return pd.DataFrame(rows, columns=["run_id", "peak_gain", "peak_d", "r2_own", "r2_other", "alpha", "beta",
                                       "gold_end_slope", "proxy_end_slope"])


def gain_at(df: pd.DataFrame, kind: str, run_ids, d_ref: float) -> Dict[str, float]:
    """run_id -> gold gain linearly interpolated at sqrt KL = d_ref on the run's points (NaN beyond
    the points it reached)."""
    c = curves(df, kind)
    out = {}
    for run_id in run_ids:
        r = c[c["run_id"] == run_id].dropna(subset=["sqrt_kl", "gold_gain"]).sort_values("sqrt_kl")
        d, g = r["sqrt_kl"].to_numpy(float), r["gold_gain"].to_numpy(float)
        out[run_id] = float(np.interp(d_ref, d, g)) if len(d) and d[0] <= d_ref <= d[-1] else math.nan
    return out


def max_d(df: pd.DataFrame, kind: str) -> Dict[str, float]:
    """run_id -> the largest sqrt KL the run's points reached."""
    c = curves(df, kind)
    return c.groupby("run_id")["sqrt_kl"].max().to_dict() if not c.empty else {}


def _size(runs: pd.DataFrame, section: str) -> pd.Series:
    """Parameter count of each run's `section` model ("rm" | "policy"): counted where a record has it,
    else 12·n_layer·d_model² of its tiny spec (the non-embedding count up to small terms)."""
    counted = {"rm": ["summary.rm/n_params", "summary.ppo/n_params_proxy", "config.rm.n_params"],
               "policy": ["summary.ppo/n_params_policy", "config.policy.n_params"]}[section]
    size = pd.Series(np.nan, index=runs.index, dtype=float)
    for col in counted:
        if col in runs:
            size = size.fillna(pd.to_numeric(runs[col], errors="coerce"))
    layers, width = f"config.{section}.n_layer", f"config.{section}.d_model"
    if layers in runs and width in runs:
        size = size.fillna(12.0 * pd.to_numeric(runs[layers]) * pd.to_numeric(runs[width]) ** 2)
    return size


# ----------------------------------------------------------------------------- per-replicate effects


def slope(x, y) -> float:
    """Least-squares slope of y on x; NaN with fewer than 2 distinct x."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    if np.unique(x[ok]).size < 2:
        return math.nan
    return float(np.polyfit(x[ok], y[ok], 1)[0])


def curvature(x, y) -> float:
    """Coefficient of x² of a least-squares quadratic (negative: diminishing returns); NaN with
    fewer than 3 distinct x."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    if np.unique(x[ok]).size < 3:
        return math.nan
    return float(np.polyfit(x[ok], y[ok], 2)[0])


def per_replicate(table: pd.DataFrame, effect: Callable[[pd.DataFrame], float], within: Optional[str] = None):
    """effect(rows of one replicate) for each replicate of `table` (a "replicate" column); with
    `within`, the effect is computed per value of that column and averaged (e.g. a slope vs data size
    per RM size)."""
    out = []
    for _, rep in table.groupby("replicate", sort=True):
        if within is None:
            out.append(effect(rep))
        else:
            vals = [effect(g) for _, g in rep.groupby(within, sort=True)]
            vals = [v for v in vals if np.isfinite(v)]
            out.append(float(np.mean(vals)) if vals else math.nan)
    return out


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str
    statement: str
    measure: str  # what the effect is, in words (its sign is the claim's side)
    sweep: str  # the runs' group it is measured on
    side: int  # +1: the claim says the effect is > 0; -1: < 0
    effects: Callable[[pd.DataFrame, pd.DataFrame], Optional[list]]  # (runs of the sweep (one row per run), df) -> per replicate


def _stage(runs: pd.DataFrame, stage: str) -> pd.DataFrame:
    return runs[runs["stage"] == stage] if "stage" in runs else runs.iloc[:0]


def _with_measures(runs: pd.DataFrame, df: pd.DataFrame, kind: str, setting: List[str]) -> pd.DataFrame:
    """The `kind` runs of `runs` joined with run_measures, with their replicate index."""
    jobs = _stage(runs, kind)
    if jobs.empty:
        return jobs
    m = jobs.merge(run_measures(df[df["run_id"].isin(jobs["run_id"])], kind), on="run_id")
    return m.assign(replicate=replicates(m, setting).to_numpy())


RM_SETTING = ["config.rm.name", "config.data.comparison_budget", "config.data.responses_per_prompt",
              "config.policy.name", "config.ppo.samples_per_prompt"]


def _form_fit(kind):
    def effects(runs, df):
        m = _with_measures(runs, df, kind, RM_SETTING)
        return per_replicate(m, lambda r: float((r["r2_own"] - r["r2_other"]).mean())) if not m.empty else None
    return effects


def _rise_and_fall(kind):
    def effects(runs, df):
        m = _with_measures(runs, df, kind, RM_SETTING)
        return per_replicate(m, lambda r: float(min(r["proxy_end_slope"].mean(), -r["gold_end_slope"].mean()))) \
            if not m.empty else None
    return effects


def _vs_rm_size(kind, column):
    def effects(runs, df):
        m = _with_measures(runs, df, kind, RM_SETTING)
        if m.empty:
            return None
        m = m.assign(log_n=np.log(_size(m, "rm")))
        return per_replicate(m, lambda r: slope(r["log_n"], r[column]))
    return effects


def _rm_accuracy_vs(column, log=True, fit=slope):
    def effects(runs, df):
        rms = with_rm_facts(_stage(runs, "rm"))
        if rms.empty or "summary.rm/val_accuracy" not in rms or column not in rms:
            return None
        rms = rms.assign(replicate=replicates(rms, RM_SETTING).to_numpy(),
                         x=np.log(rms[column].astype(float)) if log else rms[column].astype(float))
        return per_replicate(rms, lambda r: fit(r["x"], r["summary.rm/val_accuracy"]), within=None
                             if column == "config.rm.name" else "config.rm.name")
    return effects


def _bon_gain_vs(column, fit=slope):
    def effects(runs, df):
        m = _with_measures(runs, df, "bon", RM_SETTING)
        if m.empty or column not in m:
            return None
        m = m.assign(x=np.log(m[column].astype(float)))
        return per_replicate(m, lambda r: fit(r["x"], r["peak_gain"]), within="config.rm.name")
    return effects


def _bon_minus_rl(runs, df):
    """Per replicate: the mean over RMs of (best-of-n − PPO) gold gain, each interpolated on a grid of
    sqrt KL over the range both reached."""
    bon = _with_measures(runs, df, "bon", RM_SETTING)
    ppo = _with_measures(runs, df, "ppo", RM_SETTING)
    if bon.empty or ppo.empty:
        return None
    reach = {**max_d(df, "bon"), **max_d(df, "ppo")}
    both = bon.merge(ppo, on=["replicate", "config.rm.name"], suffixes=("_bon", "_ppo"))
    diffs = []
    for row in both.to_dict("records"):
        top = min(reach.get(row["run_id_bon"], 0.0), reach.get(row["run_id_ppo"], 0.0))
        grid = np.linspace(0.0, top, 9)[1:]
        if top <= 0:
            continue
        b = [gain_at(df, "bon", [row["run_id_bon"]], d)[row["run_id_bon"]] for d in grid]
        p = [gain_at(df, "ppo", [row["run_id_ppo"]], d)[row["run_id_ppo"]] for d in grid]
        diffs.append({"replicate": row["replicate"], "diff": float(np.nanmean(np.subtract(b, p)))})
    if not diffs:
        return None
    return per_replicate(pd.DataFrame(diffs), lambda r: float(r["diff"].mean()))


def _policy_gain(measure):
    def effects(runs, df):
        m = _with_measures(runs, df, "ppo", RM_SETTING)
        if m.empty:
            return None
        m = m.assign(log_n=np.log(_size(m, "policy")))
        if measure == "final":
            final = m["summary.ppo/final_gold"] - m["summary.ppo/init_gold"] if "summary.ppo/init_gold" in m else np.nan
            m = m.assign(gain=final)
        else:
            m = m.assign(gain=m["peak_gain"])
        return per_replicate(m, lambda r: slope(r["log_n"], r["gain"]))
    return effects


def _spp_matched_kl(fit):
    def effects(runs, df):
        m = _with_measures(runs, df, "ppo", RM_SETTING)
        if m.empty or "config.ppo.samples_per_prompt" not in m:
            return None
        reach = max_d(df, "ppo")
        out = []
        for _, rep in m.groupby("replicate", sort=True):
            d_ref = min(reach.get(r, 0.0) for r in rep["run_id"])  # the KL every run of the replicate reached
            gains = gain_at(df, "ppo", rep["run_id"], d_ref) if d_ref > 0 else {}
            x = np.log(rep["config.ppo.samples_per_prompt"].astype(float))
            out.append(fit(x, rep["run_id"].map(gains)) if gains else math.nan)
        return out
    return effects


CLAIMS: List[Claim] = [
    Claim("G1-bon", "Gao 2022", "best-of-n gold follows d(α − βd) better than d(α − β ln d)",
          "R² of the BoN form − R² of the RL form (gold gain vs d = √KL, mean over RMs)", "overoptimization", +1,
          _form_fit("bon")),
    Claim("G1-rl", "Gao 2022", "RL gold follows d(α − β ln d) better than d(α − βd)",
          "R² of the RL form − R² of the BoN form (PPO held-out gold gain vs d)", "overoptimization", +1,
          _form_fit("ppo")),
    Claim("G2-bon", "Gao 2022", "best-of-n: proxy keeps rising while gold peaks and falls",
          "min(proxy slope, −gold slope) of the fitted BoN forms at the largest d", "overoptimization", +1,
          _rise_and_fall("bon")),
    Claim("G2-rl", "Gao 2022", "RL: proxy keeps rising while gold peaks and falls",
          "min(proxy slope, −gold slope) of the fitted RL forms at the largest d", "overoptimization", +1,
          _rise_and_fall("ppo")),
    Claim("G3-bon-peak", "Gao 2022", "larger proxy RMs reach a higher peak gold (best-of-n)",
          "slope of peak gold gain vs ln(RM params)", "overoptimization", +1, _vs_rm_size("bon", "peak_gain")),
    Claim("G3-bon-d", "Gao 2022", "larger proxy RMs peak at a larger d (best-of-n)",
          "slope of √KL at the gold peak vs ln(RM params)", "overoptimization", +1, _vs_rm_size("bon", "peak_d")),
    Claim("G3-rl-peak", "Gao 2022", "larger proxy RMs reach a higher peak gold (RL)",
          "slope of peak held-out gold gain vs ln(RM params)", "overoptimization", +1, _vs_rm_size("ppo", "peak_gain")),
    Claim("G3-rl-d", "Gao 2022", "larger proxy RMs peak at a larger d (RL)",
          "slope of √KL at the gold peak vs ln(RM params)", "overoptimization", +1, _vs_rm_size("ppo", "peak_d")),
    Claim("G4-bon-alpha", "Gao 2022", "α grows with proxy-RM size (best-of-n)",
          "slope of the gold fit's α vs ln(RM params)", "overoptimization", +1, _vs_rm_size("bon", "alpha")),
    Claim("G4-bon-beta", "Gao 2022", "β shrinks with proxy-RM size (best-of-n)",
          "slope of the gold fit's β vs ln(RM params)", "overoptimization", -1, _vs_rm_size("bon", "beta")),
    Claim("G4-rl-alpha", "Gao 2022", "α grows with proxy-RM size (RL)",
          "slope of the gold fit's α vs ln(RM params)", "overoptimization", +1, _vs_rm_size("ppo", "alpha")),
    Claim("G4-rl-beta", "Gao 2022", "β shrinks with proxy-RM size (RL)",
          "slope of the gold fit's β vs ln(RM params)", "overoptimization", -1, _vs_rm_size("ppo", "beta")),
    Claim("G5-accuracy", "Gao 2022", "more RM data raises RM accuracy",
          "slope of held-out RM accuracy vs ln(comparisons), mean over RM sizes", "data_size", +1,
          _rm_accuracy_vs("config.data.comparison_budget")),
    Claim("G5-gold", "Gao 2022", "more RM data raises the peak gold (best-of-n)",
          "slope of peak BoN gold gain vs ln(comparisons)", "data_size", +1,
          _bon_gain_vs("config.data.comparison_budget")),
    Claim("G6", "Gao 2022", "at equal KL, best-of-n reaches higher gold than RL",
          "mean over √KL (range both reached) and RMs of BoN − PPO gold gain", "overoptimization", +1, _bon_minus_rl),
    Claim("G7", "Gao 2022", "larger policies gain less from optimising a fixed RM",
          "slope of peak held-out PPO gold gain vs ln(policy params)", "policy_size", -1, _policy_gain("peak")),
    Claim("H1", "Hou 2024", "a larger policy gains less from RLHF with a fixed RM",
          "slope of final held-out PPO gold gain vs ln(policy params)", "policy_size", -1, _policy_gain("final")),
    Claim("H2", "Hou 2024", "gains plateau with more RM data",
          "curvature (x² coefficient) of peak BoN gold gain vs ln(comparisons)", "data_size", -1,
          _bon_gain_vs("config.data.comparison_budget", fit=curvature)),
    Claim("H3-accuracy", "Hou 2024", "at a fixed budget, more prompts with fewer responses each gives higher RM accuracy",
          "slope of RM accuracy vs ln K (responses per prompt)", "diversity", -1,
          _rm_accuracy_vs("config.data.responses_per_prompt")),
    Claim("H3-gold", "Hou 2024", "at a fixed budget, more prompts with fewer responses each gives higher gold",
          "slope of peak BoN gold gain vs ln K", "diversity", -1, _bon_gain_vs("config.data.responses_per_prompt")),
    Claim("H4-gain", "Hou 2024", "more PPO samples per prompt improves gold at matched KL",
          "slope of held-out gold gain at the √KL all runs reached vs ln(samples per prompt)", "samples_per_prompt",
          +1, _spp_matched_kl(slope)),
    Claim("H4-diminishing", "Hou 2024", "... with diminishing returns",
          "curvature of that gain vs ln(samples per prompt)", "samples_per_prompt", -1, _spp_matched_kl(curvature)),
]


def claims_table(df: pd.DataFrame, claims: List[Claim] = CLAIMS) -> pd.DataFrame:
    """One row per claim: id, paper, statement, measure, sweep, side ("> 0" | "< 0"), n_runs,
    n_replicates, effect, low, high (95% t interval over replicates), verdict. `df`: a runs table
    (runs.load_local_runs) holding the claims' sweeps as groups."""
    runs = per_run(df) if not df.empty else pd.DataFrame(columns=["run_id", "group", "stage"])
    rows = []
    for claim in claims:
        mine = runs[runs["group"].astype(str) == claim.sweep] if "group" in runs else runs.iloc[:0]
        row = {"id": claim.id, "paper": claim.paper, "statement": claim.statement, "measure": claim.measure,
               "sweep": claim.sweep, "side": "> 0" if claim.side > 0 else "< 0", "n_runs": len(mine)}
        effects = claim.effects(mine, df[df["run_id"].isin(mine["run_id"])]) if len(mine) else None
        if effects is None:
            row.update({"n_replicates": 0, "effect": math.nan, "low": math.nan, "high": math.nan, "verdict": NOT_RUN})
        else:
            row.update(summarise(effects, claim.side))
        rows.append(row)
    return pd.DataFrame(rows)


METHOD = (
    "Each effect is computed once per replicate (a replicate = one seed of every run of the sweep); "
    "effect = the mean over replicates, [low, high] = its 95% Student-t interval over replicates. "
    "Verdict: interval entirely on the claimed side of 0 → supported, entirely on the other → "
    "contradicted, otherwise (or one replicate) inconclusive at this scale; no runs of the sweep → not run. "
    "Computed by rlhf_scaling/analysis/claims.py from the run records, not written by hand.")


def write_claims(df: pd.DataFrame, out_dir, source: str = "") -> pd.DataFrame:
    """claims_table(df) written as out_dir/claims.csv and out_dir/claims.md; returns the table."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = claims_table(df)
    table.to_csv(out_dir / "claims.csv", index=False)
    lines = ["# The papers' claims, measured", "", f"Runs: {source or out_dir}", "", METHOD, "",
             "| claim | statement | measure (claimed sign) | sweep | runs | reps | effect | 95% interval | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in table.to_dict("records"):
        interval = f"[{r['low']:.3g}, {r['high']:.3g}]" if np.isfinite(r["low"]) else "—"
        effect = f"{r['effect']:.3g}" if np.isfinite(r["effect"]) else "—"
        lines.append(f"| {r['id']} ({r['paper']}) | {r['statement']} | {r['measure']} ({r['side']}) | {r['sweep']} | "
                     f"{r['n_runs']} | {r['n_replicates']} | {effect} | {interval} | **{r['verdict']}** |")
    (out_dir / "claims.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return table


def main(argv=None) -> None:
    """rlhf-scaling-claims --runs <folder> [--out <folder>]: claims.md and claims.csv from run records."""
    from rlhf_scaling.analysis.runs import load_local_runs

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--runs", required=True, help="folder of run records (a paper study or sweeps)")
    parser.add_argument("--out", default=None, help="where to write claims.md / claims.csv (default: --runs)")
    args = parser.parse_args(argv)
    if not Path(args.runs).is_dir():
        raise SystemExit(f"no such runs folder: {args.runs}")
    table = write_claims(load_local_runs(args.runs), args.out or args.runs, args.runs)
    print(table[["id", "sweep", "n_replicates", "effect", "low", "high", "verdict"]].to_string(index=False))


if __name__ == "__main__":
    main()
