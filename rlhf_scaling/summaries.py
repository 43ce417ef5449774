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
    """RL-form fits (Gao et al.: R(d) = d(α − β log d)) of the gold and proxy gains over iteration 0,
    from a PPO run's own metrics.jsonl (so a resumed run fits its whole curve); writes ppo_curve.csv."""
    run_dir = Path(run_dir)
    rows = pd.read_json(run_dir / "metrics.jsonl", lines=True)
    curve = rows.dropna(subset=["ppo/gold"]).drop_duplicates("ppo/step", keep="last").sort_values("ppo/step")
    curve = curve[["ppo/step", "ppo/proxy", "ppo/gold", "ppo/kl", "ppo/sqrt_kl"]].astype({"ppo/step": int})
    curve.to_csv(run_dir / "ppo_curve.csv", index=False)
    base = curve.iloc[0]
    d = curve["ppo/sqrt_kl"].to_numpy()
    out = {"ppo/final_gold": float(curve["ppo/gold"].iloc[-1]), "ppo/final_proxy": float(curve["ppo/proxy"].iloc[-1]),
           "ppo/final_kl": float(curve["ppo/kl"].iloc[-1]), "ppo/peak_gold": float(curve["ppo/gold"].max()),
           "ppo/init_gold": float(base["ppo/gold"])}
    for target in ("gold", "proxy"):
        gain = (curve[f"ppo/{target}"] - base[f"ppo/{target}"]).to_numpy()
        try:
            alpha, beta = fit_overoptimization(d, gain, "rl")
        except ValueError:  # too few points with KL > 0
            alpha, beta = float("nan"), float("nan")
        out[f"ppo/alpha_{target}"], out[f"ppo/beta_{target}"] = alpha, beta
    out["ppo/peak_sqrt_kl_fit"], out["ppo/peak_gold_gain_fit"] = peak(out["ppo/alpha_gold"], out["ppo/beta_gold"], "rl")
    return out
