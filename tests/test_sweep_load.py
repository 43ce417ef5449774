"""Load: a sweep of many tiny jobs of the project's own command on the local Slurm cluster lands,
every job completes and writes its record, and the runs table holds every run.

The jobs are `stage=data` runs that all reuse ONE preference-data artifact (the swept key,
ppo.steps, is not part of the data artifact's key), so each job is the real entry point, tracker,
artifact lookup and run record at the cost of a Python start-up. 4 jobs run in the default suite;
the 200-job version is marked `load` (deselected by default; `make test-load` runs it).
"""

import json
import subprocess
import sys

import pytest

from rlhf_scaling.analysis.runs import load_local_runs, summary_table

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

DATA = ["stage=data", "progress=false", "sft.steps=50", "sft.n_demos=200", "data.comparison_budget=96",
        "data.n_eval_prompts=8"]


@pytest.mark.parametrize("n_jobs", [4, pytest.param(200, marks=[pytest.mark.load, pytest.mark.timeout(3600)])])
def test_sweep_of_many_tiny_jobs_completes_with_every_record(slurm_cluster, tmp_path, n_jobs):
    store, sweep = tmp_path / "store", tmp_path / "sweep"
    env = slurm_cluster.env()
    build = subprocess.run([sys.executable, "-m", "rlhf_scaling.cli", f"hydra.run.dir={tmp_path / 'build'}",
                            f"artifacts_dir={store}", "stage.build_upstream=true", *DATA],
                           env=env, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]

    cmd = [sys.executable, "-m", "rlhf_scaling.cli", "-m", "hydra/launcher=slurm", "slurm=local",
           "slurm.cpus_per_task=1", "slurm.mem_gb=1", f"hydra.sweep.dir={sweep}", f"artifacts_dir={store}",
           "experiment=load", *DATA, f"ppo.steps=range(1,{n_jobs + 1})"]
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
    assert runs["summary.data/comparisons"].eq(96).all()  # every job found the shared artifact
    assert runs["summary.data/artifact"].nunique() == 1
    assert len(list((store / "data").glob("*/COMPLETE"))) == 1  # built once, by the set-up run
