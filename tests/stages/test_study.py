"""The embedded default study through the real command line, with tiny budgets."""

import json
import subprocess
import sys

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

TINY_STUDY = ["sft.steps=50", "sft.n_demos=400", "data.comparison_budget=384", "data.n_eval_prompts=32",
              "rm_train.epochs=1", "bon.n_max=16", "bon.n_eval_prompts=16", "ppo.steps=6",
              "ppo.prompts_per_step=8", "ppo.minibatch_size=8", "progress=false"]


def test_study_end_to_end_writes_records_table_and_figures(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "rlhf_scaling.cli", f"hydra.run.dir={run_dir}",
                           f"artifacts_dir={tmp_path / 'artifacts'}", *TINY_STUDY],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "figure:" in proc.stdout
    for sub in ("sft", "data", "rm_tiny-xs", "rm_tiny-s", "rm_tiny-m", "bon_tiny-xs", "ppo_tiny-m"):
        for name in ("config.json", "env.json", "metrics.jsonl", "status.json"):
            assert (run_dir / sub / name).is_file(), (sub, name)
        assert json.loads((run_dir / sub / "status.json").read_text())["status"] == "completed"
    table = pd.read_csv(run_dir / "summary.csv")
    assert table["rm"].tolist() == ["tiny-xs", "tiny-s", "tiny-m"]  # ordered by parameter count
    for col in ("rm/val_accuracy", "bon/alpha_gold", "bon/beta_gold", "ppo/final_gold", "ppo/final_kl"):
        assert table[col].notna().all(), col
    assert "ppo/alpha_gold" in table  # NaN allowed: 6 PPO iterations may have too few KL > 0 points to fit
    for kind in ("bon", "ppo"):
        assert (run_dir / "figures" / f"overoptimization_{kind}.png").stat().st_size > 10_000
        assert (run_dir / "figures" / f"overoptimization_{kind}.pdf").is_file()
    ppo = pd.read_json(run_dir / "ppo_tiny-s" / "metrics.jsonl", lines=True).dropna(subset=["ppo/step"])
    assert {"ppo/proxy", "ppo/gold", "ppo/kl"} <= set(ppo.columns) and len(ppo) == 6
    # A second run in the same folder reuses every artifact (nothing retrained).
    again = subprocess.run([sys.executable, "-m", "rlhf_scaling.cli", f"hydra.run.dir={tmp_path / 'run2'}",
                            f"artifacts_dir={tmp_path / 'artifacts'}", "study.run_ppo=false", *TINY_STUDY],
                           capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    retrained = (tmp_path / "run2" / "rm_tiny-s" / "metrics.jsonl").read_text()
    assert '"rm/step"' not in retrained  # no training step was logged: the RM artifact was reused
    assert (tmp_path / "run2" / "bon_tiny-s" / "bon_curve.csv").is_file()


def test_single_stage_without_upstream_fails_with_the_build_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rlhf_scaling.cli", "stage=rm", f"hydra.run.dir={tmp_path / 'r'}",
                           f"artifacts_dir={tmp_path / 'a'}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "rlhf-scaling stage=data" in proc.stderr
    status = json.loads((tmp_path / "r" / "status.json").read_text())
    assert status["status"] == "failed" and "stage=data" in status["error"]
