"""The fitted summaries the best-of-n and PPO stages return: Gao et al.'s overoptimization forms
(rlhf_scaling/curves.py) fitted to each stage's gold and proxy gains, and the fitted gold peak."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rlhf_scaling.curves import fit_overoptimization, peak


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
