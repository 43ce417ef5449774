"""Load: a sweep of many tiny jobs of the project's own command on the local Slurm cluster lands,
every job completes and writes its record, and the runs table holds every run.

The jobs are `stage=data` runs that all reuse ONE preference-data artifact (a copy of the session's
ppo_store; the swept key, ppo.steps, is not part of the data artifact's key), so each job is the real
entry point, tracker, artifact lookup and run record at the cost of a Python start-up. 4 jobs run in the default suite;
the 200-job version is marked `load` (deselected by default; `make test-load` runs it).
"""

import json
import shutil
import subprocess
import sys

import pytest

from rlhf_scaling.analysis.runs import load_local_runs, summary_table

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.mark.parametrize("n_jobs", [4, pytest.param(200, marks=[pytest.mark.load, pytest.mark.timeout(3600)])])
def test_sweep_of_many_tiny_jobs_completes_with_every_record(slurm_cluster, ppo_store, tmp_path, n_jobs):
    store, sweep = tmp_path / "store", tmp_path / "sweep"
    env = slurm_cluster.env()
    shutil.copytree(ppo_store.artifacts, store, ignore=shutil.ignore_patterns("rm"))  # its SFT policy and data
    (built,) = [p.parent.name for p in (store / "data").glob("*/COMPLETE")]
    built_record = ppo_store.artifacts.parent / "runs" / "data" / "summary.json"
    comparisons = json.loads(built_record.read_text())["data/comparisons"]

    cmd = [sys.executable, "-m", "rlhf_scaling.cli", "-m", "hydra/launcher=slurm", "slurm=local",
           "slurm.cpus_per_task=1", "slurm.mem_gb=1", f"hydra.sweep.dir={sweep}", f"artifacts_dir={store}",
           "experiment=load", "stage=data", "progress=false", *ppo_store.overrides, f"ppo.steps=range(1,{n_jobs + 1})"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]

    scripts = list((sweep / ".submitit").rglob("*_submission.sh"))
    assert len(scripts) == 1 and f"#SBATCH --array=0-{n_jobs - 1}%" in scripts[0].read_text()  # one array
    statuses = [json.loads(p.read_text()) for p in sweep.glob("*/status.json")]
    assert len(statuses) == n_jobs
    assert all(s["status"] == "completed" for s in statuses)

    table = load_local_runs(sweep)
    runs = summary_table(table)
    assert len(runs) == n_jobs and runs["run_id"].is_unique
    assert sorted(runs["config.ppo.steps"].astype(int)) == list(range(1, n_jobs + 1))
    assert runs["summary.data/comparisons"].eq(comparisons).all()  # every job found the shared artifact
    assert runs["summary.data/artifact"].nunique() == 1
    assert [p.parent.name for p in (store / "data").glob("*/COMPLETE")] == [built]  # none built another
