"""The one logging call site of every stage: a local run record that is always complete,
mirrored to Weights & Biases when asked.

Local record in run_dir (the source of truth for analysis; wandb 0.31 has no reader for offline runs):
  config.json   resolved config, secrets scrubbed        env.json     git sha, versions, host, Slurm ids
  metrics.jsonl one object per log call, flushed         summary.json final metrics (merged)
  status.json   running | completed | failed, error, W&B run id (atomic writes)

W&B never blocks a job (DESIGN §2b, EasyR1 #69, open-instruct #864): any failure (no key, host
unreachable, init timeout, log raising) is warned about once and the job continues local-only.
Only rank 0 (env RANK, default 0) writes anything; other ranks' trackers are no-ops.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import re
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

log = logging.getLogger(__name__)

SECRET_KEY = re.compile(r"(api[_-]?key|token|secret|password|passwd|credential)", re.IGNORECASE)
PACKAGES = ("torch", "transformers", "deepspeed", "hydra-core", "omegaconf", "wandb", "submitit", "rlhf-scaling")
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_PROCID", "SLURM_NODELIST")


def flatten_config(d: dict, sep: str = ".", prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values (W&B filters on flat keys)."""
    out = {}
    for key, value in d.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten_config(value, sep, name))
        else:
            out[name] = value
    return out


def _secret_values() -> list:
    """Values of environment variables whose names look secret (long enough to be worth masking)."""
    return [v for k, v in os.environ.items() if SECRET_KEY.search(k) and v and len(v) >= 4]


def scrub(obj: Any, secrets: Optional[list] = None) -> Any:
    """Replace secret-named keys' values and any occurrence of a secret env value by '***'."""
    secrets = _secret_values() if secrets is None else secrets
    if isinstance(obj, dict):
        return {k: ("***" if SECRET_KEY.search(str(k)) and obj[k] not in (None, "") else scrub(v, secrets))
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub(v, secrets) for v in obj]
    if isinstance(obj, str):
        for s in secrets:
            obj = obj.replace(s, "***")
        return obj
    return obj


def _jsonable(value: Any) -> Any:
    """numpy / torch scalars -> python; non-finite floats stay (JSON NaN/Infinity, pandas reads them)."""
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (ValueError, RuntimeError):
            return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def environment() -> dict:
    """Git sha (and dirty flag) of the package's checkout, versions, host, Slurm ids, command line."""
    repo = Path(__file__).resolve().parent.parent
    git = {}
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=5)
        if sha.returncode == 0:
            git = {"git_sha": sha.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        pass
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        **git, "python": sys.version.split()[0], "versions": versions, "hostname": socket.gethostname(),
        "slurm": {k: os.environ[k] for k in SLURM_VARS if k in os.environ},
        "started_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv,
    }


class RunTracker:
    """Local run record + optional W&B mirror. Use as a context manager: an exception marks the run
    failed (with the scrubbed error message) and is re-raised."""

    def __init__(self, run_dir, config: dict, *, stage: str, mode: str = "disabled", project: str = "rlhf-scaling",
                 entity: Optional[str] = None, group: Optional[str] = None, tags: Sequence[str] = (),
                 name: Optional[str] = None, resume: bool = False, init_timeout: float = 30.0):
        self.run_dir = Path(run_dir)
        self.stage = stage
        self.active = int(os.environ.get("RANK", "0")) == 0
        self._wandb = None
        self._warned = False
        self._step = 0
        self._summary: Dict[str, Any] = {}
        if not self.active:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._metrics_path = self.run_dir / "metrics.jsonl"
        previous = self._read_status() if resume else {}
        if resume and self._metrics_path.is_file():
            self._step = self._last_step() + 1
            summary_path = self.run_dir / "summary.json"
            if summary_path.is_file():
                self._summary = json.loads(summary_path.read_text())
        else:
            self._metrics_path.write_text("")  # a fresh record: exists even if nothing gets logged
        self.config = scrub(config)
        _write_json_atomic(self.run_dir / "config.json", self.config)
        _write_json_atomic(self.run_dir / "env.json", scrub(environment()))
        self._status = {"status": "running", "stage": stage, "error": None,
                        "wandb_run_id": previous.get("wandb_run_id")}
        if mode != "disabled":
            self._start_wandb(mode, project, entity, group, list(tags), name, resume, init_timeout)
        _write_json_atomic(self.run_dir / "status.json", self._status)

    # ------------------------------------------------------------------ local record

    def _read_status(self) -> dict:
        path = self.run_dir / "status.json"
        try:
            return json.loads(path.read_text()) if path.is_file() else {}
        except json.JSONDecodeError:
            return {}

    def _last_step(self) -> int:
        last = -1
        with open(self._metrics_path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    last = max(last, int(json.loads(line).get("_step", last)))
                except (json.JSONDecodeError, TypeError, ValueError):
                    continue  # a line cut by a kill
        return last

    def log(self, metrics: Dict[str, Any], step: Optional[int] = None) -> None:
        """Append one record to metrics.jsonl (flushed), then mirror to W&B."""
        if not self.active:
            return
        if step is not None:
            self._step = int(step)
        record = {"_step": self._step, "_time": time.time(), **{k: _jsonable(v) for k, v in metrics.items()}}
        with open(self._metrics_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
        if self._wandb is not None:
            self._safely(lambda: self._wandb.log({k: v for k, v in record.items() if not k.startswith("_")
                                                  and isinstance(v, (int, float))}, step=self._step))
        self._step += 1

    def define_step(self, prefix: str, step_key: str) -> None:
        """Plot `prefix*` metrics against `step_key` in W&B (the local record keeps every key anyway)."""
        if self._wandb is not None:
            self._safely(lambda: (self._wandb.define_metric(step_key),
                                  self._wandb.define_metric(prefix + "*", step_metric=step_key)))

    def summary(self, **values) -> None:
        if not self.active:
            return
        self._summary.update({k: _jsonable(v) for k, v in values.items()})
        _write_json_atomic(self.run_dir / "summary.json", self._summary)
        if self._wandb is not None:
            self._safely(lambda: self._wandb.summary.update(
                {k: v for k, v in self._summary.items() if isinstance(v, (int, float, str))}))

    def finish(self, status: str = "completed", error: Optional[str] = None) -> None:
        if not self.active:
            return
        self._status.update(status=status, error=scrub(error) if error else None)
        _write_json_atomic(self.run_dir / "status.json", self._status)
        if self._wandb is not None:
            self._safely(lambda: self._wandb.finish(exit_code=0 if status == "completed" else 1))
            self._wandb = None

    def __enter__(self) -> "RunTracker":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None:
            self.finish("completed")
        else:
            self.finish("interrupted" if isinstance(exc, (KeyboardInterrupt, InterruptedError)) else "failed",
                        f"{exc_type.__name__}: {exc}")
        return False

    # ------------------------------------------------------------------ W&B mirror

    def _start_wandb(self, mode, project, entity, group, tags, name, resume, init_timeout) -> None:
        try:
            import wandb

            run_id = self._status.get("wandb_run_id") if resume else None
            self._wandb = wandb.init(
                mode="offline" if mode == "offline" else "online", project=project, entity=entity, group=group,
                job_type=self.stage, name=name, tags=tags, dir=str(self.run_dir),
                config=flatten_config(self.config), id=run_id, resume="allow" if run_id else None,
                settings=wandb.Settings(init_timeout=init_timeout, silent=True),
            )
            self._status["wandb_run_id"] = getattr(self._wandb, "id", None)
        except Exception as err:  # noqa: BLE001 -- W&B must never stop a job
            self._warn(err)
            self._wandb = None

    def _safely(self, fn) -> None:
        try:
            fn()
        except Exception as err:  # noqa: BLE001
            self._warn(err)
            self._wandb = None

    def _warn(self, err: Exception) -> None:
        if not self._warned:
            log.warning("W&B unavailable, continuing with the local record only (%s)",
                        scrub(f"{type(err).__name__}: {err}"))
            self._warned = True
