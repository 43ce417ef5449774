"""The fitted summaries the best-of-n, PPO and DPO stages return: Gao et al.'s overoptimization forms
(rlhf_scaling/curves.py) fitted to each stage's gold and proxy gains, and the fitted gold peak."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from rlhf_scaling.curves import bon_form, fit_overoptimization, peak, rl_form


def bon_fit_summary(curve: pd.DataFrame, prefix: str = "bon") -> dict:
    """BoN-form fits R(d) = d(α − βd) of a bon_curve's gold and proxy gains vs d = sqrt(KL_bon);
    gold's fitted peak, and the best n measured."""
    out = {}
    for target in ("gold", "proxy"):
        alpha, beta = fit_overoptimization(curve["sqrt_kl"].to_numpy(), curve[f"{target}_gain"].to_numpy(), "bon")
        out[f"{prefix}/alpha_{target}"], out[f"{prefix}/beta_{target}"] = alpha, beta
    d_star, r_star = peak(out[f"{prefix}/alpha_gold"], out[f"{prefix}/beta_gold"], "bon")
    out[f"{prefix}/peak_sqrt_kl_fit"], out[f"{prefix}/peak_gold_gain_fit"] = d_star, r_star
    best = curve.loc[curve["gold"].idxmax()]
    out[f"{prefix}/best_n"], out[f"{prefix}/best_gold"] = int(best["n"]), float(best["gold"])
    return out


def ppo_fit_summary(run_dir: Path) -> dict:
    """RL-form fits (Gao et al.: R(d) = d(α − β log d)) of the gold and proxy gains, from a PPO run's
    own metrics.jsonl (so a resumed run fits its whole curve). The points are the held-out
    evaluations (eval/*, gains over the iteration-0 evaluation of the initial policy) when the run
    has them, else the training-batch means (gains over the first batch); ppo/fit_points says which.
    Writes ppo_curve.csv (batch means, the training diagnostics) and ppo_eval_curve.csv."""
    run_dir = Path(run_dir)
    rows = pd.read_json(run_dir / "metrics.jsonl", lines=True)
    batch = last_of_each_step(rows, "ppo")
    batch.to_csv(run_dir / "ppo_curve.csv", index=False)
    out = {"ppo/batch_final_gold": float(batch["ppo/gold"].iloc[-1]),
           "ppo/batch_peak_gold": float(batch["ppo/gold"].max())}
    curve = batch.rename(columns=lambda c: c.split("/")[1])
    if "eval/step" in rows:
        evals = last_of_each_step(rows, "eval")
        evals.to_csv(run_dir / "ppo_eval_curve.csv", index=False)
        curve = evals.rename(columns=lambda c: c.split("/")[1])
    out["ppo/fit_points"] = "eval" if "eval/step" in rows else "batch"
    return {**out, **rl_fit_summary(curve)}


def last_of_each_step(rows: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """The <prefix>/step, proxy, gold, kl, sqrt_kl columns of the records carrying <prefix>/gold,
    one per step (a resumed run's last), in step order."""
    cols = [f"{prefix}/{c}" for c in ("step", "proxy", "gold", "kl", "sqrt_kl")]
    curve = rows.dropna(subset=[f"{prefix}/gold"]).drop_duplicates(f"{prefix}/step", keep="last")
    return curve.sort_values(f"{prefix}/step")[cols].astype({f"{prefix}/step": int})


def rl_fit_summary(curve: pd.DataFrame) -> dict:
    """From a curve with columns step, proxy, gold, kl, sqrt_kl: final and peak values, and the RL
    form fitted to gold and proxy gains over the first point (R(0) = 0 there)."""
    base = curve.iloc[0]
    d = curve["sqrt_kl"].to_numpy()
    out = {"ppo/final_gold": float(curve["gold"].iloc[-1]), "ppo/final_proxy": float(curve["proxy"].iloc[-1]),
           "ppo/final_kl": float(curve["kl"].iloc[-1]), "ppo/peak_gold": float(curve["gold"].max()),
           "ppo/peak_gold_step": int(curve.loc[curve["gold"].idxmax(), "step"]), "ppo/init_gold": float(base["gold"])}
    for target in ("gold", "proxy"):
        gain = (curve[target] - base[target]).to_numpy()
        try:
            alpha, beta = fit_overoptimization(d, gain, "rl")
        except ValueError:  # too few points with KL > 0
            alpha, beta = float("nan"), float("nan")
        out[f"ppo/alpha_{target}"], out[f"ppo/beta_{target}"] = alpha, beta
    out["ppo/peak_sqrt_kl_fit"], out["ppo/peak_gold_gain_fit"] = peak(out["ppo/alpha_gold"], out["ppo/beta_gold"], "rl")
    return out


def dpo_fit_summary(run_dir: Path) -> dict:
    """From a DPO run's metrics.jsonl: its held-out evaluation curve (written to dpo_eval_curve.csv),
    the measured peak gold and the √KL there, and BOTH Gao forms fitted to the gold gains over the
    step-0 evaluation (DPO is neither best-of-n nor RL against a proxy: which form fits is an open
    question), with each fit's residual sum of squares over the eval points and the better form.
    dpo/sse_ratio = SSE(worse) / SSE(better) >= 1. Fits that cannot be made (fewer than 2 points
    with KL > 0) are nan, and dpo/better_form is then "none"."""
    rows = pd.read_json(Path(run_dir) / "metrics.jsonl", lines=True)
    if "eval/step" not in rows:
        return {}
    evals = last_of_each_step(rows, "eval")
    evals.to_csv(Path(run_dir) / "dpo_eval_curve.csv", index=False)
    curve = evals.rename(columns=lambda c: c.split("/")[1])
    at_peak = curve.loc[curve["gold"].idxmax()]
    d, gain = curve["sqrt_kl"].to_numpy(), (curve["gold"] - curve["gold"].iloc[0]).to_numpy()
    out = {"dpo/init_gold": float(curve["gold"].iloc[0]), "dpo/final_gold": float(curve["gold"].iloc[-1]),
           "dpo/final_kl": float(curve["kl"].iloc[-1]), "dpo/final_proxy": float(curve["proxy"].iloc[-1]),
           "dpo/peak_gold": float(at_peak["gold"]), "dpo/peak_gold_step": int(at_peak["step"]),
           "dpo/peak_sqrt_kl": float(at_peak["sqrt_kl"])}
    sse = {}
    for form in ("rl", "bon"):
        try:
            alpha, beta = fit_overoptimization(d, gain, form)
        except ValueError:
            alpha = beta = float("nan")
        model = bon_form if form == "bon" else rl_form
        sse[form] = float(((gain - model(d, alpha, beta)) ** 2).sum())
        d_star, r_star = (float("nan"),) * 2 if math.isnan(beta) else peak(alpha, beta, form)
        out.update({f"dpo/alpha_gold_{form}": alpha, f"dpo/beta_gold_{form}": beta, f"dpo/sse_{form}": sse[form],
                    f"dpo/peak_sqrt_kl_fit_{form}": d_star, f"dpo/peak_gold_gain_fit_{form}": r_star})
    if any(math.isnan(v) for v in sse.values()):
        out["dpo/better_form"], out["dpo/sse_ratio"] = "none", float("nan")
    else:
        better, worse = sorted(sse, key=sse.get)
        out["dpo/better_form"] = better
        out["dpo/sse_ratio"] = sse[worse] / sse[better] if sse[better] > 0 else float("inf")
    return out
