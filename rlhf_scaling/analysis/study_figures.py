"""Figures of one study folder: gold and proxy reward vs sqrt(KL) per proxy-RM size, for
best-of-n and for PPO, with the fitted Gao et al. (2022) forms (their Fig. 1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from rlhf_scaling.curves import bon_form, fit_overoptimization, rl_form  # noqa: E402

FORMS = {"bon": bon_form, "rl": rl_form}


def _rm_size(run_dir: Path, name: str) -> int:
    meta = run_dir / f"rm_{name}" / "summary.json"
    return int(json.loads(meta.read_text()).get("rm/n_params", 0)) if meta.is_file() else 0


def _curves(run_dir: Path, kind: str):
    """(rm name, n_params, DataFrame with sqrt_kl, proxy_gain, gold_gain) per RM, smallest first."""
    out = []
    for folder in sorted(run_dir.glob(f"{kind}_*")):
        name = folder.name[len(kind) + 1:]
        csv = folder / f"{kind}_curve.csv"
        if not csv.is_file():
            continue
        df = pd.read_csv(csv)
        if kind == "ppo":
            df = df.rename(columns={"ppo/sqrt_kl": "sqrt_kl", "ppo/proxy": "proxy", "ppo/gold": "gold"})
            df["proxy_gain"] = df["proxy"] - df["proxy"].iloc[0]
            df["gold_gain"] = df["gold"] - df["gold"].iloc[0]
        out.append((name, _rm_size(run_dir, name), df))
    return sorted(out, key=lambda item: item[1])


def overoptimization_figure(run_dir: Path, kind: str, out_dir: Path) -> List[Path]:
    """Two panels (gold, proxy) of reward gain vs sqrt(KL); one colour per RM size; dashed fits."""
    curves = _curves(run_dir, kind)
    if not curves:
        return []
    form = "bon" if kind == "bon" else "rl"
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    colours = plt.cm.viridis(np.linspace(0.1, 0.9, len(curves)))
    for (name, n_params, df), colour in zip(curves, colours):
        d = df["sqrt_kl"].to_numpy()
        grid = np.linspace(0, max(d.max(), 1e-3), 200)
        for ax, target in zip(axes, ("gold_gain", "proxy_gain")):
            label = f"{name} ({n_params / 1e3:.0f}k)" if n_params else name
            if kind == "bon":
                ax.plot(d, df[target], "o", color=colour, label=label, ms=4)
            else:  # PPO batches are noisy: faint raw points, and a rolling mean over 9 iterations
                ax.plot(d, df[target], ".", color=colour, ms=2, alpha=0.3)
                order = np.argsort(d)
                smooth = pd.Series(df[target].to_numpy()[order]).rolling(9, center=True, min_periods=1).mean()
                ax.plot(d[order], smooth, "-", color=colour, lw=1.5, label=label)
            try:
                alpha, beta = fit_overoptimization(d, df[target].to_numpy(), form)
                ax.plot(grid, FORMS[form](grid, alpha, beta), "--", color=colour, lw=1)
            except ValueError:
                pass
    title = "best-of-n" if kind == "bon" else "PPO"
    for ax, target in zip(axes, ("gold", "proxy")):
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xlabel("sqrt(KL(π ‖ π_init))  [sqrt nats]")
        ax.set_ylabel(f"{target} reward gain over init")
        ax.set_title(f"{title}: {target} reward")
    axes[0].legend(title="proxy RM", fontsize=8)
    what = "points: unbiased best-of-n estimates" if kind == "bon" else "lines: rolling mean over 9 PPO iterations"
    fig.text(0.01, 0.01, f"{run_dir}: {len(curves)} proxy RMs; {what}; dashed: fitted Gao et al. {form} form",
             fontsize=7, color="grey")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"overoptimization_{kind}.png", out_dir / f"overoptimization_{kind}.pdf"]
    for path in paths:
        fig.savefig(path, dpi=130, metadata={"CreationDate": None} if path.suffix == ".pdf" else None)
    plt.close(fig)
    return paths


def study_figures(run_dir: Path) -> List[Path]:
    """All figures of a study folder into run_dir/figures; returns the PNG paths."""
    out_dir = Path(run_dir) / "figures"
    paths = []
    for kind in ("bon", "ppo"):
        paths.extend(overoptimization_figure(Path(run_dir), kind, out_dir))
    return [p for p in paths if p.suffix == ".png"]
