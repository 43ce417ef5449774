"""The figure pipeline: fits recover the generating Gao coefficients, every figure is written as
PNG and PDF with a footer naming its source and run count, missing data skips a figure with a
note, output is byte-identical across runs, and the report and the shared style file."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from rlhf_scaling.analysis import figures, report, style
from rlhf_scaling.analysis.figures import FIGURES, coefficient_scaling, fitted_coefficients, write_figures

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_fits_recover_the_generating_coefficients(runs_df, synthetic):
    coef = fitted_coefficients(runs_df)
    assert len(coef) == 3 + 3 + len(synthetic.DIVERSITY) + 3  # study BoN and PPO, diversity BoN, samples-per-prompt PPO
    coef = coef[coef["group"] == "study"]
    assert sorted(coef["kind"]) == ["bon"] * 3 + ["ppo"] * 3
    for row in coef.itertuples():
        n_params = synthetic.RM_SIZES[row.rm]
        assert row.n_params == n_params  # from config rm.n_params, or the RM job's summary (tiny-m)
        expected = (synthetic.coefficient(row.kind, "alpha", n_params), synthetic.coefficient(row.kind, "beta", n_params))
        assert (row.alpha, row.beta) == pytest.approx(expected, abs=1e-9)
    # Gao Fig. 3: coefficient = intercept + slope ln N, fitted within a sweep: the other sweeps
    # each use one RM size, so only the study's fits exist.
    scaling = coefficient_scaling(fitted_coefficients(runs_df))
    assert len(scaling) == 4 and set(scaling["group"]) == {"study"}
    for row in scaling.itertuples():
        intercept, slope = synthetic.LAWS[(row.kind, row.coefficient)]
        assert (row.slope, row.intercept) == pytest.approx((slope, intercept), abs=1e-9)


@pytest.fixture(scope="module")
def written(runs_df, runs_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    return out, write_figures(runs_df, out / "a", str(runs_root)), write_figures(runs_df, out / "b", str(runs_root))


@pytest.mark.slow  # for `make test-fast`: every figure drawn / a real run
def test_every_figure_is_written_as_png_and_pdf(written):
    out, first, _ = written
    assert [p.name for p in first] == [f"{name}.png" for name in FIGURES]
    for png in first:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"


@pytest.mark.slow  # for `make test-fast`: every figure drawn / a real run
def test_figures_are_byte_identical_when_regenerated(written):
    out, first, second = written
    assert [p.name for p in second] == [p.name for p in first]
    for png in first:
        for path in (png, png.with_suffix(".pdf")):
            assert path.read_bytes() == (out / "b" / path.name).read_bytes(), path.name


def test_footer_names_the_source_and_the_runs_behind_each_figure(runs_df):
    study = runs_df[runs_df["group"] == "study"]
    fig = figures.fig_overoptimization(study, "multirun/study", "bon")
    assert any(t.get_text().startswith("source: multirun/study  |  3 runs") for t in fig.texts)
    fig = figures.fig_rm_accuracy(runs_df, "x")
    # study RMs + data_size RMs (the artifact path tells repeated reports of one RM apart)
    assert any("|  9 runs" in t.get_text() for t in fig.texts)
    fig = figures.fig_diversity(runs_df, "x")
    assert any("|  6 runs" in t.get_text() for t in fig.texts)


def test_a_figure_without_data_is_skipped_with_a_note(runs_df, tmp_path, capsys):
    rm_only = runs_df[runs_df["stage"] == "rm"]
    written = write_figures(rm_only, tmp_path, "rm-only")
    assert [p.name for p in written] == ["rm_accuracy.png"]
    out = capsys.readouterr().out
    for name in set(FIGURES) - {"rm_accuracy"}:
        assert f"skipped {name}" in out
    # one RM size: no Fig. 3; one value of K: no heatmap; one rollouts-per-prompt value: BoN panel only
    study_one = runs_df[runs_df["run_id"].isin(["study/bon_tiny-s", "study/ppo_tiny-s"])]
    names = [p.stem for p in write_figures(study_one, tmp_path / "one", "one")]
    assert names == ["overoptimization_bon", "overoptimization_ppo", "samples_per_prompt", "ppo_training", "methods"]


def test_command_line(runs_root, tmp_path, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        figures.main(["--runs", str(runs_root / "study"), "--out", str(tmp_path / "figs"),
                      "--only", "overoptimization_bon", "coefficients_vs_rm_size"])
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == [
        "coefficients_vs_rm_size.pdf", "coefficients_vs_rm_size.png", "overoptimization_bon.pdf",
        "overoptimization_bon.png"]
    assert "9 runs from" in capsys.readouterr().out
    (tmp_path / "nothing").mkdir()
    with pytest.raises(SystemExit, match="no run records"):
        figures.main(["--runs", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")])


@pytest.mark.slow  # for `make test-fast`: every figure drawn / a real run
def test_report_writes_table_csv_and_markdown(runs_root, tmp_path, capsys, synthetic):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = report.main(["--runs", str(runs_root), "--out", str(tmp_path)]) or tmp_path / "report.md"
    text = path.read_text()
    assert "![overoptimization_bon](figures/overoptimization_bon.png)" in text
    assert "## rm\n\n| run_id | status |" in text and "coefficient ≈ slope·ln N" in text
    assert "## Gao α, β per setting (mean over seeds" in text
    csv = (tmp_path / "runs.csv").read_text().splitlines()
    assert len(csv) == 1 + synthetic.N_RUNS
    printed = capsys.readouterr().out
    assert "study/ppo_tiny-m" in printed and "report:" in printed
    assert all((tmp_path / "figures" / f"{name}.png").is_file() for name in FIGURES)


def test_the_shared_mplstyle_file_matches_the_style_module():
    path = REPO_ROOT / "analysis" / "style.mplstyle"
    assert path.read_text() == style.mplstyle_text(), "regenerate: python -m rlhf_scaling.analysis.style " + str(path)


def test_rm_scaling_fits_recover_a_power_law_of_the_error_with_its_floor(tmp_path, synthetic):
    """RM error = 0.8·D^(−0.3) + 0.1 over six budgets D: the fit behind figure (c) finds the floor
    and the law's coefficients; a pure power law of the loss is fitted without a floor."""
    import math

    from rlhf_scaling.analysis.runs import load_local_runs

    _config, rm_records, write_run = synthetic._config, synthetic.rm_records, synthetic.write_run

    budgets = [384, 768, 1536, 3072, 6144, 12288]
    for i, budget in enumerate(budgets):
        error, loss = 0.8 * budget ** -0.3 + 0.1, 2.0 * budget ** -0.2
        write_run(tmp_path / "data_size" / f"{i}", _config("data_size", "rm", "tiny-s", budget=budget),
                  rm_records(1 - error), {"rm/val_accuracy": 1 - error, "rm/val_loss": loss, "rm/n_params": 1e6,
                                          "rm/artifact": f"/a/rm/{i}"}, f"w{i}")
    fits = figures.rm_scaling_fits(load_local_runs(tmp_path)).set_index(["against", "metric"])
    error = fits.loc[("comparisons", "error")]
    assert error["group"] == "tiny-s (1M)" and error["n_points"] == 6 and bool(error["floor"])
    assert (error["a"], error["b"], error["c"]) == pytest.approx((0.8, 0.3, 0.1), rel=1e-3)
    loss = fits.loc[("comparisons", "loss")]
    assert not bool(loss["floor"]) and (loss["a"], loss["b"]) == pytest.approx((2.0, 0.2), rel=1e-4)
    assert math.isclose(loss["c"], 0.0)
    assert "rm_params" not in fits.index.get_level_values(0)  # one RM size: nothing to fit against N


def test_footers_fit_in_the_image_below_the_axes(runs_df):
    """A long source path and note: the footer wraps inside the figure, under the axes' labels."""
    import matplotlib.pyplot as plt

    source = "/cluster/scratch/some-user/rlhf-scaling/multirun/" + "overoptimization-with-a-long-name/" * 3
    with style.figure_style():
        for name, make in FIGURES.items():
            fig = make(runs_df, source)
            figures.layout(fig)
            renderer = fig.canvas.get_renderer()
            footer = next(t for t in fig.texts if t.get_gid() == "footer")
            box = footer.get_window_extent(renderer)
            assert box.x0 >= 0 and box.x1 <= fig.bbox.x1 and box.y0 >= 0, name
            lowest = min(ax.get_tightbbox(renderer).y0 for ax in fig.axes)
            assert lowest >= box.y1, name  # x labels and tick labels above the footer
            plt.close(fig)


def test_a_gold_fit_with_beta_below_zero_is_reported_not_drawn(tmp_path, synthetic):
    """Gold gain d(0.2 + 0.05 d) (β = −0.05): the BoN form's sign is broken. The fit is reported
    as not turning down (no peak), left out of the figure and named in its footer; a β > 0 run
    next to it keeps its dashed fit."""
    import math

    from rlhf_scaling.analysis.runs import load_local_runs
    from rlhf_scaling.curves import bon_form

    def records(alpha, beta):
        out = []
        for n in synthetic.BON_GRID:
            d = math.sqrt(math.log(n) - (n - 1) / n)
            gain = float(bon_form(d, alpha, beta))
            out.append({"bon/n": n, "bon/kl": d * d, "bon/sqrt_kl": d, "bon/gold": gain, "bon/gold_gain": gain,
                        "bon/proxy": d, "bon/proxy_gain": d})
        return out

    for name, rm, beta in (("rising", "tiny-s", -0.05), ("peaked", "tiny-xs", 0.1)):
        synthetic.write_run(tmp_path / f"bon_{name}", synthetic._config("x", "bon", rm), records(0.2, beta), {}, name)
    df = load_local_runs(tmp_path)
    coef = figures.fitted_coefficients(df).set_index("run_id")
    assert coef.loc["bon_rising", "beta"] == pytest.approx(-0.05) and not coef.loc["bon_rising", "turns_down"]
    assert coef.loc["bon_peaked", "turns_down"]
    fig = figures.fig_overoptimization(df, "x", "bon")
    gold = fig.axes[0]
    dashed = [line for line in gold.lines if line.get_linestyle() == "--"]
    assert len(dashed) == 1  # the β > 0 run's fit only
    assert dashed[0].get_ydata().max() < 0.2 * 0.2 / (4 * 0.1) * 1.01  # it peaks, at α²/4β
    footer = next(t for t in fig.texts if t.get_gid() == "footer").get_text().replace("\n", " ")
    assert "β ≤ 0" in footer and "rising" in footer and "peaked" not in footer.split("β ≤ 0")[1]


def _bon_run(root, synthetic, name: str, rm: dict, summary: dict) -> None:
    """A best-of-n run against the proxy spec `rm` (no RM job beside it)."""
    config = synthetic._config("sizes", "bon", "tiny-s")
    config["rm"] = rm
    synthetic.write_run(root / name, config, synthetic.bon_records(1e6), summary, name)


def test_colour_order_follows_size_even_where_no_run_counted_it(tmp_path, synthetic, repo_root):
    """No RM job and no rm.n_params: tiny specs are ordered by their shape (from conf/model), hub
    names by the size they spell, never alphabetically (which puts tiny-l before tiny-xs)."""
    import yaml

    from rlhf_scaling.analysis.runs import load_local_runs

    for name in ("tiny-l", "tiny-m", "tiny-s", "tiny-xs"):
        spec = yaml.safe_load((repo_root / "rlhf_scaling" / "conf" / "model" / f"{name}.yaml").read_text())
        _bon_run(tmp_path / "tiny", synthetic, name, {**spec, "n_params": None}, {})
    order = list(figures._size_order(load_local_runs(tmp_path / "tiny"), ["tiny-l", "tiny-m", "tiny-s", "tiny-xs"]))
    assert order == ["tiny-xs", "tiny-s", "tiny-m", "tiny-l"]
    for name in ("rm-1.4b", "rm-70m", "rm-410m"):
        _bon_run(tmp_path / "hub", synthetic, name, {"name": name, "source": "pretrained", "n_params": None}, {})
    order = list(figures._size_order(load_local_runs(tmp_path / "hub"), ["rm-1.4b", "rm-70m", "rm-410m"]))
    assert order == ["rm-70m", "rm-410m", "rm-1.4b"]


def test_a_runs_own_record_of_its_proxy_size_feeds_the_coefficient_figure(tmp_path, synthetic):
    """Best-of-n runs that record their proxy's rm/n_params, with no RM job in the folder: Gao's
    α/β-vs-size figure is drawn from them alone, at the sizes they recorded, even where the proxies
    share a name (three local model directories, all `model@rm=local`)."""
    from rlhf_scaling.analysis.runs import load_local_runs

    for name, n_params in (("a", 1e5), ("b", 1e6), ("c", 1e7)):
        _bon_run(tmp_path, synthetic, name, {"name": "local", "source": "pretrained", "name_or_path": f"/models/{name}",
                                             "n_params": None}, {"rm/n_params": n_params})
    df = load_local_runs(tmp_path)
    coef = figures.fitted_coefficients(df).set_index("run_id")
    assert coef["n_params"].to_dict() == {"a": 1e5, "b": 1e6, "c": 1e7}
    assert figures.fig_coefficients(df, "x") is not None


def test_curves_are_coloured_and_labelled_by_what_was_swept(runs_df):
    """The diversity sweep's best-of-n runs share one RM and differ in K: each K is its own colour
    and legend entry (not one colour per RM), in the order of K; runs differing only in seed share one."""
    diversity = runs_df[(runs_df["group"] == "diversity") & (runs_df["config.data.comparison_budget"] == 4200)]
    fig = figures.fig_overoptimization(diversity, "x", "bon")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == [f"K={k}" for k in (2, 3, 4, 6)]
    colours = {tuple(line.get_color()) if not isinstance(line.get_color(), str) else line.get_color()
               for line in fig.axes[0].lines if line.get_linestyle() == "None"}
    assert len(colours) == 4
    by_run, style = figures.run_styles(runs_df, diversity["run_id"].unique(), "bon")
    reseeded = runs_df.assign(**{"config.bon.seed": runs_df["run_id"].map(lambda r: hash(r) % 7)})
    assert figures.run_styles(reseeded, diversity["run_id"].unique(), "bon")[0] == by_run


def test_the_slope_of_alpha_vs_size_comes_with_a_bootstrap_interval_over_seeds(tmp_path, synthetic):
    """Three seeds per RM size, each seed's α off the true log-linear law by a known spread: the
    slope's 95% interval over seeds holds the true slope and is as narrow as that spread allows;
    with one seed per size there is no interval (NaN), and the figure's legend says so."""
    import numpy as np

    from rlhf_scaling.analysis.runs import load_local_runs

    rng = np.random.default_rng(0)
    for rm, n_params in synthetic.RM_SIZES.items():
        for seed in range(3):
            shift = rng.normal(0, 0.01)
            records = [{**r, "bon/gold_gain": r["bon/gold_gain"] + shift * r["bon/sqrt_kl"]}
                       for r in synthetic.bon_records(n_params)]  # α + shift, β unchanged
            config = synthetic._config("seeds", "bon", rm, seed=seed)
            config["bon"]["seed"] = seed
            synthetic.write_run(tmp_path / f"{rm}_{seed}", config, records, {}, f"{rm}{seed}")
    df = load_local_runs(tmp_path)
    scaling = figures.coefficient_scaling(figures.fitted_coefficients(df)).set_index("coefficient")
    intercept, slope = synthetic.LAWS[("bon", "alpha")]
    alpha = scaling.loc["alpha"]
    assert alpha["slope_low"] < slope < alpha["slope_high"]
    assert alpha["slope_high"] - alpha["slope_low"] < 0.01  # 0.01 spread over ln N spanning 4.6
    beta = scaling.loc["beta"]
    assert beta["slope_low"] == pytest.approx(beta["slope_high"], abs=1e-9)  # β had no seed noise
    one = df[df["run_id"].str.endswith("_0")]
    single = figures.coefficient_scaling(figures.fitted_coefficients(one))
    assert single["slope_low"].isna().all() and single["slope_high"].isna().all()
    legend = [t.get_text() for t in figures.fig_coefficients(one, "x").axes[0].get_legend().get_texts()]
    assert any("one seed per size" in label for label in legend)


def test_alpha_and_beta_per_setting_come_with_an_interval_over_seeds(tmp_path, synthetic):
    """Three seeds of each of two RMs, α shifted per seed by known amounts: one row per RM (seeds
    pooled, not separate), the mean α of its seeds, an interval inside their range; one seed: NaN."""
    from rlhf_scaling.analysis.runs import load_local_runs

    shifts = {0: -0.02, 1: 0.0, 2: 0.02}
    for rm in ("tiny-xs", "tiny-s"):
        for seed, shift in shifts.items():
            records = [{**r, "bon/gold_gain": r["bon/gold_gain"] + shift * r["bon/sqrt_kl"]}
                       for r in synthetic.bon_records(synthetic.RM_SIZES[rm])]
            config = synthetic._config("seeds", "bon", rm, seed=seed)
            synthetic.write_run(tmp_path / f"{rm}_{seed}", config, records, {}, f"{rm}{seed}")
    df = load_local_runs(tmp_path)
    table = figures.coefficient_intervals(df).set_index("setting")
    assert sorted(table.index) == ["tiny-s (1M)", "tiny-xs (100k)"] and set(table["n_seeds"]) == {3}
    row = table.loc["tiny-s (1M)"]
    alpha = synthetic.coefficient("bon", "alpha", 1e6)
    assert row["alpha"] == pytest.approx(alpha)
    assert alpha - 0.02 - 1e-9 <= row["alpha_low"] < alpha < row["alpha_high"] <= alpha + 0.02 + 1e-9
    single = figures.coefficient_intervals(df[df["run_id"].str.endswith("_0")])
    assert single["alpha_low"].isna().all() and set(single["n_seeds"]) == {1}


def test_overoptimization_curves_draw_the_mean_and_a_95_band_over_seeds(tmp_path, synthetic):
    """Three seeds of one RM whose gold gains differ by known shifts: one line (the mean, at the
    true curve), one band that holds it, one legend entry; with one seed no band and the footer says so."""
    import numpy as np
    from matplotlib.collections import PolyCollection

    from rlhf_scaling.analysis.runs import load_local_runs

    for seed, shift in {0: -0.05, 1: 0.0, 2: 0.05}.items():
        records = [{**r, "bon/gold_gain": r["bon/gold_gain"] + shift * r["bon/sqrt_kl"]}
                   for r in synthetic.bon_records(synthetic.RM_SIZES["tiny-s"])]
        config = synthetic._config("seeds", "bon", "tiny-s", seed=seed)
        synthetic.write_run(tmp_path / f"s_{seed}", config, records, {}, f"s{seed}")
    df = load_local_runs(tmp_path)
    curves = figures.overoptimization_curves(df, "bon")
    bands = figures.seed_bands(curves, {r: "tiny-s" for r in curves["run_id"]}, "gold_gain")
    truth = synthetic.bon_records(synthetic.RM_SIZES["tiny-s"])
    assert np.allclose(bands["mean"], [r["bon/gold_gain"] for r in truth])
    inner = bands["sqrt_kl"] > 0
    assert (bands.loc[inner, "low"] < bands.loc[inner, "mean"]).all() and (bands["n_seeds"] == 3).all()
    fig = figures.fig_overoptimization(df, "x", "bon")
    gold = fig.axes[0]
    assert sum(isinstance(c, PolyCollection) for c in gold.collections) == 1
    assert len(gold.get_legend().get_texts()) == 1
    one = figures.fig_overoptimization(df[df["run_id"] == "s_0"], "x", "bon")
    assert not any(isinstance(c, PolyCollection) for c in one.axes[0].collections)
    assert "ONE seed" in next(t for t in one.texts if t.get_gid() == "footer").get_text().replace("\n", " ")


def test_one_setting_in_two_sweeps_is_two_lines_not_twice_the_seeds(tmp_path, synthetic):
    """The paper study runs tiny-s best-of-n in two sweeps (overoptimization and data_size) with the
    same seeds: pooling them would count each replicate twice and narrow the band. Each sweep gets
    its own line, band and legend entry, each over its own 2 seeds."""
    from matplotlib.collections import PolyCollection

    from rlhf_scaling.analysis.runs import load_local_runs

    for sweep in ("overoptimization", "data_size"):
        for seed in (0, 1):
            records = [{**r, "bon/gold_gain": r["bon/gold_gain"] + 0.05 * seed * r["bon/sqrt_kl"]}
                       for r in synthetic.bon_records(synthetic.RM_SIZES["tiny-s"])]
            config = synthetic._config(sweep, "bon", "tiny-s", seed=seed)
            synthetic.write_run(tmp_path / f"{sweep}_{seed}", config, records, {}, f"{sweep}{seed}")
    df = load_local_runs(tmp_path)
    fig = figures.fig_overoptimization(df, "x", "bon")
    gold = fig.axes[0]
    legend = sorted(t.get_text() for t in gold.get_legend().get_texts())
    assert len(legend) == 2 and [t.split(": ")[-1] for t in legend] == ["data_size", "overoptimization"]
    assert sum(isinstance(c, PolyCollection) for c in gold.collections) == 2
    means = [line for line in gold.get_lines() if line.get_label() in legend]
    assert len({line.get_marker() for line in means}) == 2  # same setting, same colour: the marker tells the sweep


def test_diversity_lines_label_each_point_with_its_prompts(runs_df, synthetic):
    fig = figures.fig_diversity_lines(runs_df, "x")
    ax = fig.axes[0]
    labels = sorted(t.get_text() for t in ax.texts)
    assert labels == sorted(f"{b // (k * (k - 1) // 2)} prompts" for k, b in synthetic.DIVERSITY)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["2100 comparisons", "4200 comparisons"]
    footer = next(t for t in fig.texts if t.get_gid() == "footer").get_text().replace("\n", " ")
    assert "RM optimiser steps" in footer


def test_samples_per_prompt_are_compared_at_matched_kl_and_rollouts(runs_df):
    import numpy as np

    spp = runs_df[runs_df["group"] == "samples_per_prompt"]
    first = sorted(spp["run_id"].unique())[0]  # spp = 1: cut short, so it reaches a smaller KL than the others
    spp = spp[(spp["run_id"] != first) | ~(spp["ppo/step"] > 25)]
    fig = figures.fig_samples_per_prompt_matched(spp, "x")
    matched, rollouts = fig.axes[:2]
    curves = figures.overoptimization_curves(spp, "ppo")
    assert curves.groupby("run_id")["sqrt_kl"].max().nunique() == 2
    d_ref = curves.groupby("run_id")["sqrt_kl"].max().min()
    expected = [float(np.interp(d_ref, c["sqrt_kl"], c["gold_gain"])) for _, c in
                sorted(curves.groupby("run_id"), key=lambda rc: rc[0])]  # runs ordered spp = 1, 2, 4
    line = matched.lines[0]
    assert list(line.get_xdata()) == [1.0, 2.0, 4.0]
    assert np.allclose(line.get_ydata(), expected)
    # at matched rollouts: x = iterations x 16 prompts x samples per prompt, so spp=4 spans 4x spp=1's range
    spans = [max(bars.lines[0].get_xdata()) for bars in rollouts.containers]  # one errorbar line per spp
    assert spans == [25 * 16, 39 * 16 * 2, 39 * 16 * 4]  # iterations 0..39 (spp=1: 0..25)


def test_diversity_heatmap_spans_budgets_and_is_skipped_with_a_reason_at_one(runs_df, synthetic, tmp_path, capsys):
    import numpy as np

    fig = figures.fig_diversity(runs_df, "x")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["4200", "2100"]  # rows: budgets, not prompts
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2", "3", "4", "6"]
    diversity = runs_df[runs_df["group"] == "diversity"]
    per_run = diversity.groupby("run_id")[["config.data.responses_per_prompt", "config.data.comparison_budget",
                                           "summary.bon/best_gold"]].first()
    cells = sorted(t.get_text() for t in ax.texts)
    assert cells == sorted(f"{g:.3f}\n{int(b) // (int(k) * (int(k) - 1) // 2)} prompts" for k, b, g in per_run.to_numpy())
    assert len(cells) == len(synthetic.DIVERSITY) and np.ma.count_masked(ax.images[0].get_array()) == 2  # 2100: no K=3, 6
    one = runs_df[~runs_df["run_id"].str.contains("budget=2100")]
    reason = figures.fig_diversity(one, "x")
    assert isinstance(reason, str) and ">= 2 budgets" in reason and "4200" in reason
    assert write_figures(one, tmp_path, "one", only=["diversity_heatmap", "diversity"])[0].stem == "diversity"
    assert "skipped diversity_heatmap: one comparison budget per sweep over K (4200)" in capsys.readouterr().out
