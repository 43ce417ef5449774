"""The Hydra entry point: compose -> validate -> run one stage in the Hydra run folder.

    rlhf-scaling                                  # the embedded miniature study (stage=study)
    rlhf-scaling stage=rm model@rm=tiny-s         # one stage
    rlhf-scaling -m +sweep=rm_size hydra/launcher=slurm slurm=gpu_node   # a sweep as a Slurm array
"""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path
from typing import Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from rlhf_scaling.config import ConfigError, register_configs, validate

CONFIG_PATH = str(Path(__file__).resolve().parent.parent / "conf")
log = logging.getLogger("rlhf_scaling")

register_configs()


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """The config `rlhf-scaling <overrides>` would run, composed and validated (for tests, notebooks)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_PATH, version_base=None):
        cfg = hydra_compose(config_name="config", overrides=list(overrides))
    validate(cfg)
    return cfg


def run_stage(cfg: DictConfig, run_dir: Path) -> dict:
    """Validate the config, then run `cfg.stage.name`'s recipe with a tracker in `run_dir`."""
    validate(cfg)
    from omegaconf import OmegaConf

    from rlhf_scaling.stages.common import open_tracker
    from rlhf_scaling.tracking import completed_summary

    if cfg.stage.skip_completed:  # a resubmitted sweep: this job already ran to completion here
        done = completed_summary(run_dir, OmegaConf.to_container(cfg, resolve=True))
        if done is not None:
            log.info("%s: already completed with this config, not run again (stage.skip_completed=false reruns)", run_dir)
            return done

    if cfg.deepspeed.enabled:  # join the ranks before the tracker reads RANK (rank 0 records)
        from rlhf_scaling.distributed import dist_env_from_environ, init_distributed

        init_distributed(dist_env_from_environ())

    stage = importlib.import_module(f"rlhf_scaling.stages.{cfg.stage.name}")
    with open_tracker(cfg, run_dir, cfg.stage.name, resume=True) as tracker:
        if cfg.stage.build_upstream:
            from rlhf_scaling.stages.upstream import ensure_upstream

            ensure_upstream(cfg, tracker, before=cfg.stage.name)
        summary = stage.run(cfg, tracker)
        tracker.summary(**summary)
    return summary


def _user_errors() -> tuple:
    """Errors caused by the input (config, data, paths), reported in one line without a traceback."""
    from rlhf_scaling.artifacts import MissingArtifact
    from rlhf_scaling.models import CheckpointMismatch

    errors = [ConfigError, MissingArtifact, FileNotFoundError, CheckpointMismatch]
    try:
        from rlhf_scaling.data.loaders import DataError

        errors.append(DataError)
    except ImportError:
        pass
    return tuple(errors)


@hydra.main(version_base=None, config_path=CONFIG_PATH, config_name="config")
def _main(cfg: DictConfig) -> dict:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    # The library's own progress bars (weights loading, shard writing) drown ours.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    _scrub_hydra_record(run_dir)
    try:
        return run_stage(cfg, run_dir)
    except _user_errors() as err:
        from rlhf_scaling.tracking import scrub

        print(f"error: {scrub(str(err))}", file=sys.stderr)  # a path or value may carry a secret
        sys.exit(2)


def _scrub_hydra_record(run_dir: Path) -> None:
    """Hydra's own copy of the config and overrides (<run>/.hydra/*.yaml), secrets masked as in
    our record: an override like `+x=$WANDB_API_KEY` would otherwise sit there in clear."""
    from rlhf_scaling.tracking import scrub

    for path in (run_dir / ".hydra").glob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        clean = scrub(text)
        if clean != text:
            path.write_text(clean, encoding="utf-8")


def main() -> None:
    _main()


if __name__ == "__main__":
    main()
