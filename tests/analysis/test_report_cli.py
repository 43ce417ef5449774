"""`rlhf-scaling-report` as a user runs it (a subprocess): a narrow table per stage in the terminal,
with the settings that vary and the key metrics, the full table in runs.csv, a best-of-n or PPO job
showing the accuracy of the RM it used, and a missing runs folder as one line with exit status 2."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Slow for `make test-fast` (< 3 min): real runs, or every figure/script drawn; `make test` runs them.
pytestmark = pytest.mark.slow

REPORT = Path(sys.executable).parent / "rlhf-scaling-report"


def report(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPORT), *args], capture_output=True, text=True, cwd=cwd, timeout=300,
                          env=os.environ.copy())


def block(stdout: str, stage: str) -> list:
    """The lines of the table printed under '== <stage> (...) ==': header first."""
    text = stdout.split(f"== {stage} (", 1)[1].split("\n", 1)[1]
    return text.split("\n\n", 1)[0].splitlines()


@pytest.fixture(scope="module")
def synthetic_report(runs_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "out"
    proc = report("--runs", str(runs_root), "--out", str(out), cwd=out.parent)
    assert proc.returncode == 0, proc.stderr
    return proc, out


def test_the_terminal_table_is_narrow_and_names_what_varies(synthetic_report, synthetic):
    proc, out = synthetic_report
    lines = proc.stdout.splitlines()
    assert max(len(line) for line in lines if not line.startswith("settings that vary")) <= 160
    varies = next(line for line in lines if line.startswith("settings that vary: "))
    for key in ("experiment", "rm.name", "data.responses_per_prompt", "data.comparison_budget",
                "ppo.samples_per_prompt"):
        assert f"{key} (" in varies
    assert "rm.d_model" not in varies  # the RM name already says it
    header = block(proc.stdout, "rm")[0].split()
    assert header[:2] == ["run_id", "status"] and "rm/val_accuracy" in header and "ppo/final_gold" not in header
    assert "nan" not in proc.stdout.lower()


def test_the_full_table_is_in_runs_csv(synthetic_report, synthetic):
    proc, out = synthetic_report
    with open(out / "runs.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == synthetic.N_RUNS
    # every config key, constant ones included, and every summary metric
    for column in ("config.ppo.steps", "config.tracking.mode", "summary.bon/n_max", "summary.rm/artifact"):
        assert column in rows[0]
    assert f"({len(rows[0])} columns) in {out / 'runs.csv'}" in proc.stdout


def test_a_best_of_n_or_ppo_job_shows_the_accuracy_of_the_rm_it_used(synthetic_report, synthetic):
    proc, _ = synthetic_report
    for stage in ("bon", "ppo"):
        lines = block(proc.stdout, stage)
        column = lines[0].split().index("rm/val_accuracy")
        for rm, n_params in synthetic.RM_SIZES.items():
            row = next(line.split() for line in lines if line.strip().startswith(f"study/{stage}_{rm} "))
            assert float(row[column]) == pytest.approx(0.55 + 0.02 * math.log10(n_params), abs=1e-3)


def test_a_missing_runs_folder_is_one_line_and_exit_2(tmp_path):
    for command in (REPORT, REPORT.parent / "rlhf-scaling-figures"):
        proc = subprocess.run([str(command), "--runs", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")],
                              capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines() == [f"{command.name}: error: no such runs folder: {tmp_path / 'nowhere'}"]
        assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_report_of_real_runs_fills_what_a_reusing_job_did_not_log(real_runs_root, tmp_path):
    """The real sweep's `reuse` RM job found its RM built and logged no training: the report shows
    the comparisons that RM trained on (from the job that built it), and the best-of-n job on that
    RM shows its accuracy; no NaN anywhere."""
    proc = report("--runs", str(real_runs_root), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "nan" not in proc.stdout.lower()
    rm = block(proc.stdout, "rm")
    head = rm[0].split()
    reuse = next(line.split() for line in rm if line.strip().startswith("reuse/"))
    built = next(row for row in (line.split() for line in rm) if row[0].startswith("sizes/")  # the job that built it
                 and [row[head.index(k)] for k in ("rm.name", "comparison_budget", "rm_train.seed")] == ["tiny-xs", "96", "0"])
    assert len(max(rm, key=len)) <= 200  # run ids cut (uncut, these lines run to ~400), settings in their own columns
    assert reuse[head.index("rm/train_comparisons")] == built[head.index("rm/train_comparisons")] == "96"
    bon = block(proc.stdout, "bon")
    accuracy = bon[1].split()[bon[0].split().index("rm/val_accuracy")]
    assert accuracy == built[head.index("rm/val_accuracy")]
