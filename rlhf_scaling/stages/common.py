"""What every stage recipe sets up the same way: the task's tokenizer and gold reward, the
artifact each stage produces (and the command that builds it), and the run tracker.

Artifact recipes hold exactly the config sections that change the artifact, so a sweep over a
later stage's settings reuses the earlier artifacts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from omegaconf import DictConfig, OmegaConf

from rlhf_scaling.artifacts import Artifact, make_artifact
from rlhf_scaling.config import ConfigError
from rlhf_scaling.data.synthetic import SyntheticTask, build_tokenizer, make_task, sample_prompts
from rlhf_scaling.gold import ModelGold, SyntheticGold
from rlhf_scaling.models import load_tokenizer


def section(cfg: DictConfig, key: str) -> dict:
    """A config section as a plain dict (for recipes, records and logging)."""
    return OmegaConf.to_container(cfg[key], resolve=True)


@dataclass
class TaskSetup:
    """The tokenizer, the synthetic task (None for loaded data) and the gold reward of a job."""

    tokenizer: object
    task: Optional[SyntheticTask]
    gold: object  # .score(prompts, responses) -> Tensor (B,)

    def prompts(self, n: int, seed: int) -> List[str]:
        """n fresh prompts of the synthetic task from a seeded generator."""
        if self.task is None:
            raise ValueError("fresh prompts need task.name=synthetic; loaded data brings its own prompts")
        return sample_prompts(self.task, n, random.Random(seed))


def setup_task(cfg: DictConfig, device: str = "cpu") -> TaskSetup:
    """Tokenizer, task and gold from cfg.task, cfg.policy and cfg.gold."""
    task = None
    if cfg.task.name == "synthetic":
        task = make_task(cfg.task.n_topics, cfg.task.words_per_topic, cfg.task.natural_length,
                         cfg.task.max_response_tokens)
    if cfg.policy.source == "pretrained":
        tokenizer = load_tokenizer(cfg.policy)
    elif task is not None:
        tokenizer = build_tokenizer(task)
    else:
        raise ConfigError(f"policy.source=tiny needs task.name=synthetic (its tokenizer); "
                         f"task.name={cfg.task.name} needs a pretrained policy and its tokenizer")
    if cfg.gold.kind == "synthetic":
        if task is None:
            raise ConfigError("gold.kind=synthetic needs task.name=synthetic")
        gold = SyntheticGold(task)
    else:
        gold = ModelGold(cfg.gold.name_or_path, batch_size=cfg.gold.batch_size, device=device,
                         trust_remote_code=cfg.gold.trust_remote_code)
    return TaskSetup(tokenizer, task, gold)


# ----------------------------------------------------------------------------- artifacts


def sft_artifact(cfg: DictConfig) -> Artifact:
    """The SFT policy: depends on the policy spec, the task and the SFT settings."""
    recipe = {"policy": section(cfg, "policy"), "task": section(cfg, "task"), "sft": section(cfg, "sft"),
              "seed": cfg.seed}
    return make_artifact(cfg.artifacts_dir, "sft", cfg.policy.name, recipe)


def policy_init_path(cfg: DictConfig) -> str:
    """Where the initial (= reference) policy loads from: the SFT artifact for tiny specs, the given
    pretrained weights (an SFT checkpoint) otherwise."""
    if cfg.policy.source == "pretrained":
        return cfg.policy.name_or_path
    return str(sft_artifact(cfg).require(f"rlhf-scaling stage=sft model@policy={cfg.policy.name}"))


def data_artifact(cfg: DictConfig) -> Artifact:
    """Preference data: generated from the init policy (synthetic) or loaded from task.path."""
    recipe = {"task": section(cfg, "task"), "data": section(cfg, "data"), "gold": section(cfg, "gold"),
              "seed": cfg.seed}
    if cfg.task.name == "synthetic":
        recipe["policy_init"] = sft_artifact(cfg).key if cfg.policy.source == "tiny" else cfg.policy.name_or_path
    name = f"{cfg.task.name}-k{cfg.data.responses_per_prompt}"
    return make_artifact(cfg.artifacts_dir, "data", name, recipe)


def rm_artifact(cfg: DictConfig) -> Artifact:
    """A trained proxy RM (or ensemble): depends on the data, the RM spec and its training settings."""
    recipe = {"data": data_artifact(cfg).key, "rm": section(cfg, "rm"), "rm_train": section(cfg, "rm_train"),
              "seed": cfg.seed}
    return make_artifact(cfg.artifacts_dir, "rm", f"{cfg.rm.name}-{cfg.rm_train.loss}", recipe)


def build_command(stage: str, cfg: DictConfig) -> str:
    """The command line that builds `stage`'s artifact for this config (for MissingArtifact)."""
    parts = [f"rlhf-scaling stage={stage}", f"model@policy={cfg.policy.name}", f"task={cfg.task.name}"]
    if stage == "rm":
        parts.append(f"model@rm={cfg.rm.name}")
    parts.append(f"data.responses_per_prompt={cfg.data.responses_per_prompt}")
    parts.append(f"data.comparison_budget={cfg.data.comparison_budget}")
    parts.append(f"artifacts_dir={cfg.artifacts_dir}")
    return " ".join(parts)


# ----------------------------------------------------------------------------- tracking


def open_tracker(cfg: DictConfig, run_dir: Path, stage: str, name: Optional[str] = None, resume: bool = False):
    """The run's local record (always) and W&B mirror (per cfg.tracking); group = experiment."""
    from rlhf_scaling.tracking import RunTracker

    return RunTracker(
        run_dir, OmegaConf.to_container(cfg, resolve=True), stage=stage, mode=cfg.tracking.mode,
        project=cfg.tracking.project, entity=cfg.tracking.entity,
        group=cfg.tracking.group or cfg.experiment, tags=list(cfg.tracking.tags),
        name=name or Path(run_dir).name, resume=resume,
    )
