"""Stage `study` (the embedded default): a complete miniature scaling study in one process.

Recipe: SFT the policy -> generate gold-labelled comparisons -> for each proxy RM size in
study.rm_models: train it, run best-of-n and PPO against it -> table of fitted Gao
coefficients per RM size -> figures. Each sub-job writes its own run record in a sub-folder
(sft/, data/, rm_<size>/, bon_<size>/, ppo_<size>/), the same layout a sweep produces, so the
analysis tools read a study and a sweep alike. Re-running in the same folder reuses every
finished artifact and resumes an interrupted PPO run.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from rlhf_scaling.stages import bon, data, ppo, rm, sft
from rlhf_scaling.stages.common import open_tracker

log = logging.getLogger(__name__)


def sub_job(cfg: DictConfig, run_dir: Path, stage_module, stage: str, folder: str) -> dict:
    """Run one stage recipe with its own run record in run_dir/folder."""
    started = time.time()
    sub_cfg = cfg.copy()
    OmegaConf.update(sub_cfg, "stage.name", stage)
    with open_tracker(sub_cfg, run_dir / folder, stage, name=folder, resume=True) as tracker:
        summary = stage_module.run(sub_cfg, tracker)
        tracker.summary(**summary)
    log.info("[study] %-10s done in %5.1f s", folder, time.time() - started)
    return summary


def run(cfg: DictConfig, tracker) -> dict:
    """Run the whole study under tracker.run_dir; returns the per-RM-size summary as flat metrics."""
    run_dir = Path(tracker.run_dir)
    started = time.time()
    sub_job(cfg, run_dir, sft, "sft", "sft")
    sub_job(cfg, run_dir, data, "data", "data")
    rows = []
    for key, spec in cfg.study.rm_models.items():
        rm_cfg = cfg.copy()
        rm_cfg.rm = spec
        name = spec.name
        row = {"rm": name}
        row.update(sub_job(rm_cfg, run_dir, rm, "rm", f"rm_{name}"))
        if cfg.study.run_bon:
            row.update(sub_job(rm_cfg, run_dir, bon, "bon", f"bon_{name}"))
        if cfg.study.run_ppo:
            row.update(sub_job(rm_cfg, run_dir, ppo, "ppo", f"ppo_{name}"))
        rows.append(row)
    table = pd.DataFrame(rows).sort_values("rm/n_params")
    table = table[[c for c in table.columns if not c.endswith("/artifact")]]
    table.to_csv(run_dir / "summary.csv", index=False)
    (run_dir / "summary.md").write_text(table.to_markdown(index=False, floatfmt=".4g") if _has_tabulate()
                                        else table.to_string(index=False))
    from rlhf_scaling.analysis.figures import write_figures
    from rlhf_scaling.analysis.runs import load_local_runs

    print("figures:")
    figures = write_figures(load_local_runs(run_dir), run_dir / "figures", str(run_dir))
    elapsed = time.time() - started
    print(f"\nstudy finished in {elapsed / 60:.1f} min\n  summary: {run_dir / 'summary.csv'}")
    for path in figures:
        print(f"  figure:  {path}")
    out = {"study/minutes": elapsed / 60, "study/figures": len(figures)}
    for row in rows:
        for k in ("rm/val_accuracy", "bon/alpha_gold", "bon/beta_gold", "ppo/alpha_gold", "ppo/beta_gold",
                  "ppo/peak_gold", "ppo/final_gold"):
            if k in row:
                out[f"study/{row['rm']}/{k}"] = row[k]
    return out


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
        return True
    except ImportError:
        return False
