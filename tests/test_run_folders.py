"""Run folders through the CLI, as a user meets them: a run's folder is named by its config, so two
commands started together never share a record, the same command again resumes (a job killed or
interrupted mid-training ends with the uninterrupted curve) or reports, a second copy is refused
while the first runs; bad input is one line (exit 2) and writes nothing."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from ppo_job import PPO_JOB, ppo_job_env

from rlhf_scaling.analysis.runs import load_local_runs
from rlhf_scaling.artifacts import locked


def cli(*args):
    return [sys.executable, "-m", "rlhf_scaling.cli", *args]


def tree(root: Path) -> list:
    """Every path under root, relative, sorted."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def run_folders(cwd: Path, stage: str) -> list:
    return sorted((cwd / "outputs" / "default" / stage).glob("*/"))


# ----------------------------------------------------------------------------- input errors


LONG = "x" * 300


@pytest.mark.parametrize("args, needle", [
    (["rm_train.lr=inf"], "rm_train.lr: must be a finite number, got inf"),
    (["experiment=../../../etc"], "experiment: '../../../etc' must be a plain name"),
    ([f"experiment={LONG}"], "experiment: 'xxxxxxxx"),
    ([f"model@rm=tiny-s", f"rm.name={LONG}"], "rm.name:"),
    (["rm_trian.lr=1"], "Could not override 'rm_trian.lr'"),
    (["seed=abc"], "Value 'abc' of type 'str' could not be converted to Integer"),
    (["stage=nope"], "Could not find 'stage/nope'"),
    (["ppo.algorithm=rloo", "ppo.samples_per_prompt=1"], "ppo.samples_per_prompt: ppo.algorithm=rloo compares"),
])
def test_input_errors_are_one_line_exit_2_and_write_nothing(tmp_path, args, needle):
    """Validation and composition errors (and names that would leave outputs/ or exceed the file
    system's limit) are reported before Hydra creates a folder: nothing is written anywhere."""
    cwd = tmp_path / "a" / "b" / "c"
    cwd.mkdir(parents=True)
    proc = subprocess.run(cli("stage=rm", *args), cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: ") and needle in line, line
    assert tree(tmp_path) == ["a", "a/b", "a/b/c"]


def test_a_validation_error_in_an_explicit_run_folder_leaves_no_folder(tmp_path):
    """With hydra.run.dir given, Hydra creates the folder before our validation runs: a refused
    job removes it again (it holds only Hydra's own files, no record)."""
    proc = subprocess.run(cli("stage=rm", "rm_train.lr=nan", f"hydra.run.dir={tmp_path / 'run'}"),
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "rm_train.lr: must be a finite number" in proc.stderr
    assert tree(tmp_path) == []


def _local_model(path: Path) -> Path:
    """A tiny sequence-classification model with the synthetic tokenizer, saved like a hub mirror."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForSequenceClassification

    from rlhf_scaling.data.synthetic import build_tokenizer, make_task

    tok = build_tokenizer(make_task(8, 6, 6, 16))
    cfg = GPTNeoXConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, num_labels=1, pad_token_id=tok.pad_token_id,
                        eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    GPTNeoXForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.mark.slow
def test_a_failed_data_load_leaves_only_the_record_that_says_why(tmp_path):
    """A malformed file, a data folder a library cannot read: one line each, exit 2; the artifact
    store keeps no .partial/ folder and no lock file; the run folder keeps its failed record."""
    model = _local_model(tmp_path / "model")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{bad\n')
    mixed = tmp_path / "mixed"  # a folder of files whose records differ in shape
    mixed.mkdir()
    (mixed / "x.jsonl").write_text('{"prompt": "a", "chosen": "b", "rejected": "c", "margin": 1}\n')
    (mixed / "y.jsonl").write_text('{"prompt": "a", "chosen": "b", "rejected": "c", "scores": [1, 2]}\n')
    common = ["stage=data", "task=jsonl", "model@policy=local", f"policy.name_or_path={model}", "gold=model",
              f"gold.name_or_path={model}", f"artifacts_dir={tmp_path / 'artifacts'}", "progress=false"]
    for path, needle in (("bad.jsonl", "bad.jsonl:2: malformed JSON"), ("mixed", "mixed: cannot load")):
        proc = subprocess.run(cli(*common, f"task.path={tmp_path / path}"), cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 2, proc.stderr[-2000:]
        [line] = proc.stderr.strip().splitlines()[-1:]
        assert line.startswith("error: ") and needle in line, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "artifacts").exists()  # no .partial/, no .lock, no empty store folders
    runs = run_folders(tmp_path, "data")
    assert len(runs) == 2
    for run in runs:
        status = json.loads((run / "status.json").read_text())
        assert status["status"] == "failed" and "DataError" in status["error"]
        assert not (run / ".lock").exists()


# ----------------------------------------------------------------------------- one run, one folder


@pytest.mark.slow
def test_two_runs_started_together_get_their_own_folders_and_the_same_command_reports(ppo_store, tmp_path):
    """Two different `stage=rm` commands started in the same second: two folders, each a complete
    record of its own config, both in the runs table. The same command again finds its folder and
    reports the recorded summary; a copy started while that folder is in use is refused."""
    # (the store holds the default tiny-s RM already: these two train tiny-xs RMs of their own)
    base = [f"artifacts_dir={ppo_store.artifacts}", *ppo_store.overrides, "stage=rm", "progress=false",
            "model@rm=tiny-xs"]
    variants = {"0.001": ["rm_train.lr=0.001"], "0.002": ["rm_train.lr=0.002"]}
    jobs = {lr: subprocess.Popen(cli(*base, *extra), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for lr, extra in variants.items()}
    for job in jobs.values():
        out, err = job.communicate(timeout=600)
        assert job.returncode == 0, err[-3000:]
    runs = run_folders(tmp_path, "rm")
    assert len(runs) == 2
    by_lr = {}
    for run in runs:
        assert json.loads((run / "status.json").read_text())["status"] == "completed"
        config = json.loads((run / "config.json").read_text())
        by_lr[str(config["rm_train"]["lr"])] = run
        steps = pd.read_json(run / "metrics.jsonl", lines=True)["rm/step"].dropna().astype(int).tolist()
        assert steps == list(range(1, len(steps) + 1)) and steps  # one run's steps, not two interleaved
        assert json.loads((run / "summary.json").read_text())["rm/val_accuracy"] > 0
    assert sorted(by_lr) == ["0.001", "0.002"]
    table = load_local_runs(tmp_path / "outputs")
    assert sorted(table.groupby("run_name")["config.rm_train.lr"].first()) == [0.001, 0.002]

    # The same command again (how it is watched may differ): the recorded summary, nothing rerun.
    mine = by_lr["0.002"]
    record = (mine / "metrics.jsonl").read_text()
    again = subprocess.run(cli(*base, *variants["0.002"], "progress=true"), cwd=tmp_path, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already completed with this config" in again.stdout + again.stderr
    assert "rm/val_accuracy" in again.stdout + again.stderr
    assert run_folders(tmp_path, "rm") == runs and (mine / "metrics.jsonl").read_text() == record

    # A second copy while the folder is in use (the test holds its lock, as a running copy would).
    with locked(mine / ".lock"):
        busy = subprocess.run(cli(*base, *variants["0.002"]), cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)
    assert busy.returncode == 2
    [line] = busy.stderr.strip().splitlines()
    assert line.startswith("error: ") and "is in use by another running copy of this command" in line
    assert json.loads((mine / "status.json").read_text())["status"] == "completed"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_the_plain_rerun_of_an_interrupted_command_resumes_and_logs_each_step_once(ppo_store, ppo_plain_run, tmp_path,
                                                                                  sig):
    """Ctrl-C, a scheduler's SIGTERM (what Slurm sends before a preemption), a SIGKILL: the same command
    again (no hydra.run.dir) finds the interrupted run's folder, resumes from its last checkpoint, the
    record holds every step once, and the curve is the uninterrupted run's (ppo_plain_run, same job)."""
    command = cli(f"artifacts_dir={ppo_store.artifacts}", *ppo_store.overrides, *PPO_JOB)
    # SIGINT at its default, as in a user's terminal: an xdist worker ignores SIGINT and a child
    # inherits an ignored signal, so under `make test` Ctrl-C would otherwise never reach the job.
    job = subprocess.Popen(command, cwd=tmp_path, env=ppo_job_env(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    run = None
    # Signal it as soon as a checkpoint exists and training has gone past it (3 of 8 iterations logged:
    # on a loaded machine the poll can lag a few iterations behind, and the job must not finish first).
    while time.time() < deadline:
        found = run_folders(tmp_path, "ppo")
        run = found[0] if found else None
        if run is not None and (run / "checkpoint" / "DONE").exists() and \
                (run / "metrics.jsonl").read_text().count('"ppo/step"') >= 3:
            break
        assert job.poll() is None, "the job ended before it could be signalled"
        time.sleep(0.05)
    job.send_signal(sig)
    job.wait(120)
    logged = pd.read_json(run / "metrics.jsonl", lines=True)["ppo/step"].dropna().tolist()
    assert max(logged) < 7, "the job finished before it could be signalled"
    assert json.loads((run / "status.json").read_text())["status"] in ("interrupted", "running")  # running: SIGKILL

    rerun_at = time.time()
    again = subprocess.run(command, cwd=tmp_path, env=ppo_job_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert run_folders(tmp_path, "ppo") == [run]
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "completed" and status["attempt"] == 2
    metrics = pd.read_json(run / "metrics.jsonl", lines=True, convert_dates=False).dropna(subset=["ppo/step"])
    steps = metrics["ppo/step"].astype(int).tolist()
    assert steps == list(range(8))  # each step once, in order (so step 0 too: resumed, not rerun from 0)
    assert metrics["_time"].iloc[0] < rerun_at  # step 0 is the first attempt's: resumed, not rerun from 0
    pd.testing.assert_frame_equal(pd.read_csv(ppo_plain_run / "ppo_curve.csv"), pd.read_csv(run / "ppo_curve.csv"),
                                  rtol=1e-5)
