"""Figure (c), RM accuracy: one line per RM setting that varies (RM, loss, K, budget, ...), never two
settings averaged into one point; seeds averaged with a 95% interval; each RM placed at the
comparisons it trained on (as its RM job logged them), not the configured budget; empty panels
left out. Drawn from the records of real tiny RM jobs (REAL_SWEEPS) where the case allows."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from rlhf_scaling.analysis import figures
from rlhf_scaling.analysis.runs import load_local_runs
from rlhf_scaling.curves import mean_interval


def load(root):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_local_runs(root)


@pytest.fixture(scope="module")
def real_df(real_runs_root):
    return load(real_runs_root)


def rm_jobs(root: Path) -> list:
    """(config, summary, logged train comparisons or None) of every RM job under root."""
    jobs = []
    for status in sorted(root.rglob("status.json")):
        folder = status.parent
        if json.loads(status.read_text())["stage"] != "rm":
            continue
        logged = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
        comparisons = next((r["rm/train_comparisons"] for r in logged if "rm/train_comparisons" in r), None)
        jobs.append((json.loads((folder / "config.json").read_text()), json.loads((folder / "summary.json").read_text()),
                     comparisons))
    return jobs


@pytest.mark.slow
def test_every_point_is_one_setting_at_the_comparisons_its_rms_trained_on(real_df, real_runs_root):
    jobs = rm_jobs(real_runs_root)
    runs = figures.rm_runs(real_df)
    assert len(runs) == len({s["rm/artifact"] for _, s, _ in jobs}) == 10  # the reusing job counted once
    points = figures.rm_points(runs, "comparisons")
    setting = ["config.rm.name", "config.data.responses_per_prompt", "config.rm_train.loss"]
    assert figures.rm_grouping(runs, "comparisons")[:1] == ["config.rm.name"]
    for _, p in points.iterrows():
        # the runs behind this point, read straight from their records
        behind = [(c, s, n) for c, s, n in jobs if n == p["x"] and [
            str(c["rm"]["name"]), str(c["data"]["responses_per_prompt"]), c["rm_train"]["loss"]] == [str(p[k]) for k in setting]]
        assert len(behind) == p["n_runs"] > 0
        assert {c["rm_train"]["seed"] for c, _, _ in behind} == set(range(len(behind)))  # only seeds differ
        expected = mean_interval([s["rm/val_accuracy"] for _, s, _ in behind])
        assert (p["accuracy"], p["low"], p["high"]) == pytest.approx(expected, nan_ok=True)
    # K = 2 with the BT loss and K = 2 with the K-wise loss are two lines, and K = 4 a third, for tiny-xs
    xs_lines = {g for g in points["group"] if g.startswith("tiny-xs")}
    assert xs_lines == {"tiny-xs (3.33k), K=2, loss=bt", "tiny-xs (3.33k), K=2, loss=kwise",
                        "tiny-xs (3.33k), K=4, loss=kwise"}
    assert sorted(points["x"].unique()) == [96, 192]


@pytest.mark.slow
def test_figures_command_draws_the_lines_with_intervals(real_runs_root, tmp_path):
    out = tmp_path / "figs"
    proc = subprocess.run([str(Path(sys.executable).parent / "rlhf-scaling-figures"), "--runs", str(real_runs_root),
                           "--out", str(out), "--only", "rm_accuracy"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (out / "rm_accuracy.png").stat().st_size > 1000
    fig = figures.fig_rm_accuracy(load(real_runs_root), "real")
    left, right = fig.axes
    assert [t.get_text() for t in left.get_legend().get_texts()] == [
        "tiny-xs (3.33k), K=2, loss=bt", "tiny-xs (3.33k), K=2, loss=kwise", "tiny-xs (3.33k), K=4, loss=kwise",
        "tiny-s (25.5k), K=4, loss=kwise"]  # in RM-size order
    assert [t.get_text() for t in right.get_legend().get_texts()] == [
        "budget=96, K=2, loss=bt", "budget=96, K=2, loss=kwise", "budget=96, K=4, loss=kwise",
        "budget=192, K=4, loss=kwise"]
    footer = fig.texts[-1].get_text()
    assert "10 runs" in footer and "95% t-interval" in footer and "1–2 seeds per point" in footer


def write_rm(root: Path, synthetic, name: str, *, task: str, budget: int, logged, n_params=None,
             accuracy: float = 0.7) -> None:
    """An RM job's record as the tracker writes it; `logged`: the rm/train_comparisons it logged."""
    config = synthetic._config("own_data", "rm", "tiny-s", budget=budget)
    config["rm"]["n_params"] = None
    config["task"] = {"name": task, "path": f"/data/{name}.jsonl" if task != "synthetic" else None}
    records = synthetic.rm_records(accuracy)
    if logged is not None:
        records.insert(0, {"rm/train_units": logged, "rm/train_comparisons": logged})
    summary = {"rm/val_accuracy": accuracy, "rm/val_loss": 0.6, "rm/artifact": f"/a/rm/{name}"}
    if n_params is not None:
        summary["rm/n_params"] = n_params
    synthetic.write_run(root / name, config, records, summary, name)


def test_an_rm_on_loaded_data_sits_at_the_comparisons_it_trained_on(tmp_path, synthetic):
    """160 comparisons loaded from a file at the default budget of 6,144: the point is at 160. An
    RM of loaded data without that record is left off the comparisons panel, and the footer says so."""
    write_rm(tmp_path, synthetic, "file", task="jsonl", budget=6144, logged=160, n_params=25505)
    write_rm(tmp_path, synthetic, "old", task="jsonl", budget=6144, logged=None, n_params=25505)
    write_rm(tmp_path, synthetic, "synth", task="synthetic", budget=768, logged=None, n_params=25505)
    runs = figures.rm_runs(load(tmp_path)).set_index("run_name")
    assert runs.loc["file", "comparisons"] == 160
    assert math.isnan(runs.loc["old", "comparisons"])
    assert runs.loc["synth", "comparisons"] == 768  # synthetic data generates exactly its budget
    fig = figures.fig_rm_accuracy(load(tmp_path), "own")
    drawn = {float(x) for line in fig.axes[0].lines for x in np.atleast_1d(line.get_xdata())}
    assert 160 in drawn and 768 in drawn and 6144 not in drawn
    assert "1 RM(s) without a recorded comparison count" in fig.texts[-1].get_text()


def test_a_panel_without_points_is_left_out(tmp_path, synthetic):
    # sizes unknown (no rm/n_params recorded, none configured): only the comparisons panel
    write_rm(tmp_path / "a", synthetic, "one", task="synthetic", budget=768, logged=768)
    write_rm(tmp_path / "a", synthetic, "two", task="synthetic", budget=1536, logged=1536)
    fig = figures.fig_rm_accuracy(load(tmp_path / "a"), "a")
    assert [ax.get_title() for ax in fig.axes] == ["RM accuracy vs comparisons"]
    # comparisons unknown (loaded data, not recorded), sizes known: only the size panel
    write_rm(tmp_path / "b", synthetic, "one", task="jsonl", budget=6144, logged=None, n_params=3329)
    fig = figures.fig_rm_accuracy(load(tmp_path / "b"), "b")
    assert [ax.get_title() for ax in fig.axes] == ["RM accuracy vs RM size"]
    # neither: no figure
    write_rm(tmp_path / "c", synthetic, "one", task="jsonl", budget=6144, logged=None)
    assert figures.fig_rm_accuracy(load(tmp_path / "c"), "c") is None


def test_a_power_law_is_drawn_only_with_its_seed_interval(tmp_path, synthetic):
    """Error 0.8·D^(−0.3) over four budgets D, three seeds each (±0.005): the dashed law is drawn
    with its 95% seed-bootstrap band, which holds the true curve. With one seed per budget the law
    is still fitted (rm_scaling_fits) but not drawn, and the footer says why."""
    from matplotlib.collections import PolyCollection

    rng = np.random.default_rng(1)
    budgets = [768, 1536, 3072, 6144]
    for budget in budgets:
        for seed in range(3):
            accuracy = 1 - 0.8 * budget ** -0.3 + rng.normal(0, 0.005)
            write_rm(tmp_path / "seeds", synthetic, f"{budget}_{seed}", task="synthetic", budget=budget, logged=budget,
                     n_params=25505, accuracy=accuracy)
    runs = figures.rm_runs(load(tmp_path / "seeds"))
    fits = figures.rm_scaling_fits(load(tmp_path / "seeds"))
    points = figures.rm_points(runs, "comparisons")
    grid = np.geomspace(768, 6144, 50)
    fit, low, high = figures.error_fit_band(fits, "comparisons", points, grid)
    truth = 1 - 0.8 * grid ** -0.3
    assert np.all(low <= fit) and np.all(fit <= high) and np.mean((low <= truth) & (truth <= high)) > 0.9
    fig = figures.fig_rm_accuracy(load(tmp_path / "seeds"), "seeds")
    left = fig.axes[0]
    assert [line.get_linestyle() for line in left.lines].count("--") == 1
    assert any(isinstance(c, PolyCollection) for c in left.collections)
    assert "band: its 95% seed bootstrap" in fig.texts[-1].get_text().replace("\n", " ")
    # one seed per budget: fitted, not drawn
    one = load(tmp_path / "seeds")
    one = one[one["run_name"].str.endswith("_0")]
    assert not figures.rm_scaling_fits(one).empty
    fig = figures.fig_rm_accuracy(one, "one")
    assert [line.get_linestyle() for line in fig.axes[0].lines].count("--") == 0
    assert "power law(s) not drawn: no interval" in fig.texts[-1].get_text().replace("\n", " ")
