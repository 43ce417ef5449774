"""The runs table: layout and values from local records, a killed job's cut line, and the W&B
loader giving the same table from recorded public-API pages (no network)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pandas as pd
import pytest

from rlhf_scaling.analysis.runs import load_local_runs, load_wandb_runs, per_run, summary_table
from rlhf_scaling.tracking import flatten_config


def test_table_layout_and_values(runs_df, synthetic):
    df = runs_df
    assert df["run_id"].nunique() == synthetic.N_RUNS
    assert list(df.columns[:7]) == ["run_id", "run_name", "group", "stage", "status", "wandb_run_id", "_step"]
    assert {"config.rm.name", "config.rm.n_params", "config.data.responses_per_prompt",
            "config.data.comparison_budget", "config.ppo.samples_per_prompt", "config.bon.n_max",
            "config.tracking.tags", "ppo/gold", "bon/sqrt_kl", "rm/val_accuracy",
            "summary.rm/val_accuracy", "summary.ppo/final_gold"} <= set(df.columns)
    assert not any(c.startswith("_") and c != "_step" for c in df.columns)  # no _time
    assert set(df["stage"]) == {"rm", "bon", "ppo"} and set(df["status"]) == {"completed"}
    assert set(df["group"]) == {"study", "data_size", "diversity", "samples_per_prompt"}
    # one row per logged record, sorted by (run_id, _step)
    bon = df[df["run_id"] == "study/bon_tiny-s"]
    assert len(bon) == len(synthetic.BON_GRID) and list(bon["_step"]) == list(range(len(bon)))
    assert list(bon["bon/n"]) == synthetic.BON_GRID
    assert df["run_id"].is_monotonic_increasing
    row = bon.iloc[3]
    assert row["run_name"] == "bon_tiny-s" and row["config.rm.name"] == "tiny-s"
    assert row["config.data.responses_per_prompt"] == 4 and row["config.tracking.tags"] == '["synthetic"]'
    assert row["bon/sqrt_kl"] == pytest.approx(math.sqrt(math.log(8) - 7 / 8))
    # summary: what the job reported, plus (W&B semantics) the last value of every logged metric
    assert row["summary.bon/n_max"] == 256 and row["summary.bon/n"] == 256
    rm = df[df["run_id"] == "study/rm_tiny-m"].iloc[0]
    assert rm["summary.rm/n_params"] == 1e7 and pd.isna(rm["config.rm.n_params"])
    assert rm["summary.rm/artifact"] == "/artifacts/rm/tiny-m"


def test_truncated_last_line_is_skipped_with_a_warning(runs_root, synthetic):
    with pytest.warns(UserWarning, match="unreadable metrics record skipped"):
        df = load_local_runs(runs_root)
    cut = df[df["run_id"] == synthetic.TRUNCATED_RUN]
    assert len(cut) == synthetic.PPO_STEPS and cut["_step"].max() == synthetic.PPO_STEPS - 1


def test_odd_folders_do_not_crash(tmp_path):
    (tmp_path / "empty_run").mkdir()
    (tmp_path / "empty_run" / "config.json").write_text(json.dumps({"stage": {"name": "sft"}}))
    (tmp_path / "empty_run" / "metrics.jsonl").write_text("")  # started, logged nothing, no status
    (tmp_path / "not_a_run").mkdir()
    (tmp_path / "not_a_run" / "config.json").write_text("{}")  # e.g. a model's config.json, no metrics
    df = load_local_runs(tmp_path)
    assert list(df["run_id"]) == ["empty_run"] and df["stage"].iloc[0] == "sft"
    assert df["status"].iloc[0] == "unknown" and len(summary_table(df)) == 1
    with pytest.raises(FileNotFoundError):
        load_local_runs(tmp_path / "missing")


def test_summary_table_has_one_row_per_run(runs_df, synthetic):
    table = summary_table(runs_df)
    assert len(table) == synthetic.N_RUNS and table["run_id"].is_unique
    assert list(table.columns[:4]) == ["run_id", "run_name", "stage", "status"]
    assert {"config.rm.name", "config.data.comparison_budget", "config.ppo.samples_per_prompt",
            "summary.rm/val_accuracy", "summary.bon/best_gold", "summary.ppo/final_gold"} <= set(table.columns)
    assert "config.policy.name" in table  # a key column even though it never varies
    assert "config.policy.source" not in table  # an unvarying non-key column is left out
    row = table.set_index("run_id").loc["samples_per_prompt/2_spp=4"]
    assert row["config.ppo.samples_per_prompt"] == 4


# ----------------------------------------------------------------------------- W&B: recorded API pages


class RecordedRun:
    """What wandb.Api().runs() yields, with the attributes the loader reads, holding the pages the
    API would return for a run the tracker mirrored (tracking.py: config flattened with dots,
    numeric metrics only, name = folder, group = experiment, job_type = stage)."""

    def __init__(self, run_dir: Path, nested_config: bool = False):
        status = json.loads((run_dir / "status.json").read_text())
        config = json.loads((run_dir / "config.json").read_text())
        self.id, self.name, self.job_type, self.state = status["wandb_run_id"], run_dir.name, status["stage"], "finished"
        self.group = config["experiment"]
        # The API wraps config values as {"value": ..., "desc": ...} and adds its own _wandb key.
        flat = config if nested_config else flatten_config(config)
        self.config = {"_wandb": {"value": {"cli_version": "0.31.0"}},
                       **{k: {"value": v, "desc": None} for k, v in flat.items()}}
        self._rows = []
        for line in (run_dir / "metrics.jsonl").read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # the cut line never reached W&B
            row = {k: v for k, v in record.items() if not k.startswith("_") and isinstance(v, (int, float))}
            self._rows.append({**row, "_step": record["_step"], "_runtime": 0.5 * record["_step"],
                               "_timestamp": record["_time"]})
        # W&B's summary: last value of each logged key, then the tracker's summary.update(...), then W&B's own keys
        summary = {}
        for row in self._rows:
            summary.update(row)
        summary.update(json.loads((run_dir / "summary.json").read_text()))
        summary["_wandb"] = {"runtime": 3}
        self.summary = summary

    def scan_history(self, page_size: int = 1000):
        return iter(self._rows)


class RecordedApi:
    def __init__(self, root: Path, nested_config: bool = False):
        self.root, self.nested, self.calls = root, nested_config, []

    def runs(self, path, filters=None):
        self.calls.append((path, filters))
        runs = [RecordedRun(p.parent, self.nested) for p in sorted(self.root.rglob("status.json"))]
        for key, value in (filters or {}).items():  # the two filter shapes the tests use
            if key == "group":
                runs = [r for r in runs if r.group == value]
            else:
                runs = [r for r in runs if r.config[key.removeprefix("config.")]["value"] == value]
        return runs[::-1]  # API order (newest first) must not matter


@pytest.mark.parametrize("nested", [False, True], ids=["flat-config", "nested-config"])
def test_wandb_loader_gives_the_same_table_as_the_local_records(runs_root, runs_df, nested):
    api = RecordedApi(runs_root, nested_config=nested)
    remote = load_wandb_runs("me/rlhf-scaling", api=api)
    assert api.calls == [("me/rlhf-scaling", {})]
    assert list(remote.columns) == list(runs_df.columns)
    pd.testing.assert_frame_equal(remote, runs_df, check_dtype=False)


def test_wandb_loader_passes_filters_and_names_duplicates(runs_root, runs_df):
    api = RecordedApi(runs_root)
    only = load_wandb_runs("me/p", filters={"config.rm.name": "tiny-m"}, api=api)
    assert api.calls[-1] == ("me/p", {"config.rm.name": "tiny-m"})
    assert set(only["run_id"]) == {"study/rm_tiny-m", "study/bon_tiny-m", "study/ppo_tiny-m"}
    local = runs_df[runs_df["run_id"].isin(set(only["run_id"]))].dropna(axis=1, how="all").reset_index(drop=True)
    pd.testing.assert_frame_equal(only.dropna(axis=1, how="all"), local, check_dtype=False)

    class Twice(RecordedApi):  # a run re-launched without resume: same group and name, new W&B id
        def runs(self, path, filters=None):
            first = super().runs(path, {"group": "samples_per_prompt"})[0]
            second = RecordedRun(self.root / "samples_per_prompt" / first.name)
            second.id, second.state = "wbXXXX", "crashed"
            return [first, second]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        twice = per_run(load_wandb_runs("me/p", api=Twice(runs_root)))
    first_id = json.loads((runs_root / "samples_per_prompt" / "2_spp=4" / "status.json").read_text())["wandb_run_id"]
    assert list(twice["run_id"]) == [f"samples_per_prompt/2_spp=4:{first_id}", "samples_per_prompt/2_spp=4:wbXXXX"]
    assert list(twice["status"]) == ["completed", "failed"]


def test_run_folders_behind_symbolic_links_are_found_once(runs_root, tmp_path, synthetic):
    """A study folder assembled from links to sweep folders (and a link back up, which must not
    loop): every run behind a link is read, each real folder once, under the linked path."""
    study = tmp_path / "assembled"
    study.mkdir()
    (study / "rm_sizes").symlink_to(runs_root / "study", target_is_directory=True)
    (study / "more").symlink_to(runs_root / "data_size", target_is_directory=True)
    (study / "loop").symlink_to(study, target_is_directory=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the study's truncated line
        df = load_local_runs(study)
    ids = sorted(df["run_id"].unique())
    assert len(ids) == 9 + 6
    assert "rm_sizes/rm_tiny-s" in ids and "more/0_budget=768,rm=tiny-xs" in ids


def test_runs_of_the_same_config_on_different_data_content_are_told_apart(tmp_path):
    """An edited data file is a new run with the same config.json: the runs table carries the
    content digests the tracker recorded (inputs.json), so grouping never pools the two."""
    from rlhf_scaling.tracking import RunTracker

    data = tmp_path / "prefs.jsonl"
    config = {"stage": {"name": "rm"}, "task": {"name": "jsonl", "path": str(data)}}
    for run, text in (("before", "a\n"), ("after", "b\n")):
        data.write_text(text)
        with RunTracker(tmp_path / "runs" / run, config, stage="rm") as tracker:
            tracker.log({"rm/step": 1, "rm/val_accuracy": 0.5})
    table = per_run(load_local_runs(tmp_path / "runs"))
    assert table["config.inputs.task.path"].nunique() == 2
