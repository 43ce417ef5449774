"""Run one stage recipe in this process with its own run record: what `rlhf-scaling stage=<stage>` does
between composing the config and exiting, for tests that build artifacts cheaply or interrupt a recipe."""

from __future__ import annotations

from rlhf_scaling.stages.common import open_tracker


def run_recipe(module, cfg, run_dir, stage: str, **kw) -> dict:
    """module.run(cfg, tracker, **kw) under a tracker on run_dir (resumable); returns the recipe's summary,
    also written to the run's summary.json."""
    with open_tracker(cfg, run_dir, stage, resume=True) as tracker:
        out = module.run(cfg, tracker, **kw)
        tracker.summary(**out)
    return out
