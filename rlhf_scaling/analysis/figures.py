"""Every paper figure from a runs table, one function per figure, one command for all.

    rlhf-scaling-figures --runs outputs/default/study/<time> --out figures/
    rlhf-scaling-figures --wandb my-entity/rlhf-scaling --out figures/

(a) gold and proxy vs sqrt(KL), BoN and PPO, per RM size, fitted Gao forms   overoptimization_{bon,ppo}
(b) fitted alpha, beta vs RM parameters with log-linear fits (Gao Fig. 3)    coefficients_vs_rm_size
(c) RM held-out accuracy vs comparisons and vs RM size                       rm_accuracy
(d) gold reward vs samples per prompt                                        samples_per_prompt
(e) prompt-vs-response diversity heatmap at fixed budgets                    diversity_heatmap
(f) PPO proxy / gold / KL training curves                                    ppo_training
A figure whose data the runs lack is skipped with a note. Output is deterministic (no timestamps
in PNG/PDF metadata), so regenerating from the same records gives identical files.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Dict, List, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from rlhf_scaling.curves import bon_form, fit_log_linear, fit_overoptimization, rl_form  # noqa: E402

STYLE = {"figure.dpi": 110, "savefig.dpi": 130, "font.size": 9, "axes.grid": True, "grid.alpha": 0.3,
         "axes.spines.top": False, "axes.spines.right": False, "legend.fontsize": 8, "lines.linewidth": 1.5}
FORMS = {"bon": bon_form, "rl": rl_form}


# ----------------------------------------------------------------------------- data extraction


def rm_sizes(df: pd.DataFrame) -> Dict[str, float]:
    """RM name -> non-embedding parameter count, from any run that trained or reused that RM."""
    col = "summary.rm/n_params"
    if col not in df or "config.rm.name" not in df:
        return {}
    known = df.dropna(subset=[col]).groupby("config.rm.name")[col].first()
    return {str(k): float(v) for k, v in known.items()}


def overoptimization_curves(df: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Per run: sqrt_kl, proxy_gain, gold_gain rows (gains over the first point), with rm name and size."""
    step, d, proxy, gold = {"bon": ("bon/n", "bon/sqrt_kl", "bon/proxy", "bon/gold"),
                            "ppo": ("ppo/step", "ppo/sqrt_kl", "ppo/proxy", "ppo/gold")}[kind]
    if step not in df:
        return pd.DataFrame()
    rows = df.dropna(subset=[step, d, gold]).sort_values(["run_id", step])
    rows = rows.drop_duplicates(["run_id", step], keep="last")  # a resumed run re-logs a few steps
    out = []
    for run_id, r in rows.groupby("run_id", sort=True):
        out.append(pd.DataFrame({"run_id": run_id, "rm": r["config.rm.name"].astype(str).to_numpy(),
                                 "sqrt_kl": r[d].to_numpy(float),
                                 "proxy_gain": (r[proxy] - r[proxy].iloc[0]).to_numpy(float),
                                 "gold_gain": (r[gold] - r[gold].iloc[0]).to_numpy(float)}))
    curves = pd.concat(out, ignore_index=True) if out else pd.DataFrame()
    if not curves.empty:
        sizes = rm_sizes(df)
        curves["n_params"] = curves["rm"].map(sizes).fillna(0)
    return curves


def fitted_coefficients(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (kind, run): rm, n_params, alpha, beta of gold-gain fits to the Gao forms."""
    rows = []
    for kind, form in (("bon", "bon"), ("ppo", "rl")):
        curves = overoptimization_curves(df, kind)
        for run_id, c in (curves.groupby("run_id", sort=True) if not curves.empty else []):
            try:
                alpha, beta = fit_overoptimization(c["sqrt_kl"].to_numpy(), c["gold_gain"].to_numpy(), form)
            except ValueError:
                continue
            rows.append({"kind": kind, "run_id": run_id, "rm": c["rm"].iloc[0], "n_params": c["n_params"].iloc[0],
                         "alpha": alpha, "beta": beta})
    return pd.DataFrame(rows)


def per_run(df: pd.DataFrame) -> pd.DataFrame:
    return df.groupby("run_id", sort=True).first().reset_index()


# ----------------------------------------------------------------------------- figures


def _footer(fig, source: str, n_runs: int, what: str = "") -> None:
    fig.text(0.01, 0.005, f"source: {source} | {n_runs} runs{' | ' + what if what else ''}", fontsize=6.5,
             color="grey")


def fig_overoptimization(df: pd.DataFrame, source: str, kind: str):
    curves = overoptimization_curves(df, kind)
    if curves.empty:
        return None
    form = "bon" if kind == "bon" else "rl"
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    names = curves.drop_duplicates("rm").sort_values("n_params")["rm"].tolist()
    colours = dict(zip(names, plt.cm.viridis(np.linspace(0.1, 0.9, len(names)))))
    for rm, c in curves.groupby("rm", sort=False):
        size = c["n_params"].iloc[0]
        label = f"{rm} ({size / 1e3:.0f}k)" if size else rm
        d = c["sqrt_kl"].to_numpy()
        grid = np.linspace(0, max(d.max(), 1e-3), 200)
        for ax, target in zip(axes, ("gold_gain", "proxy_gain")):
            if kind == "bon":
                ax.plot(d, c[target], "o", ms=4, color=colours[rm], label=label)
            else:  # PPO batches are noisy: faint raw points and a rolling mean over 9 iterations
                ax.plot(d, c[target], ".", ms=2, color=colours[rm], alpha=0.3)
                order = np.argsort(d, kind="stable")
                smooth = pd.Series(c[target].to_numpy()[order]).rolling(9, center=True, min_periods=1).mean()
                ax.plot(d[order], smooth, "-", color=colours[rm], label=label)
            try:
                alpha, beta = fit_overoptimization(d, c[target].to_numpy(), form)
                ax.plot(grid, FORMS[form](grid, alpha, beta), "--", color=colours[rm])
            except ValueError:
                pass
    for ax, target in zip(axes, ("gold", "proxy")):
        ax.axhline(0, color="grey", lw=0.6)
        ax.set_xlabel("sqrt(KL(π ‖ π_init))  [sqrt nats]")
        ax.set_ylabel(f"{target} reward gain")
        ax.set_title(f"{'best-of-n' if kind == 'bon' else 'PPO'}: {target} reward")
    handles, labels = axes[0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    axes[0].legend(unique.values(), unique.keys(), title="proxy RM")
    what = "points: unbiased best-of-n estimates" if kind == "bon" else "lines: rolling mean over 9 iterations"
    _footer(fig, source, curves["run_id"].nunique(), f"{what}; dashed: Gao et al. {form} form fits")
    return fig


def fig_coefficients(df: pd.DataFrame, source: str):
    coef = fitted_coefficients(df)
    coef = coef[coef["n_params"] > 0] if not coef.empty else coef
    if coef.empty or coef["n_params"].nunique() < 2:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, name in zip(axes, ("alpha", "beta")):
        for kind, marker in (("bon", "o"), ("ppo", "s")):
            c = coef[coef["kind"] == kind]
            if c.empty:
                continue
            ax.plot(c["n_params"], c[name], marker, label=kind)
            if c["n_params"].nunique() >= 2:
                slope, intercept = fit_log_linear(c["n_params"].to_numpy(), c[name].to_numpy())
                x = np.geomspace(c["n_params"].min(), c["n_params"].max(), 50)
                ax.plot(x, slope * np.log(x) + intercept, "--", lw=1, label=f"{kind}: {slope:+.3f}·ln N")
        ax.set_xscale("log")
        ax.set_xlabel("proxy RM parameters N (non-embedding)")
        ax.set_ylabel(name)
        ax.set_title(f"gold-reward {name} vs RM size")
        ax.legend()
    _footer(fig, source, coef["run_id"].nunique(), "Gao et al. Fig. 3")
    return fig


def fig_rm_accuracy(df: pd.DataFrame, source: str):
    col = "summary.rm/val_accuracy"
    if col not in df:
        return None
    runs = per_run(df).dropna(subset=[col])
    runs = runs[runs["stage"] == "rm"] if (runs["stage"] == "rm").any() else runs
    runs = runs.drop_duplicates("summary.rm/artifact") if "summary.rm/artifact" in runs else runs
    if runs.empty:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    budget = "config.data.comparison_budget"
    for rm, r in runs.groupby("config.rm.name", sort=True):
        r = r.sort_values(budget)
        axes[0].plot(r[budget], r[col], "o-", label=str(rm))
    axes[0].set_xscale("log")
    axes[0].set_xlabel("training comparisons")
    axes[0].set_ylabel("held-out pair accuracy")
    axes[0].legend(title="RM")
    for b, r in runs.groupby(budget, sort=True):
        r = r.sort_values("summary.rm/n_params")
        axes[1].plot(r["summary.rm/n_params"], r[col], "o-", label=f"{int(b)} comparisons")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("RM parameters (non-embedding)")
    axes[1].legend()
    for ax in axes:
        ax.axhline(0.5, color="grey", lw=0.6)
    _footer(fig, source, len(runs))
    return fig


def fig_samples_per_prompt(df: pd.DataFrame, source: str):
    col, x = "summary.ppo/peak_gold", "config.ppo.samples_per_prompt"
    if col not in df or x not in df:
        return None
    runs = per_run(df).dropna(subset=[col])
    if runs[x].nunique() < 2:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for rm, r in runs.groupby("config.rm.name", sort=True):
        r = r.sort_values(x)
        ax.plot(r[x], r[col], "o-", label=f"peak gold, RM {rm}")
        ax.plot(r[x], r["summary.ppo/final_gold"], "s--", alpha=0.6, label=f"final gold, RM {rm}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("PPO rollouts per prompt per step")
    ax.set_ylabel("gold reward")
    ax.legend()
    _footer(fig, source, len(runs))
    return fig


def fig_diversity(df: pd.DataFrame, source: str):
    k, b = "config.data.responses_per_prompt", "config.data.comparison_budget"
    value = next((c for c in ("summary.bon/best_gold", "summary.rm/val_accuracy") if c in df), None)
    if value is None or k not in df:
        return None
    runs = per_run(df).dropna(subset=[value])
    if runs[k].nunique() < 2:
        return None
    grid = runs.pivot_table(index=b, columns=k, values=value, aggfunc="mean").sort_index()
    fig, ax = plt.subplots(figsize=(1.2 * grid.shape[1] + 2.5, 0.8 * grid.shape[0] + 2))
    im = ax.imshow(grid.to_numpy(float), cmap="viridis", aspect="auto")
    ax.set_xticks(range(grid.shape[1]), [str(int(c)) for c in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [str(int(i)) for i in grid.index])
    for i, budget in enumerate(grid.index):
        for j, kk in enumerate(grid.columns):
            v = grid.iloc[i, j]
            if np.isfinite(v):
                prompts = int(budget) // (int(kk) * (int(kk) - 1) // 2)
                ax.text(j, i, f"{v:.3f}\n{prompts} prompts", ha="center", va="center", fontsize=7, color="white")
    ax.set_xlabel("responses per prompt K")
    ax.set_ylabel("comparison budget")
    ax.set_title(value.replace("summary.", ""))
    ax.grid(False)
    fig.colorbar(im, ax=ax)
    _footer(fig, source, len(runs), "prompts = budget / C(K,2)")
    return fig


def fig_ppo_training(df: pd.DataFrame, source: str):
    if "ppo/step" not in df:
        return None
    rows = df.dropna(subset=["ppo/step"]).drop_duplicates(["run_id", "ppo/step"], keep="last")
    if rows.empty:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for run_id, r in rows.groupby("run_id", sort=True):
        r = r.sort_values("ppo/step")
        for ax, key in zip(axes, ("ppo/proxy", "ppo/gold", "ppo/kl")):
            smooth = r[key].rolling(9, center=True, min_periods=1).mean()
            ax.plot(r["ppo/step"], smooth, label=run_id)
    for ax, title in zip(axes, ("proxy reward", "gold reward", "KL(π ‖ π_init) [nats/seq]")):
        ax.set_title(title)
        ax.set_xlabel("PPO iteration")
    axes[0].legend(fontsize=6)
    _footer(fig, source, rows["run_id"].nunique(), "rolling mean over 9 iterations")
    return fig


FIGURES: Dict[str, Callable] = {
    "overoptimization_bon": lambda df, s: fig_overoptimization(df, s, "bon"),
    "overoptimization_ppo": lambda df, s: fig_overoptimization(df, s, "ppo"),
    "coefficients_vs_rm_size": fig_coefficients,
    "rm_accuracy": fig_rm_accuracy,
    "samples_per_prompt": fig_samples_per_prompt,
    "diversity_heatmap": fig_diversity,
    "ppo_training": fig_ppo_training,
}


def write_figures(df: pd.DataFrame, out_dir, source: str) -> List[Path]:
    """Every figure the runs have data for, as PNG and PDF; returns the PNG paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with plt.rc_context(STYLE):
        for name, make in FIGURES.items():
            fig = make(df, source)
            if fig is None:
                print(f"  skipped {name}: the runs have no data for it")
                continue
            fig.tight_layout(rect=(0, 0.03, 1, 1))
            fig.savefig(out_dir / f"{name}.png", metadata={"Software": None})
            fig.savefig(out_dir / f"{name}.pdf", metadata={"CreationDate": None, "Producer": None, "Creator": None})
            plt.close(fig)
            written.append(out_dir / f"{name}.png")
    return written


def load_runs(runs: Optional[str], wandb_path: Optional[str]) -> pd.DataFrame:
    from rlhf_scaling.analysis.load import load_local_runs, load_wandb_runs

    return load_wandb_runs(wandb_path) if wandb_path else load_local_runs(runs)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Regenerate every figure from run records or a W&B project.")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--runs", help="a folder of run records (a study, a sweep, or outputs/)")
    src.add_argument("--wandb", help="entity/project on Weights & Biases")
    parser.add_argument("--out", default="figures", help="output folder (PNG and PDF)")
    args = parser.parse_args(argv)
    df = load_runs(args.runs, args.wandb)
    if df.empty:
        raise SystemExit(f"no run records found in {args.runs or args.wandb}")
    written = write_figures(df, args.out, args.runs or args.wandb)
    print(f"{len(written)} figures from {df['run_id'].nunique()} runs in {args.out}")
    for path in written:
        print(f"  {path}")


if __name__ == "__main__":
    main()
