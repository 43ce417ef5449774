"""The scripts and notebooks in analysis/: each runs as a plain script (a subprocess, as a researcher
runs it) against the synthetic runs folder, writes its figures as non-empty PNG and PDF, prints
tables whose numbers are the library's on the same runs, and is a jupytext percent-format notebook."""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from rlhf_scaling.analysis.figures import (FIGURES, FORM_OF, coefficient_scaling, fitted_coefficients,
                                           write_figures)
from rlhf_scaling.analysis.runs import summary_table
from rlhf_scaling.curves import peak

# Slow for `make test-fast` (< 3 min): real runs, or every figure/script drawn; `make test` runs them.
pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
ANALYSIS = REPO_ROOT / "analysis"
# Every script in analysis/ and the figures it writes; a new script must be listed here (and so tested).
EXPECTED = {
    "fig_a_overoptimization.py": ["overoptimization_bon", "overoptimization_ppo"],
    "fig_b_coefficients.py": ["coefficients_vs_rm_size"],
    "fig_c_rm_accuracy.py": ["rm_accuracy"],
    "fig_d_samples_per_prompt.py": ["samples_per_prompt", "samples_per_prompt_matched"],
    "fig_e_diversity.py": ["diversity_heatmap", "diversity"],
    "fig_f_ppo_training.py": ["ppo_training"],
    "fig_g_methods.py": ["methods"],
    "explore_study.py": ["overoptimization_bon", "overoptimization_ppo", "coefficients_vs_rm_size", "rm_accuracy"],
}
NOTEBOOK_ONLY = {"explore_study.py"}  # run as a notebook is: no argv, the runs from the environment
SCRIPTS = sorted(p.name for p in ANALYSIS.glob("*.py") if not p.name.startswith("_"))


def run_script(name: str, runs_root: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    """python analysis/<name> from a foreign working directory; a notebook gets its runs folder
    and output folder through RLHF_RUNS / RLHF_OUT, a script through --runs / --out."""
    env = {k: v for k, v in os.environ.items() if k not in ("RLHF_RUNS", "RLHF_OUT")}
    argv = list(args)
    if name in NOTEBOOK_ONLY:
        env.update(RLHF_RUNS=str(runs_root), RLHF_OUT=str(out))
    elif not args:
        argv = ["--runs", str(runs_root), "--out", str(out)]
    return subprocess.run([sys.executable, str(ANALYSIS / name), *argv], capture_output=True, text=True,
                          env=env, cwd=out.parent, timeout=120)


@pytest.fixture(scope="module")
def ran(runs_root, tmp_path_factory):
    """name -> (completed process, its output folder); each script runs once for the module."""
    cache = {}

    def get(name: str):
        if name not in cache:
            out = tmp_path_factory.mktemp(name.removesuffix(".py")) / "out"
            cache[name] = run_script(name, runs_root, out), out
        return cache[name]

    return get


@pytest.fixture(scope="module")
def library_figures(runs_df, runs_root, tmp_path_factory) -> Path:
    """Every figure as the library's figures command writes it for the same runs and source."""
    out = tmp_path_factory.mktemp("library")
    write_figures(runs_df, out, str(runs_root))
    return out


def printed_table(stdout: str, title: str) -> pd.DataFrame:
    """The table a script printed between '== title ==' and the next blank line."""
    marker = f"== {title} ==\n"
    assert marker in stdout, f"no table {title!r} in:\n{stdout}"
    block = stdout.split(marker, 1)[1].split("\n\n", 1)[0]
    return pd.read_csv(io.StringIO(block), sep=r"\s+")


def assert_same(printed: pd.DataFrame, expected: pd.DataFrame, key, columns) -> None:
    """The same rows (by key) and, in `columns`, the same numbers to the 6 printed digits."""
    printed, expected = printed.set_index(key).sort_index(), expected.set_index(key).sort_index()
    assert list(printed.index) == list(expected.index)
    for col in columns:
        assert printed[col].to_numpy(float) == pytest.approx(expected[col].to_numpy(float), rel=1e-5, abs=1e-12,
                                                             nan_ok=True), col


# ----------------------------------------------------------------------------- every script


def test_every_script_is_listed_and_every_figure_has_a_script():
    assert SCRIPTS == sorted(EXPECTED), "list a new analysis/ script in EXPECTED"
    assert {f for name, figs in EXPECTED.items() if name.startswith("fig_") for f in figs} == set(FIGURES)


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_runs_and_writes_its_figures(ran, name):
    proc, out = ran(name)
    assert proc.returncode == 0, proc.stderr
    for figure in EXPECTED[name]:
        png, pdf = out / f"{figure}.png", out / f"{figure}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000, figure
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 1000, figure
        assert str(png) in proc.stdout  # the script says where it wrote
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{f}.{ext}" for f in EXPECTED[name] for ext in ("png", "pdf"))
    assert "skipped" not in proc.stdout


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_figures_are_the_librarys(ran, library_figures, name):
    """Figures are deterministic, so a script that draws the right figure from the right table
    writes the same bytes as the figures command (restyling a figure in its script changes this)."""
    out = ran(name)[1]
    for figure in EXPECTED[name]:
        for ext in ("png", "pdf"):
            assert (out / f"{figure}.{ext}").read_bytes() == (library_figures / f"{figure}.{ext}").read_bytes(), figure


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_is_a_jupytext_percent_notebook(name):
    text = (ANALYSIS / name).read_text()
    try:
        import jupytext
    except ImportError:
        jupytext = None
    if jupytext is not None:
        notebook = jupytext.reads(text, fmt="py")  # format guessed from the file, as jupytext opens it
        assert notebook.metadata["jupytext"]["text_representation"]["format_name"] == "percent"
        code = [c for c in notebook.cells if c.cell_type == "code" and c.source.strip()]
    else:
        lines = text.splitlines()
        header_end = lines.index("# ---", 1)  # a YAML header in comments, opened by '# ---' on line 1
        header = "\n".join(lines[: header_end + 1])
        assert lines[0] == "# ---" and "jupytext" in header and "format_name: percent" in header
        cells = "\n".join(lines[header_end + 1:]).split("\n# %%")[1:]
        code = [c for c in cells if not c.startswith(" [markdown]") and c.strip()]
    assert len(code) >= 2, "a notebook of at least two code cells"


def test_a_missing_runs_folder_fails_with_a_message(runs_root, tmp_path):
    proc = run_script("fig_c_rm_accuracy.py", runs_root, tmp_path / "out", "--runs", str(tmp_path / "nowhere"))
    assert proc.returncode != 0 and "no such runs folder" in proc.stderr and "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- what they print is the library's


def test_overoptimization_script_prints_the_library_fits(ran, runs_df, synthetic):
    printed = printed_table(ran("fig_a_overoptimization.py")[0].stdout, "fitted coefficients per run")
    expected = fitted_coefficients(runs_df)
    assert_same(printed, expected, ["kind", "run_id"], ["n_params", "alpha", "beta", "alpha_proxy", "beta_proxy"])
    for row in printed.itertuples():
        assert (row.peak_sqrt_kl, row.peak_gain) == pytest.approx(peak(row.alpha, row.beta, FORM_OF[row.kind]), rel=1e-4)
        if row.run_id.startswith("study/"):  # the generating coefficients, known exactly
            n_params = synthetic.RM_SIZES[row.rm]
            assert row.alpha == pytest.approx(synthetic.coefficient(row.kind, "alpha", n_params), rel=1e-5)
            assert row.beta == pytest.approx(synthetic.coefficient(row.kind, "beta", n_params), rel=1e-5)


def test_coefficients_script_prints_the_log_linear_fits(ran, runs_df, synthetic):
    stdout = ran("fig_b_coefficients.py")[0].stdout
    printed = printed_table(stdout, "coefficient = slope * ln N + intercept")
    expected = coefficient_scaling(fitted_coefficients(runs_df))
    assert_same(printed, expected, ["group", "kind", "coefficient"], ["slope", "intercept", "n_runs"])
    for row in printed.itertuples():
        intercept, slope = synthetic.LAWS[(row.kind, row.coefficient)]
        assert (row.slope, row.intercept) == pytest.approx((slope, intercept), abs=1e-6)
    points = printed_table(stdout, "fitted alpha, beta per run")
    assert_same(points, fitted_coefficients(runs_df).dropna(subset=["n_params"]), ["kind", "run_id"], ["alpha", "beta"])


def test_rm_accuracy_script_prints_each_rm_job(ran, runs_df, synthetic):
    printed = printed_table(ran("fig_c_rm_accuracy.py")[0].stdout, "RM held-out accuracy per RM job")
    table = summary_table(runs_df)
    expected = table[table["stage"] == "rm"].assign(n_params=lambda t: t["config.rm.name"].map(synthetic.RM_SIZES))
    assert len(printed) == 9  # 3 study RMs + 6 data_size RMs
    assert_same(printed, expected, "run_id", ["summary.rm/val_accuracy", "n_params", "config.data.comparison_budget"])


def test_samples_per_prompt_script_prints_best_n_and_ppo_gold(ran, runs_df):
    stdout = ran("fig_d_samples_per_prompt.py")[0].stdout
    bon = printed_table(stdout, "best-of-n: best n per run").set_index("run_id")
    rows = runs_df.dropna(subset=["bon/gold"])
    best = rows.loc[rows.groupby("run_id")["bon/gold"].idxmax()].set_index("run_id")
    assert sorted(bon.index) == sorted(best.index)
    assert bon["best_n"].to_dict() == best["bon/n"].astype(int).to_dict()
    assert bon["best_gold"].to_numpy() == pytest.approx(best.loc[bon.index, "bon/gold"].to_numpy(), rel=1e-5)
    ppo = printed_table(stdout, "PPO: gold reward per run")
    table = summary_table(runs_df)
    assert_same(ppo, table[table["stage"] == "ppo"], "run_id",
                ["config.ppo.samples_per_prompt", "summary.ppo/final_gold", "summary.ppo/peak_gold"])


def test_diversity_script_prints_the_heatmap_cells(ran, runs_df):
    printed = printed_table(ran("fig_e_diversity.py")[0].stdout, "gold reward (summary.bon/best_gold) per run")
    table = summary_table(runs_df)
    expected = table[table["run_id"].str.startswith("diversity/")]
    assert_same(printed, expected, "run_id", ["config.data.responses_per_prompt", "summary.bon/best_gold"])
    prompts = [int(b) // math.comb(int(k), 2) for k, b in zip(printed["config.data.responses_per_prompt"],
                                                               printed["config.data.comparison_budget"])]
    assert printed["n_prompts"].tolist() == prompts


def test_ppo_training_script_prints_each_runs_last_iteration(ran, runs_df):
    printed = printed_table(ran("fig_f_ppo_training.py")[0].stdout, "PPO runs at their last iteration")
    rows = runs_df.dropna(subset=["ppo/step"]).sort_values(["run_id", "ppo/step"])
    logged = ["ppo/step", "ppo/proxy", "ppo/gold", "ppo/kl"]
    last = rows.groupby("run_id")[logged].last().add_prefix("summary.").reset_index()  # from the curves themselves
    assert_same(printed, last, "run_id", [f"summary.{c}" for c in logged])


def test_explore_notebook_walks_through_the_study(ran, runs_df):
    stdout = ran("explore_study.py")[0].stdout
    assert f"runs table: {runs_df.shape[0]} rows x {runs_df.shape[1]} columns" in stdout
    assert f"summary table: {runs_df['run_id'].nunique()} runs" in stdout
    coef = printed_table(stdout, "overoptimization coefficients per run")
    assert_same(coef, fitted_coefficients(runs_df), ["kind", "run_id"], ["alpha", "beta"])
    scaling = printed_table(stdout, "coefficient = slope * ln N + intercept")
    assert_same(scaling, coefficient_scaling(fitted_coefficients(runs_df)), ["group", "kind", "coefficient"],
                ["slope", "intercept"])
    accuracy = printed_table(stdout, "RM held-out accuracy per RM job")
    assert_same(accuracy, printed_table(ran("fig_c_rm_accuracy.py")[0].stdout, "RM held-out accuracy per RM job"),
                "run_id", ["summary.rm/val_accuracy"])
