"""The run record is complete whatever W&B does; secrets never reach it; resume continues it.

No test reaches the network: W&B runs offline, against a closed local port, or through a
monkeypatched wandb.init."""

import json
import logging
import subprocess
import sys
import time

import pandas as pd
import pytest

from rlhf_scaling import tracking
from rlhf_scaling.tracking import RunTracker, flatten_config, is_secret_key, scrub

CONFIG = {"rm_train": {"lr": 1e-3, "loss": "kwise"}, "tracking": {"mode": "offline"}, "wandb_api_key": "abc"}
RECORD = ("config.json", "env.json", "metrics.jsonl", "summary.json", "status.json")


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def read(run_dir, name):
    return json.loads((run_dir / name).read_text())


def records_text(run_dir):
    return "".join((run_dir / name).read_text() for name in RECORD)


class FakeRun:
    """Stands in for a wandb Run; `broken` names the method that raises (a W&B outage mid-run)."""

    def __init__(self, run_id="run-abc", broken=None):
        self.id, self.broken, self.calls = run_id, broken, []
        self.summary = self

    def _call(self, method, *args, **kwargs):
        self.calls.append((method, args, kwargs))
        if method == self.broken:
            raise ConnectionError("host unreachable")

    def log(self, *a, **k):
        self._call("log", *a, **k)

    def define_metric(self, *a, **k):
        self._call("define_metric", *a, **k)

    def update(self, *a, **k):
        self._call("summary", *a, **k)

    def finish(self, *a, **k):
        self._call("finish", *a, **k)


@pytest.fixture(autouse=True)
def isolated_wandb(monkeypatch, tmp_path):
    """Quiet, local W&B: its files in tmp, no key or netrc from the developer's machine, no
    memory of a failed init from another test."""
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # a closed port: never the real service
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_RUN_ID", "WANDB_RESUME", "RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(tracking, "_wandb_unavailable", None)


@pytest.fixture
def fake_wandb(monkeypatch):
    """wandb.init replaced: records its kwargs in `calls` and returns a FakeRun (kept in `runs`,
    its `broken` method raising), or raises `init_error`."""
    import wandb

    state = {"calls": [], "runs": [], "init_error": None, "broken": None}

    def fake_init(**kwargs):
        state["calls"].append(kwargs)
        if state["init_error"] is not None:
            raise state["init_error"]
        run = FakeRun(kwargs.get("id") or f"run-{len(state['calls'])}", broken=state["broken"])
        state["runs"].append(run)
        return run

    monkeypatch.setattr(wandb, "init", fake_init)
    return state


# ----------------------------------------------------------------------------- pure helpers


def test_flatten_config():
    nested = {"a": {"b": 1, "c": {"d": 2}}, "e": [1, {"f": 3}], "g": {}, "h": None}
    assert flatten_config(nested) == {"a.b": 1, "a.c.d": 2, "e": [1, {"f": 3}], "g": {}, "h": None}
    assert flatten_config({"a.b": 1, "c": {"d.e": 2}}) == {"a.b": 1, "c.d.e": 2}  # W&B's flat keys pass through
    assert flatten_config(nested, keep=("a.c",)) == {"a.b": 1, "a.c": {"d": 2}, "e": [1, {"f": 3}], "g": {}, "h": None}


def test_secret_keys_are_recognised_without_catching_tokenizer_settings():
    for key in ("WANDB_API_KEY", "HF_TOKEN", "hf_token", "token", "apiKey", "AWS_SECRET_ACCESS_KEY",
                "db_password", "use_auth_token", "HUGGING_FACE_HUB_TOKEN", "client_secret"):
        assert is_secret_key(key), key
    for key in ("max_new_tokens", "pad_token_id", "eos_token", "TOKENIZERS_PARALLELISM", "max_prompt_tokens",
                "tokenizer", "key", "lr"):
        assert not is_secret_key(key), key


# ----------------------------------------------------------------------------- local record, every mode


def test_disabled_writes_complete_local_record_without_importing_wandb(tmp_path):
    code = (
        "import sys; from rlhf_scaling.tracking import RunTracker\n"
        f"t = RunTracker({str(tmp_path / 'r')!r}, {{'a': {{'b': 1}}}}, stage='rm')\n"
        "t.define_step('rm/', 'rm/step')\n"
        "t.log({'rm/step': 0, 'rm/loss': 0.5}); t.summary(**{'rm/val_accuracy': 0.7}); t.finish()\n"
        "print('wandb' in sys.modules)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "SLURM_JOB_ID": "123", "SLURM_ARRAY_TASK_ID": "4", "RANK": "0"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip() == "False"
    run = tmp_path / "r"
    assert all((run / name).is_file() for name in RECORD)
    assert read(run, "config.json") == {"a": {"b": 1}}
    assert read(run, "status.json")["status"] == "completed"
    assert read(run, "summary.json") == {"rm/val_accuracy": 0.7}
    [record] = read_metrics(run)
    assert record["_step"] == 0 and record["rm/loss"] == 0.5 and record["_time"] > 0
    env_json = read(run, "env.json")
    assert env_json["slurm"] == {"SLURM_JOB_ID": "123", "SLURM_ARRAY_TASK_ID": "4"}
    assert env_json["git_sha"] and env_json["git_dirty"] in (True, False)  # the tests run in the checkout
    assert set(env_json["versions"]) >= {"torch", "transformers", "deepspeed", "hydra-core", "wandb"}
    assert env_json["versions"]["wandb"] and env_json["python"] and env_json["hostname"]
    assert env_json["started_utc"].endswith("+00:00") and env_json["argv"] == ["-c"]


def test_record_exists_before_anything_is_logged(tmp_path):
    t = RunTracker(tmp_path / "r", CONFIG, stage="rm")
    assert all((tmp_path / "r" / name).is_file() for name in RECORD)
    assert read(tmp_path / "r", "status.json")["status"] == "running"  # a killed job stays "running"
    t.finish()


def test_offline_mode_mirrors_to_a_local_wandb_run(tmp_path):
    started = time.time()
    with RunTracker(tmp_path / "r", CONFIG, stage="ppo", mode="offline", group="g", tags=["t"], name="n") as t:
        t.define_step("ppo/", "ppo/step")
        for step in range(3):
            t.log({"ppo/step": step, "ppo/gold": step * 0.1, "ppo/note": "text stays local"})
        t.summary(**{"ppo/final_gold": 0.2})
    assert time.time() - started < 15
    status = read(tmp_path / "r", "status.json")
    assert status["status"] == "completed" and status["wandb_mode"] == "offline"
    [folder] = (tmp_path / "r" / "wandb").glob("offline-run-*")
    assert folder.name.endswith(status["wandb_run_id"]) and list(folder.glob("run-*.wandb"))
    assert [m["ppo/gold"] for m in read_metrics(tmp_path / "r")] == [0.0, 0.1, 0.2]


def test_nested_trackers_get_their_own_wandb_runs(tmp_path):
    """The study opens a sub-job tracker while its own run is active: W&B's default reinit would
    return the study's run to the sub-job, which would then log into it and finish it."""
    with RunTracker(tmp_path / "study", {}, stage="study", mode="offline") as outer:
        with RunTracker(tmp_path / "study" / "rm", {}, stage="rm", mode="offline") as inner:
            inner.log({"rm/loss": 1.0})
        outer.log({"study/x": 1.0})  # the outer run is still open
        assert outer._run is not None
    ids = {read(tmp_path / "study", "status.json")["wandb_run_id"],
           read(tmp_path / "study" / "rm", "status.json")["wandb_run_id"]}
    assert len(ids) == 2 and None not in ids


def test_wandb_gets_flat_config_group_job_type_and_step_metrics(tmp_path, fake_wandb):
    with RunTracker(tmp_path / "r", CONFIG, stage="ppo", mode="online", group="sweep-a", tags=("x",),
                    name="ppo__tiny-s__seed0") as t:
        t.define_step("ppo/", "ppo/step")
        t.log({"ppo/step": 0, "ppo/kl": 0.1})
    [kwargs] = fake_wandb["calls"]
    assert kwargs["config"]["rm_train.lr"] == 1e-3 and "rm_train" not in kwargs["config"]  # filterable
    assert kwargs["config"]["wandb_api_key"] == "***"
    assert (kwargs["group"], kwargs["job_type"], kwargs["name"], kwargs["tags"]) == \
        ("sweep-a", "ppo", "ppo__tiny-s__seed0", ["x"])
    assert kwargs["mode"] == "online" and kwargs["dir"] == str(tmp_path / "r")
    assert kwargs["settings"].init_timeout == 30 and kwargs["settings"].reinit == "create_new"
    calls = fake_wandb["runs"][0].calls
    assert calls[:2] == [("define_metric", ("ppo/step",), {}),
                         ("define_metric", ("ppo/*",), {"step_metric": "ppo/step"})]
    assert calls[2] == ("log", ({"ppo/step": 0, "ppo/kl": 0.1},), {"step": 0})


# ----------------------------------------------------------------------------- W&B outages


@pytest.mark.parametrize("broken", ["import", "init", "define_metric", "log", "summary", "finish"])
def test_wandb_outage_never_loses_a_metric(tmp_path, monkeypatch, fake_wandb, caplog, broken):
    if broken == "import":
        monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    elif broken == "init":
        fake_wandb["init_error"] = ConnectionError("host unreachable")
    else:
        fake_wandb["broken"] = broken
    with caplog.at_level(logging.WARNING, logger="rlhf_scaling.tracking"):
        with RunTracker(tmp_path / "r", CONFIG, stage="rm", mode="online") as t:
            t.define_step("rm/", "rm/step")
            for step in range(5):
                t.log({"rm/step": step, "rm/loss": 1.0 / (step + 1)})
            t.summary(**{"rm/val_accuracy": 0.8})
    assert [m["rm/step"] for m in read_metrics(tmp_path / "r")] == [0, 1, 2, 3, 4]
    assert read(tmp_path / "r", "summary.json") == {"rm/val_accuracy": 0.8}
    assert read(tmp_path / "r", "status.json")["status"] == "completed"
    assert len([r for r in caplog.records if "W&B unavailable" in r.getMessage()]) == 1  # warned once


def test_failed_init_is_not_retried_by_later_trackers(tmp_path, fake_wandb):
    """A study's sub-jobs would otherwise each wait out the init timeout while W&B is down."""
    fake_wandb["init_error"] = ConnectionError("host unreachable")
    for name in ("a", "b", "c"):
        with RunTracker(tmp_path / name, CONFIG, stage="rm", mode="online") as t:
            t.log({"rm/loss": 1.0})
        assert read_metrics(tmp_path / name)[0]["rm/loss"] == 1.0
    assert len(fake_wandb["calls"]) == 1


@pytest.mark.parametrize("key", ["bogus", "missing"])
def test_unreachable_host_or_missing_key_does_not_block(tmp_path, monkeypatch, key):
    """Real wandb, online, against a closed local port: init fails within the short timeout."""
    if key == "bogus":
        monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    started = time.time()
    with RunTracker(tmp_path / "r", CONFIG, stage="rm", mode="online", init_timeout=2) as t:
        t.log({"rm/loss": 0.3})
    assert time.time() - started < 15
    assert read_metrics(tmp_path / "r")[0]["rm/loss"] == 0.3
    status = read(tmp_path / "r", "status.json")
    assert status["status"] == "completed" and status["wandb_run_id"] is None
    assert "x" * 40 not in records_text(tmp_path / "r")


# ----------------------------------------------------------------------------- secrets


def test_secrets_are_scrubbed_from_every_record(tmp_path, monkeypatch, fake_wandb):
    wandb_key, hf_token = "0123456789abcdef0123456789abcdef01234567", "hf_supersecretvalue"
    monkeypatch.setenv("WANDB_API_KEY", wandb_key)
    monkeypatch.setenv("HF_TOKEN", hf_token)
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")  # a secret-looking name that is not
    monkeypatch.setattr(sys, "argv", ["rlhf-scaling", "tracking.api_key=cmdlinekey1", f"note={hf_token}"])
    config = {**CONFIG, "note": f"uses {hf_token}", "copied": wandb_key, "gold": {"token": "t0ken-value"},
              "nested": [{"password": "pw-value-1"}], "policy": {"max_new_tokens": 16, "pad_token": "<pad>"},
              "flag": "false", "unset_token": None}
    with pytest.raises(RuntimeError):
        with RunTracker(tmp_path / "r", config, stage="rm", mode="online"):
            raise RuntimeError(f"401 for key {wandb_key}; HF_TOKEN={hf_token}")
    text = records_text(tmp_path / "r")
    for secret in (wandb_key, hf_token, "t0ken-value", "pw-value-1", "cmdlinekey1", '"abc"'):
        assert secret not in text
    saved = read(tmp_path / "r", "config.json")
    assert saved["gold"]["token"] == saved["wandb_api_key"] == saved["copied"] == "***"
    assert saved["policy"] == {"max_new_tokens": 16, "pad_token": "<pad>"}  # ordinary settings kept
    assert saved["flag"] == "false" and saved["unset_token"] is None
    assert read(tmp_path / "r", "env.json")["argv"] == ["rlhf-scaling", "tracking.api_key=***", "note=***"]
    status = read(tmp_path / "r", "status.json")
    assert status["status"] == "failed" and status["error"] == "RuntimeError: 401 for key ***; HF_TOKEN=***"
    sent = json.dumps(fake_wandb["calls"][0]["config"])
    assert wandb_key not in sent and hf_token not in sent and "t0ken-value" not in sent


def test_scrub_masks_env_values_inside_strings(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_PASSWORD", "hunter2hunter2")
    assert scrub({"msg": ["login hunter2hunter2 failed"], "n": 3}) == {"msg": ["login *** failed"], "n": 3}


# ----------------------------------------------------------------------------- resume and status


def test_resume_appends_and_reuses_the_wandb_run_id(tmp_path, fake_wandb):
    with RunTracker(tmp_path / "r", CONFIG, stage="ppo", mode="online") as t:
        t.log({"ppo/step": 0})
        t.log({"ppo/step": 1})
        t.summary(a=1)
    with open(tmp_path / "r" / "metrics.jsonl", "a") as fh:
        fh.write('{"_step": 2, "ppo/st')  # the job was killed mid-write
    with RunTracker(tmp_path / "r", CONFIG, stage="ppo", mode="online", resume=True) as t:
        t.log({"ppo/step": 2})
        t.summary(b=2)
    first, second = fake_wandb["calls"]
    assert first["id"] is None and first["resume"] is None
    assert second["id"] == "run-1" and second["resume"] == "allow"
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    assert lines[2] == '{"_step": 2, "ppo/st'  # the cut line stays one unreadable line...
    assert [json.loads(line)["ppo/step"] for line in lines[:2] + lines[3:]] == [0, 1, 2]  # ...nothing else lost
    assert json.loads(lines[3])["_step"] == 2
    assert fake_wandb["runs"][1].calls[0] == ("log", ({"ppo/step": 2},), {"step": 2})
    assert read(tmp_path / "r", "summary.json") == {"a": 1, "b": 2}
    status = read(tmp_path / "r", "status.json")
    assert status["wandb_run_id"] == "run-1" and status["attempt"] == 2


def test_fresh_run_in_an_old_folder_starts_a_new_record(tmp_path, fake_wandb):
    for _ in range(2):
        with RunTracker(tmp_path / "r", CONFIG, stage="rm", mode="online") as t:
            t.log({"rm/loss": 1.0})
    assert len(read_metrics(tmp_path / "r")) == 1
    assert fake_wandb["calls"][1]["id"] is None  # a new W&B run too


def test_offline_resume_starts_a_new_offline_run(tmp_path, fake_wandb):
    """W&B cannot resume offline runs; reusing the id would make `wandb sync` clash."""
    for resume in (False, True):
        with RunTracker(tmp_path / "r", CONFIG, stage="rm", mode="offline", resume=resume) as t:
            t.log({"rm/loss": 1.0})
    assert [c["id"] for c in fake_wandb["calls"]] == [None, None]
    assert len(read_metrics(tmp_path / "r")) == 2


def test_context_manager_records_failure_and_reraises(tmp_path, fake_wandb):
    with pytest.raises(ValueError, match="bad batch"):
        with RunTracker(tmp_path / "r", CONFIG, stage="rm", mode="online") as t:
            t.log({"rm/loss": 1.0})
            raise ValueError("bad batch")
    status = read(tmp_path / "r", "status.json")
    assert status["status"] == "failed" and status["error"] == "ValueError: bad batch"
    assert "bad batch" in status["traceback"] and status["finished_utc"]
    assert fake_wandb["runs"][0].calls[-1] == ("finish", (), {"exit_code": 1})
    assert read_metrics(tmp_path / "r")[0]["rm/loss"] == 1.0


def test_interrupt_and_explicit_finish(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with RunTracker(tmp_path / "a", CONFIG, stage="rm"):
            raise KeyboardInterrupt
    assert read(tmp_path / "a", "status.json")["status"] == "interrupted"
    with RunTracker(tmp_path / "b", CONFIG, stage="rm") as t:
        t.finish("diverged", "loss is NaN")  # the first final status stands
    assert read(tmp_path / "b", "status.json")["status"] == "diverged"


def test_non_zero_ranks_write_nothing_and_never_touch_wandb(tmp_path, monkeypatch, fake_wandb):
    monkeypatch.setenv("RANK", "1")
    with RunTracker(tmp_path / "r", CONFIG, stage="rm", mode="online") as t:
        t.define_step("rm/", "rm/step")
        t.log({"rm/loss": 1.0})
        t.summary(x=1)
    assert not (tmp_path / "r").exists() and fake_wandb["calls"] == []
    assert t.run_dir == tmp_path / "r"  # recipes may still build paths from it


def test_unknown_mode_is_refused(tmp_path):
    with pytest.raises(ValueError, match="tracking mode"):
        RunTracker(tmp_path / "r", CONFIG, stage="rm", mode="wandb")


# ----------------------------------------------------------------------------- resume: each step once


def steps_of(run_dir, key):
    """(step, value) of every readable record carrying `key`, in file order."""
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if key in record:
            out.append((record[key], record.get("attempt")))
    return out


def test_a_resumed_run_replaces_the_iterations_it_repeats(tmp_path):
    """Killed after logging steps 0..5 with a checkpoint at 3: the resumed job logs 3.. again and
    its records replace the interrupted attempt's, so every step is in the record once."""
    run = tmp_path / "r"
    t = RunTracker(run, CONFIG, stage="ppo")
    t.define_step("ppo/", "ppo/step")
    t.log({"note": "setup"})
    for s in range(6):
        t.log({"ppo/step": s, "attempt": 1})
    # (no finish: SIGKILL)
    with RunTracker(run, CONFIG, stage="ppo", resume=True) as t:
        t.log({"note": "setup"})  # records without the step key are never removed
        t.define_step("ppo/", "ppo/step")
        for s in range(3, 8):
            t.log({"ppo/step": s, "attempt": 2})
    assert steps_of(run, "ppo/step") == [(0, 1), (1, 1), (2, 1)] + [(s, 2) for s in range(3, 8)]
    assert len(steps_of(run, "note")) == 2
    # A plain rerun of a completed config (stage.skip_completed=false) replaces the whole curve.
    with RunTracker(run, CONFIG, stage="ppo", resume=True) as t:
        t.define_step("ppo/", "ppo/step")
        for s in range(8):
            t.log({"ppo/step": s, "attempt": 3})
    assert steps_of(run, "ppo/step") == [(s, 3) for s in range(8)]


@pytest.mark.parametrize("resume_at", [1, 2])
def test_resume_keeps_an_earlier_ensemble_members_steps(tmp_path, resume_at):
    """RM ensembles count rm/step from 1 per member: resuming member 1 (from its checkpoint at step
    1, or from scratch) replaces member 1's repeated steps only, never member 0's."""
    run = tmp_path / "r"
    t = RunTracker(run, CONFIG, stage="rm")
    t.define_step("rm/", "rm/step")
    for member, last in ((0, 4), (1, 3)):
        for s in range(1, last + 1):
            t.log({"rm/step": s, "attempt": 1, "rm/member": member})
    with RunTracker(run, CONFIG, stage="rm", resume=True) as t:
        t.define_step("rm/", "rm/step")
        for s in range(resume_at, 5):
            t.log({"rm/step": s, "attempt": 2, "rm/member": 1})
    member_1 = [(s, 1) for s in range(1, resume_at)] + [(s, 2) for s in range(resume_at, 5)]
    assert steps_of(run, "rm/step") == [(1, 1), (2, 1), (3, 1), (4, 1)] + member_1



def test_resume_before_the_next_member_logged_keeps_the_finished_members_curve(tmp_path):
    """Killed after member 0 finished and before member 1 logged anything: member 1's first
    record (rm/step=1) must not take member 0's steps >= 1 for its own repeats."""
    run = tmp_path / "r"
    t = RunTracker(run, CONFIG, stage="rm")
    t.define_step("rm/", "rm/step", series=("rm/member",))
    for s in range(1, 5):
        t.log({"rm/step": s, "attempt": 1, "rm/member": 0})
    with RunTracker(run, CONFIG, stage="rm", resume=True) as t:
        t.define_step("rm/", "rm/step", series=("rm/member",))
        for s in range(1, 4):
            t.log({"rm/step": s, "attempt": 2, "rm/member": 1})
    assert steps_of(run, "rm/step") == [(s, 1) for s in range(1, 5)] + [(s, 2) for s in range(1, 4)]

def test_every_record_is_strict_json_and_the_runs_table_reads_it(tmp_path):
    """NaN and ±inf (a diverged loss, an infinite best value) are null in every file, so strict
    parsers read the record; the runs table sees them as missing values."""
    from rlhf_scaling.analysis.runs import load_local_runs

    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON literal {c}"))

    run = tmp_path / "runs" / "r"
    with RunTracker(run, {**CONFIG, "x": float("inf")}, stage="rm") as t:
        t.log({"rm/step": 1, "rm/loss": float("nan"), "rm/best": float("-inf"), "rm/ok": 0.5})
        t.summary(**{"rm/val_loss": float("inf"), "rm/curve": [1.0, float("nan")], "rm/val_accuracy": 0.75})
    for name in ("config.json", "summary.json", "status.json", "env.json"):
        strict((run / name).read_text())
    [line] = (run / "metrics.jsonl").read_text().splitlines()
    record = strict(line)
    assert record["rm/loss"] is None and record["rm/best"] is None and record["rm/ok"] == 0.5
    summary = strict((run / "summary.json").read_text())
    assert summary["rm/val_loss"] is None and summary["rm/curve"] == [1.0, None]
    table = load_local_runs(tmp_path / "runs")
    row = table.iloc[0]
    assert len(table) == 1 and row["rm/ok"] == 0.5 and row["summary.rm/val_accuracy"] == 0.75
    for missing in ("rm/loss", "rm/best", "summary.rm/val_loss"):  # read as missing (or a dropped empty column)
        assert pd.isna(row.get(missing))


def test_a_run_is_identified_by_the_content_of_the_files_it_reads_not_their_path(tmp_path):
    """An edited data file (or re-saved local model) is a different run: a new run folder, and a
    completed record of the old content is never reported as this run's result."""
    data = tmp_path / "prefs.jsonl"
    data.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n')
    config = {"task": {"name": "jsonl", "path": str(data)}, "seed": 0}
    first = tracking.run_id(config)
    run = tmp_path / "run"
    with RunTracker(run, config, stage="rm") as tracker:
        tracker.summary(acc=0.5)
    assert tracking.completed_summary(run, config) == {"acc": 0.5}
    assert json.loads((run / "inputs.json").read_text()) == {"task.path": tracking_digest(data)}

    data.write_text('{"prompt": "a", "chosen": "c", "rejected": "b"}\n')  # same size, labels flipped
    assert tracking.run_id(config) != first
    assert tracking.completed_summary(run, config) is None
    assert tracking.identity_differences(run, config) == ["inputs.task.path"]

    moved = tmp_path / "moved.jsonl"  # same content at another path: the path is in the config,
    moved.write_bytes(data.read_bytes())  # so it is another config, but its digest is the same
    assert tracking_digest(moved) == tracking_digest(data)


def tracking_digest(path):
    from rlhf_scaling.fingerprint import path_digest

    return path_digest(path)
