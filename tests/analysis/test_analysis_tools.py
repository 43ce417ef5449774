"""Runs table written by the real tracker, fits through the figure pipeline, deterministic figures.
(W&B loader parity is in test_runs.py.)"""

import json

import numpy as np
import pandas as pd
import pytest

from rlhf_scaling.analysis.figures import fitted_coefficients, write_figures
from rlhf_scaling.analysis.runs import load_local_runs, summary_table
from rlhf_scaling.analysis.report import write_report
from rlhf_scaling.bon_math import kl_best_of_n
from rlhf_scaling.curves import bon_form, rl_form
from rlhf_scaling.tracking import RunTracker

TRUE = {"tiny-xs": (3000, 0.8, 0.40, 0.9, 0.6), "tiny-s": (25000, 0.9, 0.35, 1.0, 0.5), "tiny-m": (100000, 1.0, 0.3, 1.1, 0.4)}


def config(rm, stage, k=4, budget=1536, spp=2):
    return {"rm": {"name": rm}, "stage": {"name": stage}, "experiment": "synthetic",
            "data": {"responses_per_prompt": k, "comparison_budget": budget}, "ppo": {"samples_per_prompt": spp}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A study-shaped folder written through the real tracker; curves follow the Gao forms exactly."""
    root = tmp_path_factory.mktemp("runs")
    for rm, (n_params, a_bon, b_bon, a_rl, b_rl) in TRUE.items():
        with RunTracker(root / f"rm_{rm}", config(rm, "rm"), stage="rm") as t:
            for step in range(1, 4):
                t.log({"rm/step": step, "rm/loss": 0.7 - 0.01 * step})
            t.summary(**{"rm/val_accuracy": 0.55 + 0.1 * np.log10(n_params / 1000) / 2, "rm/n_params": n_params})
        with RunTracker(root / f"bon_{rm}", config(rm, "bon"), stage="bon") as t:
            for n in (1, 2, 4, 8, 16, 32, 64):
                d = np.sqrt(kl_best_of_n(n))
                t.log({"bon/n": n, "bon/sqrt_kl": d, "bon/kl": d * d, "bon/gold": 1.0 + bon_form(d, a_bon, b_bon),
                       "bon/proxy": 0.5 * d})
        with RunTracker(root / f"ppo_{rm}", config(rm, "ppo"), stage="ppo") as t:
            for step in range(30):
                d = 0.1 * step
                t.log({"ppo/step": step, "ppo/sqrt_kl": d, "ppo/kl": d * d, "ppo/gold": 2.0 + float(rl_form(d, a_rl, b_rl)),
                       "ppo/proxy": d})
            t.summary(**{"ppo/peak_gold": 3.0, "ppo/final_gold": 1.0})
    with open(root / "ppo_tiny-m" / "metrics.jsonl", "a") as fh:
        fh.write('{"_step": 99, "ppo/st')  # a line cut by a kill
    return root


def test_runs_table_layout(runs):
    df = load_local_runs(runs)
    assert df["run_id"].nunique() == 9
    assert {"config.rm.name", "config.data.responses_per_prompt", "summary.rm/val_accuracy", "ppo/gold", "_step"} <= set(df)
    assert set(df["stage"]) == {"rm", "bon", "ppo"} and set(df["status"]) == {"completed"}
    assert len(df[df["run_id"] == "ppo_tiny-m"]) == 30  # the truncated line is skipped, not fatal
    table = summary_table(df)
    assert len(table) == 9 and "config.rm.name" in table


def test_fits_recover_the_generating_coefficients(runs):
    coef = fitted_coefficients(load_local_runs(runs))
    for _, row in coef.iterrows():
        n_params, a_bon, b_bon, a_rl, b_rl = TRUE[row["rm"]]
        expected = (a_bon, b_bon) if row["kind"] == "bon" else (a_rl, b_rl)
        assert (row["alpha"], row["beta"]) == pytest.approx(expected, abs=1e-9)
        assert row["n_params"] == n_params


@pytest.mark.slow  # for `make test-fast`: every figure drawn / a real run
def test_figures_are_all_written_and_byte_identical_twice(runs, tmp_path):
    df = load_local_runs(runs)
    first = write_figures(df, tmp_path / "a", str(runs))
    second = write_figures(df, tmp_path / "b", str(runs))
    names = {p.stem for p in first}
    assert {"overoptimization_bon", "overoptimization_ppo", "coefficients_vs_rm_size", "rm_accuracy",
            "ppo_training"} <= names
    for p in first:
        assert p.read_bytes() == (tmp_path / "b" / p.name).read_bytes()
        assert (p.with_suffix(".pdf")).read_bytes() == (tmp_path / "b" / p.with_suffix(".pdf").name).read_bytes()


@pytest.mark.slow  # for `make test-fast`: every figure drawn / a real run
def test_report_writes_table_and_markdown(runs, tmp_path, capsys):
    report = write_report(str(runs), tmp_path)
    assert (tmp_path / "runs.csv").is_file() and "![overoptimization_bon]" in report.read_text()
    assert "tiny-xs" in capsys.readouterr().out
