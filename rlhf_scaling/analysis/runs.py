"""Fetch: one tidy runs table from local run records or from a W&B project (DESIGN §3, §5.10).

A run is any folder holding config.json and metrics.jsonl, found recursively: a single job, a
study's sub-job (sft/, data/, rm_<name>/, bon_<name>/, ppo_<name>/) or a Hydra sweep point. The
table has one row per (run, logged record), sorted by (run_id, _step):

    run_id         local: the run folder relative to the root; W&B: "<group>/<name>"
    run_name       the folder name (= the W&B run name the tracker sets)
    group          W&B group: config tracking.group, else config experiment
    stage          sft | data | rm | bon | ppo | study (= W&B job_type)
    status         completed | failed | interrupted | running | unknown
    wandb_run_id   W&B's run id (local: from status.json; None when W&B was off)
    _step          the record's step (W&B's _step; the tracker logs with step=_step)
    <metric>       every metric key as logged (rm/val_accuracy, bon/gold, ppo/kl, ...)
    config.<key>   the resolved config flattened with dots; list/dict values as sorted JSON text
    summary.<key>  W&B summary semantics: the last logged value of every metric, overlaid by the
                   final metrics the job reported (summary.json); scalars only

Both sources give the same columns and values for the same runs: the local record is the source
of truth (offline W&B runs cannot be read back), W&B is the way to read a cluster's runs remotely.
This module reads files only; of the tracker that writes them it imports only its flattening
(tracking.flatten_config, what W&B's flat config was made with), so both sources flatten alike.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np
import pandas as pd

from rlhf_scaling.tracking import flatten_config

META = ["run_id", "run_name", "group", "stage", "status", "wandb_run_id"]
# W&B run states -> the local record's status words.
WANDB_STATES = {"finished": "completed", "failed": "failed", "crashed": "failed", "killed": "interrupted",
                "preempted": "interrupted", "preempting": "interrupted", "running": "running", "pending": "running"}
# Config keys shown in the summary table whether or not they vary (when present).
KEY_CONFIG = ["experiment", "policy.name", "rm.name", "rm.n_params", "seed",
              "data.responses_per_prompt", "data.comparison_budget", "bon.n_max", "ppo.samples_per_prompt"]
_JSON_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


# ----------------------------------------------------------------------------- shared row layout


def _cell(value: Any) -> Any:
    """A table cell: lists and dicts as sorted JSON text (hashable, comparable across sources)."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True)
    return value


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _summary(records: List[dict], reported: dict) -> Dict[str, Any]:
    """W&B summary semantics: last logged value per metric, then the job's reported summary on top."""
    out: Dict[str, Any] = {}
    for record in records:
        out.update({k: v for k, v in record.items() if not k.startswith("_") and isinstance(v, (int, float))})
    out.update({k: v for k, v in reported.items() if not k.startswith("_") and _scalar(v) and v is not None})
    return out


def _run_rows(meta: dict, config: dict, records: List[dict], reported_summary: dict) -> Tuple[dict, List[dict]]:
    """One run in the table's layout: its constant cells (META, config.*, summary.*) and its
    records (metric keys and _step; a run with no records still gets one row)."""
    head = dict(meta)
    head.update({f"config.{k}": _cell(v) for k, v in flatten_config(config).items()})
    head.update({f"summary.{k}": v for k, v in _summary(records, reported_summary).items()})
    rows = [{k: v for k, v in r.items() if k == "_step" or not k.startswith("_")} for r in records]
    if not rows:
        rows = [{"_step": math.nan}]
    elif not any("_step" in r for r in rows):
        rows = [{**r, "_step": i} for i, r in enumerate(rows)]
    return head, rows


def _tidy(runs: List[Tuple[dict, List[dict]]]) -> pd.DataFrame:
    """The table from (head, rows) per run: META, _step, then the other columns sorted; rows
    sorted by (run_id, _step). Built as ONE frame of run heads repeated over ONE frame of all
    records (a frame per run, joined, was 3-4x slower at 1,000 runs: benchmarks/bench_analysis_load.py)."""
    if not runs:
        return pd.DataFrame(columns=META + ["_step"])
    heads = pd.DataFrame([head for head, _ in runs])
    owner = np.repeat(np.arange(len(runs)), [len(rows) for _, rows in runs])
    body = pd.DataFrame([row for _, rows in runs for row in rows])
    df = pd.concat([heads.take(owner).reset_index(drop=True), body.drop(columns=[c for c in body if c in heads])],
                   axis=1)
    first = META + ["_step"]
    df = df[first + sorted(c for c in df.columns if c not in first)]
    return df.sort_values(["run_id", "_step"], kind="stable", na_position="first").reset_index(drop=True)


def _group(config: dict) -> Optional[str]:
    flat = flatten_config(config)
    return flat.get("tracking.group") or flat.get("experiment")


# ----------------------------------------------------------------------------- local run records


def find_runs(root) -> List[Path]:
    """Every run folder under root (root itself included), sorted. Symbolic links to folders are
    followed (a study assembled from links to sweep folders), each real folder visited once, so a
    link back up the tree cannot loop. (Path.rglob does not follow links before Python 3.13.)"""
    root = Path(root)
    runs, seen = set(), set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders.clear()
            continue
        seen.add(real)
        if "config.json" in files and "metrics.jsonl" in files:
            runs.add(Path(folder))
    return sorted(runs)


def read_metrics(path) -> List[dict]:
    """The records of a metrics.jsonl. A line that does not parse (the last line of a killed job,
    cut mid-write) is skipped with a warning, never fatal."""
    records = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                warnings.warn(f"{path}:{number}: unreadable metrics record skipped (cut by a killed job?)",
                              stacklevel=2)
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


def _read_json(path: Path, default: dict) -> dict:
    if not path.is_file():
        return default
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
        return value if isinstance(value, dict) else default
    except json.JSONDecodeError:
        warnings.warn(f"{path}: unreadable, ignored", stacklevel=2)
        return default


def load_local_runs(root) -> pd.DataFrame:
    """The runs table of every run record under `root` (a study, a sweep folder, or outputs/)."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"no such runs folder: {root}")
    parts = []
    for run in find_runs(root):
        config = _read_json(run / "config.json", None)
        if config is None:
            warnings.warn(f"{run}: config.json unreadable, run skipped", stacklevel=2)
            continue
        inputs = _read_json(run / "inputs.json", {})  # content of the files it read: part of what the run is
        if inputs:
            config = {**config, "inputs": inputs}
        status = _read_json(run / "status.json", {})
        meta = {"run_id": run.relative_to(root).as_posix() if run != root else run.name,
                "run_name": run.name, "group": _group(config),
                "stage": status.get("stage") or flatten_config(config).get("stage.name"),
                "status": status.get("status", "unknown"), "wandb_run_id": status.get("wandb_run_id")}
        parts.append(_run_rows(meta, config, read_metrics(run / "metrics.jsonl"), _read_json(run / "summary.json", {})))
    return _tidy(parts)


# ----------------------------------------------------------------------------- W&B


def _wandb_value(value: Any) -> Any:
    """W&B can hand back non-finite floats as the strings NaN / Infinity."""
    return _JSON_FLOATS.get(value, value) if isinstance(value, str) else value


def _wandb_config(raw: dict) -> dict:
    """The run's config as logged: flat dotted keys (the tracker's way) or nested; the API's
    {"value": ...} wrapping and W&B's own _-prefixed keys removed."""
    config = {}
    for key, value in dict(raw).items():
        if str(key).startswith("_"):
            continue
        if isinstance(value, dict) and "value" in value and set(value) <= {"value", "desc"}:
            value = value["value"]
        config[key] = value
    return config


def _items(mapping) -> Iterable:
    """Items of a dict or of W&B's HTTPSummary (which has .items() but is not a dict)."""
    return mapping.items() if hasattr(mapping, "items") else dict(mapping).items()


def load_wandb_runs(path: str, filters: Optional[dict] = None, api=None) -> pd.DataFrame:
    """The runs table of a W&B project "entity/project", through the public API.

    filters: W&B's MongoDB-style run filter, e.g. {"config.rm.name": "tiny-s"} or
    {"group": "rm_size"}. Every history row is read with scan_history() (history() samples 500).
    api: an object with .runs(path, filters=...) (injectable for tests); default wandb.Api().
    """
    if api is None:
        import wandb

        api = wandb.Api(timeout=60)
    runs = list(api.runs(path, filters=filters or {}))
    ids = [f"{r.group}/{r.name}" if getattr(r, "group", None) else str(r.name) for r in runs]
    parts = []
    for run, run_id in zip(runs, ids):
        if ids.count(run_id) > 1:  # the same name twice in a group (a re-run without resume)
            run_id = f"{run_id}:{run.id}"
        config = _wandb_config(run.config)
        records = [{k: _wandb_value(v) for k, v in row.items()} for row in run.scan_history()]
        summary = {k: _wandb_value(v) for k, v in _items(run.summary)}
        meta = {"run_id": run_id, "run_name": run.name, "group": getattr(run, "group", None),
                "stage": run.job_type or flatten_config(config).get("stage.name"),
                "status": WANDB_STATES.get(run.state, run.state), "wandb_run_id": getattr(run, "id", None)}
        parts.append(_run_rows(meta, config, records, summary))
    return _tidy(parts)


# ----------------------------------------------------------------------------- per-run views


def per_run(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run: META, config.* and summary.* (constant within a run), sorted by run_id."""
    cols = [c for c in df.columns if c in META or c.startswith(("config.", "summary."))]
    return df[cols].drop_duplicates("run_id").sort_values("run_id", kind="stable").reset_index(drop=True)


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run: identity, the key config columns (KEY_CONFIG where present, plus every
    other config key whose value differs between runs) and every summary metric."""
    runs = per_run(df)
    varying = varying_config(runs)
    key = [f"config.{k}" for k in KEY_CONFIG if f"config.{k}" in runs]
    config_cols = key + sorted(c for c in varying if c not in key)
    summary_cols = sorted(c for c in runs.columns if c.startswith("summary."))
    return runs[["run_id", "run_name", "stage", "status"] + config_cols + summary_cols]


def full_table(df: pd.DataFrame) -> pd.DataFrame:
    """summary_table's columns first (identity, key and varying config, every summary metric),
    then every other config key, constant ones included: the whole record of each run."""
    runs = per_run(df)
    first = list(summary_table(df).columns)
    return runs[first + sorted(c for c in runs.columns if c.startswith("config.") and c not in first)]


def as_text(values):
    """A Series or DataFrame as text cells, missing values included ("nan"), for comparing and
    grouping config values of mixed types (astype(str) keeps missing values missing in pandas 3)."""
    return values.astype(object).map(str)


def is_seed(column: str) -> bool:
    """A seed key (seed, data.seed, rm_train.seed, ..., and the sweeps' `replicate` index): replicates,
    averaged rather than grouped."""
    return column.rsplit(".", 1)[-1] in ("seed", "replicate")


def varying_config(runs: pd.DataFrame, seeds: bool = True) -> List[str]:
    """The config.* columns whose value differs between the rows of `runs` (one row per run),
    compared as text so that missing equals missing; seed keys left out with seeds=False."""
    cols = [c for c in runs.columns if c.startswith("config.") and (seeds or not is_seed(c))]
    return [c for c in cols if as_text(runs[c]).nunique() > 1]


def named_once(runs: pd.DataFrame, columns: List[str]) -> List[str]:
    """`columns` less the fields of a named spec that its name already determines (rm.d_model
    where rm.name is among the columns and every run of one RM name has one d_model), so a table or
    a legend names a varied model once. Other columns stay, even where a small set of runs makes
    them look determined by another."""
    names = {c.rsplit(".", 1)[0] for c in columns if c.endswith(".name")}
    text = as_text(runs[columns])
    kept = []
    for col in columns:
        section = col.rsplit(".", 1)[0]
        if section in names and not col.endswith(".name") and text.groupby(f"{section}.name")[col].nunique().max() <= 1:
            continue
        kept.append(col)
    return kept


# The config sections an RM artifact's key is made of (stages/common.py rm_artifact, with the
# data and SFT artifacts it depends on): two runs that agree on all of them used the same RM.
RM_RECIPE = ("config.policy.", "config.task.", "config.sft.", "config.data.", "config.gold.", "config.rm.",
             "config.rm_train.")
RM_RECIPE_KEYS = ("config.seed", "config.artifacts_dir")
# What a run inherits from the RM job that trained its proxy RM.
RM_FACTS = ("summary.rm/val_accuracy", "summary.rm/val_loss", "summary.rm/n_params", "summary.rm/train_comparisons")


def with_rm_facts(runs: pd.DataFrame) -> pd.DataFrame:
    """`runs` (one row per run) with RM_FACTS filled in where a run lacks them but the record of
    the RM it used has them: an RM job that reused an artifact logged no training (its
    rm/train_comparisons comes from the job that built the artifact, matched on rm/artifact), and a
    best-of-n or PPO job used the RM whose RM job agrees with it on RM_RECIPE."""
    runs = runs.copy()
    facts = [c for c in RM_FACTS if c in runs]
    if not facts or "stage" not in runs or runs.empty:  # (an empty frame's row-wise agg is a frame, not keys)
        return runs
    rm_jobs = runs[runs["stage"] == "rm"]
    if "summary.rm/artifact" in runs:  # the same artifact: the same RM, whichever job trained it
        known = rm_jobs.dropna(subset=["summary.rm/artifact"]).groupby("summary.rm/artifact")
        for col in facts:
            runs[col] = runs[col].fillna(runs["summary.rm/artifact"].map(known[col].first()))
    recipe = [c for c in runs.columns if c.startswith(RM_RECIPE) or c in RM_RECIPE_KEYS]
    # An RM job of the same experiment first (the one the job's own sweep or study trained), then any.
    for columns in ([*recipe, "config.experiment"] if "config.experiment" in runs else recipe, recipe):
        if not recipe:
            break
        key = as_text(runs[columns]).agg("\x1f".join, axis=1)
        rm_key = key[rm_jobs.index]
        for col in facts:
            inherited = key.map(rm_jobs[col].groupby(rm_key).first())
            runs[col] = runs[col].where(runs[col].notna() | (runs["stage"] == "rm"), inherited)
    return runs
