"""The one logging call site of every stage: a local run record that is always complete,
mirrored to Weights & Biases when asked.

Local record in run_dir (the source of truth for analysis; wandb 0.31 cannot read offline runs back):
  config.json    the resolved config as given, secrets scrubbed
  inputs.json    content digests of the local files and folders the config names (data, models):
                 with the config, the run's identity (an edited data file is a different run)
  env.json       git sha + dirty flag, package versions, host, Slurm ids, start time, command line
  metrics.jsonl  one {"_step", "_time", **metrics} object per log() call, flushed at once, so a
                 killed job keeps everything logged so far (resume=True appends; a resumed job's
                 first record of a step namespace replaces the records it repeats, see `log`)
  summary.json   final metrics, merged across summary() calls (and across resumes)
  status.json    running | completed | failed | interrupted, the error, the W&B run id
JSON files are replaced atomically (temp file + os.replace): a reader never sees half a file.
Every record is strict JSON: a non-finite float (NaN, ±inf) is written as null (`strict_json`), so
any JSON parser reads it; pandas reads null as NaN.

W&B never stops a job and never costs a local metric (DESIGN §2b; EasyR1 #69, open-instruct #864):
any failure (import error, no or bad key, unreachable host, init timeout, a raising log/summary/
finish) is warned about once through `logging` and the job continues local-only. After a failed
wandb.init, later trackers in the same process (the study's sub-jobs) skip W&B instead of each
waiting out the init timeout again.

Ranks: only rank 0 (env RANK; unset = 0) records. Trackers on other ranks create no folder, write
no file and never import wandb; their methods are no-ops, so every rank can run the same code.

Secrets: a value whose key looks secret (api_key, token, secret, password, ...; see `is_secret_key`)
becomes "***", and so does any string holding the value of a secret-named environment variable
(WANDB_API_KEY, HF_TOKEN, ...), in config.json, env.json (the command line too), status.json
(error messages) and the config sent to W&B. W&B's own run metadata records sys.argv: pass keys
through the environment, never on the command line.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import os
import re
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, Collection, Dict, List, Optional, Sequence, Union

log = logging.getLogger(__name__)

MODES = ("disabled", "offline", "online")
PACKAGES = ("torch", "transformers", "deepspeed", "hydra-core", "omegaconf", "wandb", "submitit", "numpy",
            "rlhf-scaling")
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_PROCID", "SLURM_JOB_NODELIST")
MASK = "***"

# Set by the first failed wandb.init of this process; later trackers then stay local-only at once.
_wandb_unavailable: Optional[str] = None


# ----------------------------------------------------------------------------- config helpers


def flatten_config(d: Mapping, prefix: str = "", keep: Collection[str] = ()) -> dict:
    """{"rm_train": {"lr": 1e-3}} -> {"rm_train.lr": 1e-3}. Lists, empty dicts and the dotted keys
    in `keep` stay values; keys already dotted (W&B's flat config) pass through.

    W&B's run table filters and groups on top-level config keys, so the config goes there flat; the
    runs table (analysis/runs.py) and the key listing (config_keys.py) flatten with this too."""
    out = {}
    for key, value in d.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value and name not in keep:
            out.update(flatten_config(value, name, keep))
        else:
            out[name] = value
    return out


# ----------------------------------------------------------------------------- secrets

# A key is secret when one of its words is below, when it ends in "token" (HF_TOKEN, github_token,
# use_auth_token; not max_new_tokens, pad_token_id, TOKENIZERS_PARALLELISM), or when it holds
# api/access/private + key (WANDB_API_KEY, apiKey, AWS_SECRET_ACCESS_KEY).
_SECRET_WORDS = {"secret", "secrets", "password", "passwd", "passphrase", "credential", "credentials", "apikey"}
_KEY_QUALIFIERS = {"api", "access", "private", "auth"}
# Tokenizer settings named "<x>_token" hold special tokens such as "</s>", not credentials.
_SPECIAL_TOKENS = {"pad", "bos", "eos", "unk", "sep", "cls", "mask", "special", "start", "end", "stop"}
_MIN_SECRET_LEN = 6  # shorter env values ("1", "true") would mask ordinary strings and protect nothing
_KEY_VALUE = re.compile(r"([A-Za-z_][\w.\-]*)=(\S+)")  # "tracking.api_key=abc" in argv or messages


def is_secret_key(key: Any) -> bool:
    """Whether a config key or environment variable name names a credential (case-insensitive)."""
    words = re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(key)).lower())
    words = [w for w in words if w]
    if not words:
        return False
    if _SECRET_WORDS.intersection(words):
        return True
    if words[-1] == "token":
        return len(words) == 1 or words[-2] not in _SPECIAL_TOKENS
    return any(a in _KEY_QUALIFIERS and b == "key" for a, b in zip(words, words[1:]))


def secret_env_values() -> List[str]:
    """Values of the set environment variables whose names look secret, longest first."""
    values = {v for k, v in os.environ.items() if is_secret_key(k) and len(v) >= _MIN_SECRET_LEN}
    return sorted(values, key=len, reverse=True)


def scrub(obj: Any, secrets: Optional[Sequence[str]] = None) -> Any:
    """A copy of `obj` (dicts, lists, strings, scalars) with secrets replaced by "***": the value of
    every secret-named key (None and "" stay, they say "not set"), `key=value` pairs in strings whose
    key is secret, and every occurrence of a secret environment variable's value."""
    secrets = secret_env_values() if secrets is None else secrets
    if isinstance(obj, Mapping):
        return {k: (MASK if is_secret_key(k) and v not in (None, "") else scrub(v, secrets)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub(v, secrets) for v in obj]
    if isinstance(obj, str):
        for value in secrets:
            obj = obj.replace(value, MASK)
        return _KEY_VALUE.sub(lambda m: f"{m.group(1)}={MASK}" if is_secret_key(m.group(1).split(".")[-1])
                              else m.group(0), obj)
    return obj


# ----------------------------------------------------------------------------- local record helpers


def _jsonable(value: Any) -> Any:
    """Python scalars pass; numpy/torch scalars -> .item(); containers recursively; the rest str().
    Non-finite floats stay (see `strict_json` for writing them)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (ValueError, RuntimeError, TypeError):  # arrays of more than one element
            pass
    if hasattr(value, "tolist") and callable(value.tolist):
        return value.tolist()
    return str(value)


def finite_or_none(obj: Any) -> Any:
    """A copy of `obj` with every non-finite float (NaN, inf, -inf) replaced by None, recursively
    through dicts, lists and tuples: JSON has no literal for them (Python's json writes NaN and
    Infinity, which strict parsers such as jq, JavaScript and Go reject)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def strict_json(obj: Any, **kwargs) -> str:
    """json.dumps of `obj` as strict JSON: non-finite floats become null (allow_nan=False then
    guarantees no NaN/Infinity literal can slip through); other objects fall back to str()."""
    return json.dumps(finite_or_none(_jsonable(obj)), allow_nan=False, default=str, **kwargs)


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(strict_json(obj, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
        return value if isinstance(value, dict) else {}
    except (OSError, json.JSONDecodeError):
        return {}


# Keys that say how a run is watched, launched or resumed, not what it computes: two configs that
# differ only here are the same run (same run folder, same record), and a resubmission may change them.
NOT_IDENTITY = ("tracking", "progress", "slurm", "hydra", "stage.skip_completed", "stage.build_upstream")


def run_identity(config: Mapping, inputs: Optional[Mapping] = None) -> dict:
    """The flat {key: value} of a resolved config that names a run: secrets scrubbed (as recorded
    in config.json), the `NOT_IDENTITY` keys left out, plus `inputs.<key>`: the content digests of
    the local files and folders it reads (fingerprint.input_digests; recorded in inputs.json)."""
    flat = flatten_config(finite_or_none(scrub(_jsonable(dict(config)))))
    flat = {k: v for k, v in flat.items() if not any(k == n or k.startswith(n + ".") for n in NOT_IDENTITY)}
    flat.update({f"inputs.{k}": v for k, v in (inputs or {}).items()})
    return flat


def run_id(config: Mapping) -> str:
    """12 hex chars of SHA-256 over the run's identity (`run_identity`, with its inputs' content as
    they are now): the name of its run folder."""
    from rlhf_scaling.fingerprint import input_digests

    blob = json.dumps(run_identity(config, input_digests(config)), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def identity_differences(run_dir: Path, config: Mapping) -> List[str]:
    """The keys whose values differ between the config recorded in `run_dir` and `config` (identity
    keys only); [] when they are the same run or when no record exists yet."""
    recorded = _read_json(Path(run_dir) / "config.json")
    if not recorded:
        return []
    from rlhf_scaling.fingerprint import input_digests

    mine = run_identity(config, input_digests(config))
    theirs = run_identity(recorded, _read_json(Path(run_dir) / "inputs.json"))
    return sorted(k for k in set(mine) | set(theirs) if mine.get(k, "<unset>") != theirs.get(k, "<unset>"))


def completed_summary(run_dir: Path, config: Mapping) -> Optional[dict]:
    """The summary of a run already completed in `run_dir` with this same config (resolved, as the
    tracker would record it; the `NOT_IDENTITY` keys aside), or None: the test a job uses to skip
    work that a rerun or a resubmitted sweep has already done."""
    run_dir = Path(run_dir)
    if _read_json(run_dir / "status.json").get("status") != "completed":
        return None
    if not (run_dir / "config.json").is_file() or identity_differences(run_dir, config):
        return None
    return _read_json(run_dir / "summary.json")


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _git(cwd: Path) -> dict:
    """sha, dirty flag (tracked files only) and root of the git checkout holding `cwd`, or {}."""
    def run(*args: str) -> Optional[str]:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5)
        return proc.stdout.strip() if proc.returncode == 0 else None

    try:
        sha = run("rev-parse", "HEAD")
        if sha is None:
            return {}
        dirty = run("status", "--porcelain", "--untracked-files=no")
        return {"git_sha": sha, "git_dirty": None if dirty is None else bool(dirty),
                "git_root": run("rev-parse", "--show-toplevel")}
    except (OSError, subprocess.SubprocessError):  # no git binary, or it hung
        return {}


def environment() -> dict:
    """Where and with what this job runs: git state of the checkout holding the package (else of the
    working directory), package versions, host, Slurm ids present, start time (UTC), command line."""
    git = _git(Path(__file__).resolve().parent) or _git(Path.cwd())
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "git_sha": git.get("git_sha"), "git_dirty": git.get("git_dirty"), "git_root": git.get("git_root"),
        "python": sys.version.split()[0], "versions": versions, "hostname": socket.gethostname(),
        "slurm": {k: os.environ[k] for k in SLURM_VARS if k in os.environ},
        "started_utc": _utc_now(), "cwd": os.getcwd(), "argv": list(sys.argv), "executable": sys.executable,
    }


def _rank() -> int:
    try:
        return int(os.environ.get("RANK", "0") or 0)
    except ValueError:
        return 0


# ----------------------------------------------------------------------------- the tracker


class RunTracker:
    """Local run record + optional W&B mirror for one job (one stage).

    mode: "disabled" (local record only; wandb is never imported), "offline" (W&B run files under
    run_dir/wandb/, upload later with `wandb sync`), "online". group = the sweep or study,
    job_type = `stage`; the config goes to W&B flat ("rm_train.lr").
    resume=True appends to metrics.jsonl (steps continue after the last one recorded), keeps the
    summary, and continues the W&B run whose id status.json holds (online only: W&B cannot resume
    offline runs, so an offline resume starts a new offline run).
    init_timeout: seconds wandb.init may take before the job goes on local-only (W&B's default is 90).

    Use as a context manager: leaving it normally marks the run completed; an exception marks it
    failed (KeyboardInterrupt, or SystemExit ≠ 0 from a preemption stop: interrupted) with the scrubbed message, and is re-raised."""

    def __init__(self, run_dir: Union[str, Path], config: dict, *, stage: str, mode: str = "disabled",
                 project: str = "rlhf-scaling", entity: Optional[str] = None, group: Optional[str] = None,
                 tags: Sequence[str] = (), name: Optional[str] = None, resume: bool = False,
                 init_timeout: float = 30.0):
        if mode not in MODES:
            raise ValueError(f"tracking mode must be one of {MODES}, got {mode!r}")
        self.run_dir = Path(run_dir)
        self.stage = stage
        self.mode = mode
        self.active = _rank() == 0
        self.config = scrub(_jsonable(dict(config)))
        self._run = None  # the wandb Run, while the mirror works
        self._warned = False
        self._finished = False
        self._step = 0
        self._summary: Dict[str, Any] = {}
        self._step_keys: set = set()  # from define_step: "ppo/step", "rm/step", ...
        self._series: Dict[str, tuple] = {}  # step key -> keys naming its series (define_step)
        self._resumed = False  # this job continues a record an earlier attempt left
        self._reconciled: set = set()  # step keys whose repeated records this attempt has replaced
        if not self.active:
            return

        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._metrics_path = self.run_dir / "metrics.jsonl"
        previous = _read_json(self.run_dir / "status.json") if resume else {}
        if resume and self._metrics_path.is_file():
            self._step = self._continue_metrics() + 1
            self._resumed = self._step > 0
            self._summary = _read_json(self.run_dir / "summary.json")
        else:
            self._metrics_path.write_text("", encoding="utf-8")  # a fresh record exists even if nothing is logged
        _write_json_atomic(self.run_dir / "config.json", self.config)
        from rlhf_scaling.fingerprint import input_digests  # the content this run reads: part of its identity

        _write_json_atomic(self.run_dir / "inputs.json", input_digests(dict(config)))
        _write_json_atomic(self.run_dir / "env.json", scrub(environment()))
        _write_json_atomic(self.run_dir / "summary.json", self._summary)
        self._status = {"status": "running", "stage": stage, "error": None, "wandb_mode": mode,
                        "wandb_run_id": previous.get("wandb_run_id"),
                        "attempt": int(previous.get("attempt") or 0) + 1 if resume else 1,
                        "started_utc": _utc_now(), "finished_utc": None}
        _write_json_atomic(self.run_dir / "status.json", self._status)
        if mode != "disabled":
            self._start_wandb(mode, project, entity, group, list(tags), name, resume, init_timeout)

    # ------------------------------------------------------------------ local record (+ mirror)

    def define_step(self, prefix: str, step_key: str, series: Sequence[str] = ()) -> None:
        """Plot `prefix`* metrics against `step_key` in W&B, e.g. ("ppo/", "ppo/step"), and make
        `step_key` a step of the local record: after a resume, the first record carrying it
        replaces the records the interrupted attempt logged from that step on (see `log`).
        series: keys that tell apart curves sharing `step_key` (e.g. "rm/member" of an ensemble):
        only records of the resumed record's own series are ever replaced."""
        self._step_keys.add(step_key)
        self._series[step_key] = tuple(series)
        if self._run is not None:
            self._mirror(lambda: (self._run.define_metric(step_key),
                                  self._run.define_metric(prefix + "*", step_metric=step_key)))

    def log(self, metrics: Dict[str, Union[float, int]], step: Optional[int] = None) -> None:
        """Append {"_step", "_time", **metrics} to metrics.jsonl (flushed), then mirror the numbers.

        step: this record's step (default: one more than the last); steps should increase, as W&B
        drops records whose step goes back.

        Resumed jobs: a job resumes from its last checkpoint, so it logs again the iterations that
        the interrupted attempt logged after that checkpoint. The first record of this attempt that
        carries a step key (`define_step`) at value s removes the earlier records that repeat it:
        those of the record's last run of that key (its trailing increasing sequence, so an earlier
        ensemble member counting from 0 again is kept) with a value >= s. Every iteration then
        appears once, with the values of the attempt that finished it."""
        if not self.active:
            return
        if step is not None:
            self._step = int(step)
        record = {"_step": self._step, "_time": time.time()}
        record.update({str(k): _jsonable(v) for k, v in metrics.items() if str(k) not in ("_step", "_time")})
        if self._resumed:
            for key in sorted(self._step_keys.intersection(record) - self._reconciled):
                self._reconciled.add(key)
                self._drop_repeated(key, record[key], {k: record.get(k) for k in self._series.get(key, ())})
        with open(self._metrics_path, "a", encoding="utf-8") as fh:
            fh.write(strict_json(record) + "\n")
            fh.flush()
        if self._run is not None:
            numbers = {k: v for k, v in record.items() if not k.startswith("_") and isinstance(v, (int, float))}
            self._mirror(lambda: self._run.log(numbers, step=record["_step"]))
        self._step += 1

    def summary(self, **values) -> None:
        """Merge final values into summary.json (and the W&B run summary)."""
        if not self.active:
            return
        self._summary.update({k: _jsonable(v) for k, v in values.items()})
        _write_json_atomic(self.run_dir / "summary.json", self._summary)
        if self._run is not None:
            shown = {k: v for k, v in self._summary.items() if isinstance(v, (int, float, str))}
            self._mirror(lambda: self._run.summary.update(shown))

    def finish(self, status: str = "completed", error: Optional[str] = None) -> None:
        """Write the final status (once; later calls are ignored) and finish the W&B run."""
        if not self.active or self._finished:
            return
        self._finished = True
        self._status.update(status=status, error=scrub(error) if error else None, finished_utc=_utc_now())
        _write_json_atomic(self.run_dir / "status.json", self._status)
        if self._run is not None:
            self._mirror(lambda: self._run.finish(exit_code=0 if status == "completed" else 1))
            self._run = None

    def __enter__(self) -> "RunTracker":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None or (isinstance(exc, SystemExit) and exc.code in (0, None)):
            self.finish("completed")
        else:
            # SystemExit inside a job is a preemption stop (rlhf_scaling/preemption.py): resumable.
            status = "interrupted" if isinstance(exc, (KeyboardInterrupt, SystemExit)) else "failed"
            if self.active and not self._finished:
                self._status["traceback"] = scrub("".join(traceback.format_exception(exc_type, exc, tb))[-4000:])
            self.finish(status, f"{exc_type.__name__}: {exc}")
        return False

    def _continue_metrics(self) -> int:
        """The last step recorded; ends the file with a newline, so a line cut by a kill stays one
        unreadable line (skipped by readers) instead of swallowing the next record."""
        last = -1
        with open(self._metrics_path, "rb") as fh:
            data = fh.read()
        for line in data.decode("utf-8", errors="replace").splitlines():
            try:
                last = max(last, int(json.loads(line)["_step"]))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
        if data and not data.endswith(b"\n"):
            with open(self._metrics_path, "a", encoding="utf-8") as fh:
                fh.write("\n")
        return last

    def _drop_repeated(self, key: str, start: Any, series: Mapping[str, Any]) -> None:
        """Rewrite metrics.jsonl (atomically) without the trailing run of `key` records whose value
        is >= `start`, stopping at a record of another series (`series`: key -> this record's value);
        unreadable lines and records without `key` stay where they are."""
        try:
            start = float(start)
        except (TypeError, ValueError):
            return
        lines = self._metrics_path.read_text(encoding="utf-8").splitlines()
        drop, later = [], None  # walk back over the last increasing run of `key`
        for i in range(len(lines) - 1, -1, -1):
            try:
                earlier = json.loads(lines[i])
                value = float(earlier[key])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
            if value < start or (later is not None and value >= later) \
                    or any(earlier.get(k) != v for k, v in series.items()):
                break
            drop.append(i)
            later = value
        if drop:
            dropped = set(drop)
            kept = [line for i, line in enumerate(lines) if i not in dropped]
            tmp = self._metrics_path.with_name(f".{self._metrics_path.name}.{os.getpid()}.tmp")
            tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
            os.replace(tmp, self._metrics_path)
            log.info("resumed at %s=%s: replaced %d records the interrupted attempt logged", key, start, len(drop))

    # ------------------------------------------------------------------ W&B mirror (boilerplate)

    def _start_wandb(self, mode, project, entity, group, tags, name, resume, init_timeout) -> None:
        global _wandb_unavailable
        if _wandb_unavailable is not None:
            log.info("W&B skipped for %s: it failed earlier in this process (%s)", self.run_dir, _wandb_unavailable)
            return
        run_id = self._status["wandb_run_id"] if resume and mode == "online" else None
        try:
            import wandb

            self._run = wandb.init(
                mode=mode, project=project, entity=entity, group=group, job_type=self.stage, name=name,
                tags=tags, dir=str(self.run_dir), config=flatten_config(self.config),
                id=run_id, resume="allow" if run_id else None,
                # create_new: a study opens sub-job trackers while its own run is active; W&B's
                # default would hand back (and later finish) the study's run.
                settings=wandb.Settings(init_timeout=init_timeout, reinit="create_new"),
            )
            self._status["wandb_run_id"] = self._run.id
        except Exception as err:  # noqa: BLE001 -- W&B must never stop a job
            _wandb_unavailable = scrub(f"{type(err).__name__}: {err}")
            self._run = None
            self._warn(err)
        _write_json_atomic(self.run_dir / "status.json", self._status)

    def _mirror(self, fn) -> None:
        """Run one W&B call; on any error warn once and continue local-only."""
        try:
            fn()
        except Exception as err:  # noqa: BLE001 -- W&B must never stop a job
            self._warn(err)
            run, self._run = self._run, None
            try:
                if run is not None:
                    run.finish(exit_code=1)
            except Exception:  # noqa: BLE001
                pass

    def _warn(self, err: Exception) -> None:
        if not self._warned:
            self._warned = True
            log.warning("W&B unavailable, continuing with the local record only in %s (%s)", self.run_dir,
                        scrub(f"{type(err).__name__}: {err}"))
