"""Stage `paper`: one replicate of one miniature sweep of the paper study (`rlhf-scaling -m +sweep=paper`).

The paper study is a Hydra multirun over (paper.sweep, replicate): each job runs this recipe, which
runs the sub-jobs of its sweep in order, each with its own run record in a sub-folder (as the study
does: stages/study.py), its W&B group (tracking.group) set to the sweep's name so the analysis and
the claims (rlhf_scaling/analysis/claims.py) tell the sweeps apart. Under `hydra/launcher=slurm`
the (sweep, replicate) jobs are one Slurm array. When every job has returned, `WriteFindings` (a
Hydra callback the sweep config installs) writes claims.md, claims.csv and figures/ into the sweep
folder.

Seeds: `replicate` sets the seeds that vary between replicates of each sweep (VARIED_SEEDS, as the
stand-alone sweeps in conf/sweep/ do); the SFT policies and data sets are keyed by the others, so
every replicate and sweep shares them: each is built once (under its artifact lock, also when the
jobs run at once on a cluster).

Sweeps (sub-folder per point):
  overoptimization    per RM in study.rm_models: rm, best-of-n and PPO against it      (Gao G1-G4, G6)
  data_size           per budget in paper.comparison_budgets: rm and best-of-n (RM `rm`) (Gao G5, Hou H2)
  diversity           per K in paper.responses_per_prompt at paper.diversity_budget: rm, best-of-n (Hou H3)
  policy_size         ONE RM trained on `policy`'s samples; per policy in paper.policy_models: PPO
                      against it (the fixed-RM design, proxy.trained_on)                 (Gao G7, Hou H1)
  samples_per_prompt  per n in paper.samples_per_prompt: PPO with ppo.samples_per_prompt = n (Hou H4)
"""

from __future__ import annotations

import importlib
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from rlhf_scaling.stages.common import open_tracker

log = logging.getLogger(__name__)

# The seeds each sweep's replicates vary (= replicate); all others, and so the upstream artifacts, are shared.
VARIED_SEEDS = {"overoptimization": ("rm_train", "bon", "ppo"), "data_size": ("rm_train", "bon"),
                "diversity": ("rm_train", "bon"), "policy_size": ("ppo",), "samples_per_prompt": ("ppo",)}

Point = Tuple[str, str, Dict[str, Any]]  # (sub-folder, stage, {dotted key: value} on top of the job's config)


def points(cfg: DictConfig) -> List[Point]:
    """The sub-jobs of cfg.paper.sweep, in the order they run (an RM before what optimises it)."""
    p, sweep = cfg.paper, cfg.paper.sweep
    if sweep == "overoptimization":
        return [(f"{stage}_{name}", stage, {"rm": spec}) for name, spec in cfg.study.rm_models.items()
                for stage in ("rm", "bon", "ppo")]
    if sweep == "data_size":
        return [(f"{stage}_c{b}", stage, {"data.comparison_budget": b}) for b in p.comparison_budgets
                for stage in ("rm", "bon")]
    if sweep == "diversity":
        return [(f"{stage}_k{k}", stage, {"data.responses_per_prompt": k, "data.comparison_budget": p.diversity_budget})
                for k in p.responses_per_prompt for stage in ("rm", "bon")]
    if sweep == "policy_size":
        fixed = [(f"rm_{cfg.rm.name}_on_{cfg.policy.name}", "rm", {})]
        return fixed + [(f"ppo_{name}", "ppo", {"policy": spec, "proxy.trained_on": cfg.policy})
                        for name, spec in p.policy_models.items()]
    return [(f"ppo_spp{n}", "ppo", {"ppo.samples_per_prompt": n, "ppo.minibatch_size": min(cfg.ppo.minibatch_size,
                                                                                          cfg.ppo.prompts_per_step * n)})
            for n in p.samples_per_prompt]


def point_config(cfg: DictConfig, stage: str, updates: Dict[str, Any]) -> DictConfig:
    """The job's config for one sub-job: the point's settings, its stage, the sweep as W&B group and
    the sweep's varied seeds set to the replicate."""
    out = cfg.copy()
    for key, value in updates.items():
        OmegaConf.update(out, key, value.copy() if isinstance(value, DictConfig) else value, merge=False)
    OmegaConf.update(out, "stage.name", stage)
    OmegaConf.update(out, "tracking.group", cfg.paper.sweep)
    for section in VARIED_SEEDS[cfg.paper.sweep]:
        OmegaConf.update(out, f"{section}.seed", int(cfg.replicate))
    return out


def sub_job(cfg: DictConfig, run_dir: Path, stage: str, folder: str) -> dict:
    """Build or reuse the point's upstream artifacts, then run its stage, in its own run record."""
    from rlhf_scaling.config import validate
    from rlhf_scaling.stages.upstream import ensure_upstream

    validate(cfg)
    started, cpu = time.time(), time.process_time()
    with open_tracker(cfg, run_dir / folder, stage, name=folder, resume=True) as tracker:
        ensure_upstream(cfg, tracker, before=stage)
        summary = importlib.import_module(f"rlhf_scaling.stages.{stage}").run(cfg, tracker)
        tracker.summary(**summary)
    # wall and this process's CPU time (all threads): CPU time says more than wall on a shared machine
    log.info("[paper %s r%d] %-16s done in %5.1f s (CPU %5.1f s)", cfg.paper.sweep, cfg.replicate, folder,
             time.time() - started, time.process_time() - cpu)
    return summary


def run(cfg: DictConfig, tracker) -> dict:
    """Run every point of cfg.paper.sweep for cfg.replicate under tracker.run_dir."""
    run_dir = Path(tracker.run_dir)
    started = time.time()
    done = 0
    for folder, stage, updates in points(cfg):
        sub_job(point_config(cfg, stage, updates), run_dir, stage, folder)
        done += 1
    minutes = (time.time() - started) / 60
    log.info("[paper %s r%d] %d sub-jobs in %.1f min", cfg.paper.sweep, cfg.replicate, done, minutes)
    return {"paper/minutes": minutes, "paper/sub_jobs": done}


class WriteFindings(Callback):
    """Hydra callback (hydra.callbacks in conf/sweep/paper.yaml): when the multirun's jobs have all
    returned (on the submitting machine, also under the Slurm launcher), write the claims table
    (claims.md, claims.csv) and the figures (figures/) from every run record in the sweep folder."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from rlhf_scaling.analysis.claims import write_claims
        from rlhf_scaling.analysis.figures import write_figures
        from rlhf_scaling.analysis.runs import load_local_runs

        sweep_dir = Path(config.hydra.sweep.dir)
        df = load_local_runs(sweep_dir)
        table = write_claims(df, sweep_dir, str(sweep_dir))
        figures = write_figures(df, sweep_dir / "figures", str(sweep_dir))
        print(f"\npaper study: {sweep_dir}\n  claims:  {sweep_dir / 'claims.md'}")
        for path in figures:
            print(f"  figure:  {path}")
        print(table[["id", "n_replicates", "effect", "low", "high", "verdict"]].to_string(index=False))
