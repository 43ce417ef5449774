"""The entry: a resubmitted job whose run folder already records a completed run of the same config
is not run again; a different config never runs in that folder."""

from __future__ import annotations

import json
import sys

import pytest

from rlhf_scaling import cli
from rlhf_scaling.config import ConfigError
from rlhf_scaling.stages import sft


def test_completed_run_is_skipped_on_resubmission_and_rerun_when_its_config_changes(tmp_path, monkeypatch):
    calls = []

    def fake_run(cfg, tracker):
        calls.append(cfg.seed)
        tracker.log({"sft/step": 0, "sft/loss": 1.0})
        return {"sft/final_loss": 1.0 + cfg.seed}

    monkeypatch.setattr(sft, "run", fake_run)
    run_dir = tmp_path / "multirun" / "0_stage=sft"
    first = cli.run_stage(cli.compose(["stage=sft", "progress=false"]), run_dir)
    metrics = (run_dir / "metrics.jsonl").read_text()
    # Resubmitted as is (only how it is watched differs): returns the recorded summary, runs nothing.
    again = cli.run_stage(cli.compose(["stage=sft", "progress=true"]), run_dir)
    assert calls == [0] and again == first == {"sft/final_loss": 1.0}
    assert (run_dir / "metrics.jsonl").read_text() == metrics
    assert json.loads((run_dir / "status.json").read_text())["attempt"] == 1
    # stage.skip_completed=false forces a rerun of the same config, in the same folder.
    cli.run_stage(cli.compose(["stage=sft", "stage.skip_completed=false"]), run_dir)
    assert calls == [0, 0]
    # A change to what the job computes is a different run: never in this run's folder.
    with pytest.raises(ConfigError, match="holds the record of a different run.*seed"):
        cli.run_stage(cli.compose(["stage=sft", "seed=1"]), run_dir)
    assert calls == [0, 0]
    assert cli.run_stage(cli.compose(["stage=sft", "seed=1"]), tmp_path / "other") == {"sft/final_loss": 2.0}


def test_a_failed_or_interrupted_run_is_run_again(tmp_path, monkeypatch):
    calls = []

    def failing_then_ok(cfg, tracker):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("node lost")
        return {"sft/final_loss": 0.5}

    monkeypatch.setattr(sft, "run", failing_then_ok)
    cfg = cli.compose(["stage=sft", "progress=false"])
    try:
        cli.run_stage(cfg, tmp_path / "run")
    except RuntimeError:
        pass
    assert cli.run_stage(cfg, tmp_path / "run") == {"sft/final_loss": 0.5} and len(calls) == 2


def test_a_bug_inside_a_stage_keeps_its_traceback_even_when_omegaconf_raised_it(tmp_path, monkeypatch):
    """Composition errors are one line and exit 2; the same exception types raised by a stage's
    code once the job runs (e.g. reading a misspelt cfg attribute) are bugs and must propagate."""
    from omegaconf.errors import ConfigAttributeError

    def buggy(cfg, run_dir):
        return cfg.ppo.no_such_key  # ConfigAttributeError, like a composition error's type

    monkeypatch.setattr(cli, "run_stage", buggy)
    monkeypatch.setattr(sys, "argv", ["rlhf-scaling", "stage=sft", f"hydra.run.dir={tmp_path / 'run'}"])
    with pytest.raises(ConfigAttributeError):
        cli.main()
    monkeypatch.setattr(sys, "argv", ["rlhf-scaling", "stage=sft", "sft.no_such_key=1", f"hydra.run.dir={tmp_path / 'r2'}"])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2
