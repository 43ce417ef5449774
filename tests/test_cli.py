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


PROBE = """
import runpy, sys
sys.argv = ["rlhf-scaling", *sys.argv[1:]]
try:
    runpy.run_module("rlhf_scaling.cli", run_name="__main__")
except SystemExit as stop:
    print("exit", stop.code)
print("imported:", sorted(m for m in ("torch", "transformers") if m in sys.modules))
"""


def test_a_completed_run_a_folder_in_use_or_a_config_error_is_answered_without_importing_torch(tmp_path,
                                                                                                monkeypatch):
    """What is decided before any work (the run is already complete, another copy holds its folder,
    the config is invalid) is answered without importing torch and transformers (seconds each time)."""
    import subprocess

    from rlhf_scaling.artifacts import locked

    monkeypatch.setattr(sft, "run", lambda cfg, tracker: {"sft/final_loss": 1.0})
    cli.run_stage(cli.compose(["stage=sft", "progress=false"]), tmp_path / "done")

    def probe(*args):
        """(the exit line, if any, and the imported line; all the process wrote)"""
        proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120)
        return [line for line in proc.stdout.splitlines() if line.startswith(("exit", "imported:"))], \
            proc.stdout + proc.stderr

    out, text = probe("stage=sft", "progress=false", f"hydra.run.dir={tmp_path / 'done'}")
    assert out == ["imported: []"] and "already completed with this config" in text, text
    with locked(tmp_path / "busy" / ".lock"):
        out, text = probe("stage=sft", f"hydra.run.dir={tmp_path / 'busy'}")
    assert out == ["exit 2", "imported: []"] and "is in use by another running copy" in text, text
    out, text = probe("stage=sft", "sft.lr=nan", f"hydra.run.dir={tmp_path / 'bad'}")
    assert out == ["exit 2", "imported: []"] and "sft.lr: must be a finite number" in text, text
