"""One tidy runs table from local run records or from a W&B project.

A run is any folder holding config.json and metrics.jsonl (a single job, a study's sub-job or a
sweep point). The table has one row per (run, logged record):

    run_id, run_name, stage, status, _step, <metric columns as logged>,
    config.<dotted key> ...  (the resolved config, flattened)
    summary.<metric> ...     (the run's summary.json)

The local records are the source of truth (offline W&B runs cannot be read back); the W&B loader
goes through the public wandb.Api and yields the same columns for the same runs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterable, List, Optional

import pandas as pd

from rlhf_scaling.tracking import flatten_config

log = logging.getLogger(__name__)

META = ["run_id", "run_name", "stage", "status"]


def find_runs(root) -> List[Path]:
    """Every run folder under root (root itself included), sorted."""
    root = Path(root)
    return sorted({p.parent for p in root.rglob("config.json") if (p.parent / "metrics.jsonl").is_file()})


def read_metrics(path: Path) -> List[dict]:
    """metrics.jsonl records; a line cut by a killed job is skipped with a warning, never fatal."""
    records = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("%s:%d: unreadable record skipped (truncated by a kill?)", path, number)
    return records


def _frame(run_id: str, run_name: str, stage: str, status: str, config: dict, summary: dict,
           records: Iterable[dict]) -> pd.DataFrame:
    """The rows of one run in the table's layout."""
    rows = pd.DataFrame(list(records))
    if rows.empty:
        rows = pd.DataFrame({"_step": [pd.NA]})
    rows = rows.drop(columns=[c for c in rows.columns if c == "_time"])
    meta = {"run_id": run_id, "run_name": run_name, "stage": stage, "status": status}
    meta.update({f"config.{k}": (json.dumps(v) if isinstance(v, (list, dict)) else v)
                 for k, v in flatten_config(config).items()})
    meta.update({f"summary.{k}": v for k, v in summary.items()})
    extra = pd.DataFrame({k: [v] * len(rows) for k, v in meta.items()}, index=rows.index)
    return pd.concat([extra, rows], axis=1)


def _tidy(frames: List[pd.DataFrame]) -> pd.DataFrame:
    if not frames:
        return pd.DataFrame(columns=META + ["_step"])
    df = pd.concat(frames, ignore_index=True, sort=False)
    first = META + ["_step"]
    rest = sorted(c for c in df.columns if c not in first)
    df = df[first + rest]
    return df.sort_values(["run_id", "_step"], kind="stable").reset_index(drop=True)


def load_local_runs(root) -> pd.DataFrame:
    """The runs table of every run record under `root`."""
    root = Path(root)
    frames = []
    for run in find_runs(root):
        config = json.loads((run / "config.json").read_text())
        summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
        status = json.loads((run / "status.json").read_text()) if (run / "status.json").is_file() else {}
        stage = status.get("stage") or config.get("stage", {}).get("name")
        run_id = str(run.relative_to(root)) if run != root else run.name
        frames.append(_frame(run_id, run.name, stage, status.get("status", "unknown"), config, summary,
                             read_metrics(run / "metrics.jsonl")))
    return _tidy(frames)


def _unflatten(flat: dict) -> dict:
    """{"a.b": 1} -> {"a": {"b": 1}}; W&B holds the config flat, as the tracker logged it."""
    nested: dict = {}
    for key, value in flat.items():
        if isinstance(value, dict) and set(value) == {"value"}:  # the API's {"value": ...} wrapping
            value = value["value"]
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def load_wandb_runs(path: str, filters: Optional[dict] = None, api=None) -> pd.DataFrame:
    """The runs table of a W&B project ("entity/project"), through the public API.

    `filters` is W&B's MongoDB-style filter, e.g. {"config.rm.name": "tiny-s"}. Every history
    row is read (scan_history, not the 500-row sample of history()).
    """
    if api is None:
        import wandb

        api = wandb.Api(timeout=60)
    frames = []
    for run in api.runs(path, filters=filters or {}):
        config = _unflatten({k: v for k, v in dict(run.config).items() if not k.startswith("_")})
        summary = {k: v for k, v in dict(run.summary).items() if not k.startswith("_")}
        records = [{k: v for k, v in row.items() if k == "_step" or not k.startswith("_")}
                   for row in run.scan_history()]
        frames.append(_frame(run.name, run.name, run.job_type, run.state if run.state != "finished" else "completed",
                             config, summary, records))
    return _tidy(frames)


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run: identity, the config keys that vary across runs, and every summary metric."""
    first = df.groupby("run_id", sort=True).first().reset_index()
    config_cols = [c for c in first.columns if c.startswith("config.") and first[c].astype(str).nunique() > 1]
    summary_cols = sorted(c for c in first.columns if c.startswith("summary."))
    return first[META + config_cols + summary_cols]
