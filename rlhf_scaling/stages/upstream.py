"""Building missing upstream artifacts in-process (stage.build_upstream=true), for sweeps.

A sweep job asks for, say, PPO against one RM size; with build_upstream it first builds or
reuses the SFT policy, the preference data and its RM. Each build holds its artifact's lock, so
the jobs of one array that need the same SFT policy or data build it once: the first job builds,
the others wait for the lock and reuse it. That orders a study's phases from one command.
"""

from __future__ import annotations

import importlib

from rlhf_scaling.stages.common import proxy_data_cfg

ORDER = ("sft", "data", "rm")
NEEDS = {"dpo": ("sft", "data")}  # direct alignment trains on the preference data itself: no RM


def ensure_upstream(cfg, tracker, before: str) -> None:
    """Run the recipes that come before `before` ("data", "rm", "bon", "ppo" or "dpo"); each reuses
    a finished artifact and only builds what is missing. Each recipe's final facts (e.g. the RM's
    rm/val_accuracy) go into the job's summary: the last *logged* rm/val_accuracy of an early-stopped RM
    is the stopping step's, not the kept weights', and a reused artifact logs no records at all."""
    import torch.distributed as dist

    if before in ("sft", "study", "paper"):
        return  # nothing upstream of SFT; the study and the paper study build their own phases in order
    needed = NEEDS.get(before) or (ORDER[: ORDER.index(before)] if before in ORDER else ORDER)
    plan = [(stage, cfg) for stage in needed]
    rm_cfg = proxy_data_cfg(cfg)
    if "rm" in needed and rm_cfg is not cfg:  # fixed-RM design: the RM comes from another policy's data
        plan = [("sft", cfg)] + [(stage, rm_cfg) for stage in ORDER]
    distributed = dist.is_available() and dist.is_initialized()
    # Under DeepSpeed the upstream stages are single-process work: rank 0 builds, the others wait.
    if not distributed or dist.get_rank() == 0:
        summarised = set()
        for stage, stage_cfg in plan:
            facts = importlib.import_module(f"rlhf_scaling.stages.{stage}").run(stage_cfg, tracker)
            if stage not in summarised:  # fixed-RM design: the job's own SFT policy (even one with no facts,
                summarised.add(stage)    # a pretrained policy), never the RM data's policy
                if facts:
                    tracker.summary(**facts)
    if distributed:
        dist.barrier()
