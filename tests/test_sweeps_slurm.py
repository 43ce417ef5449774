"""A real scaling sweep of the project's own command through the submitit Slurm launcher.

`rlhf-scaling -m +sweep=rm_size hydra/launcher=slurm slurm=local` with tiny budgets: the three RM
sizes land as ONE Slurm array; every job builds or reuses the shared SFT policy and preference
data under their artifact locks (so they are built once), trains its RM and writes its record.
"""

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

TINY = ["sft.steps=30", "sft.n_demos=200", "data.comparison_budget=192", "data.n_eval_prompts=16",
        "rm_train.epochs=1", "rm_train.batch_size=8", "progress=false"]


def test_rm_size_sweep_lands_as_one_array_and_shares_upstream_artifacts(slurm_cluster, tmp_path):
    sweep_dir = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "rlhf_scaling.cli", "-m", "+sweep=rm_size", "hydra/launcher=slurm", "slurm=local",
           "model@rm=tiny-xs,tiny-s,tiny-m", f"hydra.sweep.dir={sweep_dir}", f"artifacts_dir={tmp_path / 'artifacts'}",
           "slurm.mem_gb=2", *TINY]
    proc = subprocess.run(cmd, cwd=tmp_path, env=slurm_cluster.env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    scripts = list((sweep_dir / ".submitit").rglob("*_submission.sh"))
    assert len(scripts) == 1 and "#SBATCH --array=0-2%" in scripts[0].read_text()
    runs = sorted(p.parent for p in sweep_dir.glob("*/status.json"))
    assert len(runs) == 3
    array_ids = set()
    for run in runs:
        assert json.loads((run / "status.json").read_text())["status"] == "completed"
        env = json.loads((run / "env.json").read_text())
        array_ids.add(env["slurm"]["SLURM_ARRAY_JOB_ID"])
        assert json.loads((run / "summary.json").read_text())["rm/val_accuracy"] > 0
    assert len(array_ids) == 1
    # The SFT policy and the data were built once and shared; one RM per size.
    assert len(list((tmp_path / "artifacts" / "sft").glob("*/COMPLETE"))) == 1
    assert len(list((tmp_path / "artifacts" / "data").glob("*/COMPLETE"))) == 1
    assert len(list((tmp_path / "artifacts" / "rm").glob("*/COMPLETE"))) == 3
    # Submitting the finished sweep again reuses every artifact: no job retrains.
    again = subprocess.run(cmd[:-len(TINY) - 1] + [f"hydra.sweep.dir={tmp_path / 'again'}", *TINY[:-1], "progress=false"],
                           cwd=tmp_path, env=slurm_cluster.env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    for metrics in (tmp_path / "again").glob("*/metrics.jsonl"):
        assert '"rm/step"' not in metrics.read_text() and '"sft/step"' not in metrics.read_text()
