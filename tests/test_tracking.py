"""The run record is complete whatever W&B does; secrets never reach it; resume continues it."""

import json
import subprocess
import sys

import pytest

from rlhf_scaling.tracking import RunTracker, flatten_config

CONFIG = {"rm_train": {"lr": 1e-3, "loss": "kwise"}, "tracking": {"mode": "offline"}, "wandb_api_key": "abc"}


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(autouse=True)
def quiet_wandb(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def test_flatten_config():
    assert flatten_config({"a": {"b": 1, "c": {"d": 2}}, "e": [1, 2]}) == {"a.b": 1, "a.c.d": 2, "e": [1, 2]}


def test_disabled_writes_complete_local_record_without_importing_wandb(tmp_path):
    code = (
        "import sys; from rlhf_scaling.tracking import RunTracker\n"
        f"t = RunTracker({str(tmp_path / 'r')!r}, {{'a': 1}}, stage='rm')\n"
        "t.log({'rm/loss': 0.5}); t.summary(**{'rm/val_accuracy': 0.7}); t.finish()\n"
        "print('wandb' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    run = tmp_path / "r"
    assert json.loads((run / "status.json").read_text())["status"] == "completed"
    assert json.loads((run / "summary.json").read_text()) == {"rm/val_accuracy": 0.7}
    assert read_metrics(run)[0]["rm/loss"] == 0.5
    env = json.loads((run / "env.json").read_text())
    assert "versions" in env and "git_sha" in env


def test_offline_mode_mirrors_to_a_local_wandb_run(tmp_path):
    with RunTracker(tmp_path / "r", CONFIG, stage="ppo", mode="offline", group="g") as t:
        t.define_step("ppo/", "ppo/step")
        for step in range(3):
            t.log({"ppo/step": step, "ppo/gold": step * 0.1})
    assert list((tmp_path / "r" / "wandb").glob("offline-run-*"))
    status = json.loads((tmp_path / "r" / "status.json").read_text())
    assert status["status"] == "completed" and status["wandb_run_id"]
    assert [m["ppo/gold"] for m in read_metrics(tmp_path / "r")] == [0.0, 0.1, 0.2]


@pytest.mark.parametrize("failure", ["init", "log"])
def test_wandb_outage_never_loses_a_metric(tmp_path, monkeypatch, failure):
    import wandb

    class BrokenRun:
        id = "broken"
        summary = {}

        def log(self, *a, **k):
            raise ConnectionError("host unreachable")

        def define_metric(self, *a, **k):
            pass

        def finish(self, *a, **k):
            pass

    def fake_init(**kwargs):
        if failure == "init":
            raise ConnectionError("host unreachable")
        return BrokenRun()

    monkeypatch.setattr(wandb, "init", fake_init)
    with RunTracker(tmp_path / "r", CONFIG, stage="rm", mode="online") as t:
        for step in range(5):
            t.log({"rm/step": step, "rm/loss": 1.0 / (step + 1)})
        t.summary(**{"rm/val_accuracy": 0.8})
    assert [m["rm/step"] for m in read_metrics(tmp_path / "r")] == [0, 1, 2, 3, 4]
    assert json.loads((tmp_path / "r" / "status.json").read_text())["status"] == "completed"


def test_unreachable_host_with_bogus_key_does_not_block(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "2")
    with RunTracker(tmp_path / "r", CONFIG, stage="rm", mode="online", init_timeout=2) as t:
        t.log({"rm/loss": 0.3})
    assert read_metrics(tmp_path / "r")[0]["rm/loss"] == 0.3
    assert "x" * 40 not in "".join(p.read_text() for p in (tmp_path / "r").glob("*.json"))


def test_secrets_are_scrubbed_from_every_record(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_supersecretvalue")
    monkeypatch.setenv("MY_SERVICE_PASSWORD", "hunter2hunter2")
    config = {**CONFIG, "note": "uses hf_supersecretvalue", "gold": {"token": "t0ken-value"}}
    with pytest.raises(RuntimeError):
        with RunTracker(tmp_path / "r", config, stage="rm") as t:
            raise RuntimeError("auth failed for hunter2hunter2")
    text = "".join(p.read_text() for p in (tmp_path / "r").glob("*.json"))
    for secret in ("hf_supersecretvalue", "hunter2hunter2", "t0ken-value", '"abc"'):
        assert secret not in text
    status = json.loads((tmp_path / "r" / "status.json").read_text())
    assert status["status"] == "failed" and "***" in status["error"]


def test_resume_appends_and_reuses_the_wandb_run_id(tmp_path, monkeypatch):
    import wandb

    calls = []

    class FakeRun:
        summary = {}

        def __init__(self, run_id):
            self.id = run_id

        def log(self, *a, **k):
            pass

        def define_metric(self, *a, **k):
            pass

        def finish(self, *a, **k):
            pass

    def fake_init(**kwargs):
        calls.append(kwargs)
        return FakeRun(kwargs.get("id") or "run-abc")

    monkeypatch.setattr(wandb, "init", fake_init)
    with RunTracker(tmp_path / "r", CONFIG, stage="ppo", mode="online") as t:
        t.log({"ppo/step": 0})
        t.log({"ppo/step": 1})
    with RunTracker(tmp_path / "r", CONFIG, stage="ppo", mode="online", resume=True) as t:
        t.log({"ppo/step": 2})
    assert calls[1]["id"] == "run-abc" and calls[1]["resume"] == "allow"
    assert [m["_step"] for m in read_metrics(tmp_path / "r")] == [0, 1, 2]
    assert calls[0]["config"]["rm_train.lr"] == 1e-3  # logged flat, so W&B filters on it


def test_non_zero_ranks_write_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    with RunTracker(tmp_path / "r", CONFIG, stage="rm") as t:
        t.log({"rm/loss": 1.0})
    assert not (tmp_path / "r").exists()
