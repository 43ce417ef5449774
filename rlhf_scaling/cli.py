"""The Hydra entry point: compose -> validate -> run one stage in the Hydra run folder.

    rlhf-scaling                                  # the embedded miniature study (stage=study)
    rlhf-scaling stage=rm model@rm=tiny-s         # one stage
    rlhf-scaling -m +sweep=rm_size hydra/launcher=slurm slurm=gpu_node   # a sweep as a Slurm array

A run's folder is named by its config: `outputs/<experiment>/<stage>/<run id>`, the run id a
hash of the resolved config without the keys that do not change results (tracking.NOT_IDENTITY),
computed by the `rlhf_run_id` resolver in `hydra.run.dir` (and in the multirun subdir). The
resolver validates the config first, so a bad value or a name that would escape a folder fails
before Hydra creates anything. The same command again therefore finds its own folder: it
resumes an interrupted run, or reports a completed one's summary; a second copy started while
the first still runs is refused (the folder's lock); two different configs never share a folder.

Errors from the input (composition, validation, data, paths) are one line on stderr, exit 2.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from rlhf_scaling.config import ConfigError, register_configs, validate

# The config tree ships inside the package (package data), so an installed CLI finds it anywhere.
CONFIG_PATH = str(Path(__file__).resolve().parent / "conf")
log = logging.getLogger("rlhf_scaling")

register_configs()


# ----------------------------------------------------------------------------- run folder names


def _checked_name(key: str, *, _root_) -> str:
    """`${rlhf_name:experiment}`: the value of `key`, refused unless it is a plain folder name."""
    from rlhf_scaling.config import _check_name

    value = str(OmegaConf.select(_root_, key))
    _check_name(key, value)
    return value


def _run_id(*, _root_) -> str:
    """`${rlhf_run_id:}`: validate the job's config, then hash what names the run (tracking.run_id)."""
    from rlhf_scaling.tracking import run_id

    validate(_root_)
    return run_id({k: OmegaConf.to_container(_root_[k], resolve=True) if OmegaConf.is_config(_root_[k]) else _root_[k]
                   for k in _root_ if k != "hydra"})


def _shortened(text: str, limit: int = 160) -> str:
    """`${rlhf_short:${hydra:job.override_dirname}}`: the overrides part of a sweep job's folder
    name, cut to `limit` characters (a folder name may hold 255 bytes; the run id that follows it
    keeps the name unique)."""
    text = str(text)
    return text if len(text.encode()) <= limit else text.encode()[:limit].decode(errors="ignore") + "..."


OmegaConf.register_new_resolver("rlhf_name", _checked_name, replace=True)
OmegaConf.register_new_resolver("rlhf_short", _shortened, replace=True)
OmegaConf.register_new_resolver("rlhf_run_id", _run_id, replace=True)


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """The config `rlhf-scaling <overrides>` would run, composed and validated (for tests, notebooks)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_PATH, version_base=None):
        cfg = hydra_compose(config_name="config", overrides=list(overrides))
    validate(cfg)
    return cfg


class RunFolderInUse(RuntimeError):
    """Another process runs this same config in this run folder right now."""


def run_stage(cfg: DictConfig, run_dir: Path) -> dict:
    """Validate the config, then run `cfg.stage.name`'s recipe with a tracker in `run_dir`.

    The folder is this run's alone: a record of a different config there is a ConfigError, and
    while the job runs it holds `run_dir/.lock` (rank 0), so a second copy raises RunFolderInUse."""
    validate(cfg)
    from rlhf_scaling.tracking import identity_differences

    config = OmegaConf.to_container(cfg, resolve=True)
    differ = identity_differences(run_dir, config)
    if differ:
        raise ConfigError(f"hydra.run.dir: {run_dir} holds the record of a different run (it differs in "
                          f"{', '.join(differ[:5])}{', ...' if len(differ) > 5 else ''}); give another folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.deepspeed.enabled:  # join the ranks first: whether rank 0 got the folder is every rank's answer
        from rlhf_scaling.distributed import dist_env_from_environ, init_distributed

        init_distributed(dist_env_from_environ())
    with _run_folder_lock(cfg, run_dir):
        return _run_locked(cfg, run_dir, config)


@contextlib.contextmanager
def _run_folder_lock(cfg: DictConfig, run_dir: Path):
    """Hold `run_dir/.lock` (rank 0) for the job; RunFolderInUse on EVERY rank when another copy
    holds it, so no rank of a refused DeepSpeed job is left waiting for a rank 0 that has gone."""
    from rlhf_scaling.artifacts import LockHeld, locked

    with contextlib.ExitStack() as stack:
        busy = False
        if _main_rank(cfg):
            try:
                stack.enter_context(locked(run_dir / ".lock", wait=False))
            except LockHeld:
                busy = True
        if cfg.deepspeed.enabled:
            from rlhf_scaling.distributed import from_rank0

            busy = from_rank0(busy)
        if busy:
            raise RunFolderInUse(f"{run_dir} is in use by another running copy of this command; "
                                 "run it again once that one has finished, to resume it or to get its summary")
        yield


def _main_rank(cfg: DictConfig) -> bool:
    """Whether this process is rank 0 of its job (the one that owns the run folder and its record)."""
    if not cfg.deepspeed.enabled:
        return True
    from rlhf_scaling.distributed import dist_env_from_environ

    return dist_env_from_environ().rank == 0


def _run_locked(cfg, run_dir, config) -> dict:
    from rlhf_scaling.tracking import completed_summary

    if cfg.stage.skip_completed:  # a rerun or resubmitted sweep: this job already ran to completion here
        done = completed_summary(run_dir, config)
        if done is not None:
            log.info("%s: already completed with this config, not run again (stage.skip_completed=false "
                     "reruns it); its summary:\n%s", run_dir, _summary_lines(done))
            return done

    # Only a job that runs its stage imports torch and transformers (seconds): a completed run's
    # summary, a folder in use or a config error are answered without them.
    from transformers.utils import logging as hf_logging

    from rlhf_scaling.stages.common import open_tracker

    hf_logging.disable_progress_bar()  # the library's own bars (weights loading, shard writing) drown ours
    stage = importlib.import_module(f"rlhf_scaling.stages.{cfg.stage.name}")
    with open_tracker(cfg, run_dir, cfg.stage.name, resume=True) as tracker:
        if cfg.stage.build_upstream:
            from rlhf_scaling.stages.upstream import ensure_upstream

            ensure_upstream(cfg, tracker, before=cfg.stage.name)
        summary = stage.run(cfg, tracker)
        tracker.summary(**summary)
    return summary


def _summary_lines(summary: dict) -> str:
    """The recorded summary, one `key: value` per line (numbers, strings and null values)."""
    return "\n".join(f"  {k}: {v}" for k, v in sorted(summary.items()) if not isinstance(v, (dict, list)))


def _user_errors() -> tuple:
    """Errors caused by the input (config, data, paths), reported in one line without a traceback.

    Only the modules already imported can have raised theirs: checking no others keeps an input
    error found at composition from importing torch and transformers (seconds) to report it."""
    from rlhf_scaling.artifacts import MissingArtifact

    errors = [ConfigError, MissingArtifact, FileNotFoundError, RunFolderInUse]
    for module, name in (("rlhf_scaling.models", "CheckpointMismatch"), ("rlhf_scaling.data.loaders", "DataError")):
        if module in sys.modules and hasattr(sys.modules[module], name):
            errors.append(getattr(sys.modules[module], name))
    return tuple(errors)


# Set once Hydra has composed the config and the task function runs: from then on an exception
# that reaches `main` is a bug (input errors are reported inside `_main`), never a composition error.
_TASK_STATE = {"started": False}


@hydra.main(version_base=None, config_path=CONFIG_PATH, config_name="config")
def _main(cfg: DictConfig) -> dict:
    _TASK_STATE["started"] = True
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    _scrub_hydra_record(run_dir)
    try:
        summary = run_stage(cfg, run_dir)
        _TASK_STATE["started"] = False  # a multirun's next job is composed again
        return summary
    except _user_errors() as err:
        from rlhf_scaling.tracking import scrub

        _remove_if_no_record(run_dir)
        print(f"error: {scrub(str(err))}", file=sys.stderr)  # a path or value may carry a secret
        sys.exit(2)


def _remove_if_no_record(run_dir: Path) -> None:
    """Remove a run folder that holds only Hydra's own files (.hydra/, the job log): a job refused
    before its record began (an explicit hydra.run.dir skips the resolver's early validation)
    leaves nothing behind. A folder with a record (status.json) keeps it: it says what failed."""
    hydra_files = {".hydra", f"{HydraConfig.get().job.name}.log"}
    try:
        entries = {p.name for p in run_dir.iterdir()}
    except OSError:
        return
    if entries <= hydra_files:
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)


def _scrub_hydra_record(run_dir: Path) -> None:
    """Hydra's own copy of the config and overrides (<run>/.hydra/*.yaml), secrets masked as in
    our record: an override like `+x=$WANDB_API_KEY` would otherwise sit there in clear."""
    from rlhf_scaling.tracking import scrub

    for path in (run_dir / ".hydra").glob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        clean = scrub(text)
        if clean != text:
            path.write_text(clean, encoding="utf-8")


def _one_line(err: BaseException) -> str:
    """An input error as one line: Hydra's and OmegaConf's messages span several lines (the
    override, its cause, a hint, then `full_key:`/`object_type=`/search-path details left out)."""
    text = str(err)
    if err.__cause__ is not None and str(err.__cause__) not in text:
        text += "\n" + str(err.__cause__)  # "Error merging override seed=abc" <- "Value 'abc' ... Integer"
    text = text.split("Config search path:")[0]
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith(("full_key:", "object_type=", "reference_type="))]
    return " ".join(line if line.endswith((".", ":", ";")) else line + ";" for line in lines).rstrip(";")


def _input_error(err: BaseException):
    """The user-input error behind `err` (itself, or one it was raised from: a resolver's
    ConfigError reaches us wrapped by OmegaConf), or None for a bug."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    seen = err
    while seen is not None:
        if isinstance(seen, _user_errors()):
            return seen
        seen = seen.__cause__ or seen.__context__
    if isinstance(err, (HydraException, OmegaConfBaseException)):  # composition: unknown key, bad type
        return err
    if isinstance(err, OSError) and err.errno == errno.ENAMETOOLONG:  # e.g. a long hydra.run.dir
        return err
    return None


def main() -> None:
    """`rlhf-scaling`: Hydra's entry with input errors as one line and exit status 2.

    HYDRA_FULL_ERROR=1 makes Hydra raise errors instead of printing them and exiting 1; input
    errors are then reported here, and anything else (a bug) keeps its full traceback."""
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    _TASK_STATE["started"] = False
    try:
        _main()
    except Exception as err:  # noqa: BLE001 -- sorted below: input errors in one line, bugs re-raised
        cause = None if _TASK_STATE["started"] else _input_error(err)
        if cause is None:
            raise
        from rlhf_scaling.tracking import scrub

        print(f"error: {scrub(_one_line(cause))}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
