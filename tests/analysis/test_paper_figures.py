"""The paper study's diversity and samples-per-prompt figures, drawn from the records a real tiny
`rlhf-scaling -m +sweep=paper` run wrote (two replicates of the diversity and samples_per_prompt
sweeps): the diversity RMs trained to convergence (early stopping) and the footer says so, with
the kept step per K as the RM jobs logged it; the H3 claims come from those RMs; the heatmap is
skipped, saying why, at the study's one budget; the samples-per-prompt figure puts cumulative
training FLOPs (ppo/flops as logged) on x beside rollouts and matched KL."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from rlhf_scaling.analysis import figures
from rlhf_scaling.analysis.runs import load_local_runs
from rlhf_scaling.stages.common import rm_artifact

pytestmark = pytest.mark.slow

KS = (2, 4)
TINY = ["sft.steps=30", "sft.n_demos=200", "data.comparison_budget=96", "data.n_eval_prompts=16",
        "paper.diversity_budget=12", f"paper.responses_per_prompt=[{','.join(map(str, KS))}]",
        "paper.samples_per_prompt=[1,2]", "rm_train.batch_size=2", "rm_train.epochs=4", "rm_train.eval_every=2",
        "rm_train.early_stop_patience=2", "rm_train.early_stop_min_steps=2", "bon.n_max=8", "bon.n_eval_prompts=8",
        "ppo.steps=4", "ppo.eval_every=2", "ppo.eval_prompts=8", "ppo.prompts_per_step=4", "ppo.minibatch_size=4",
        "progress=false"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """(sweep folder, the CLI's stdout) of the tiny paper study over diversity and samples_per_prompt."""
    tmp = tmp_path_factory.mktemp("paper_figures")
    sweep_dir = tmp / "sweep"
    cmd = [sys.executable, "-m", "rlhf_scaling.cli", "-m", "+sweep=paper", "paper.sweep=diversity,samples_per_prompt",
           "replicate=0,1", f"hydra.sweep.dir={sweep_dir}", f"artifacts_dir={tmp / 'artifacts'}", *TINY]
    proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return sweep_dir, proc.stdout


@pytest.fixture(scope="module")
def df(study):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_local_runs(study[0])


def records(folder: Path) -> tuple:
    """(config, summary, metrics rows) of one run folder, read straight from the files."""
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return json.loads((folder / "config.json").read_text()), json.loads((folder / "summary.json").read_text()), rows


def test_diversity_rms_are_trained_to_convergence_and_the_footer_says_so(study, df):
    sweep_dir, _ = study
    kept = {}
    for folder in sorted(sweep_dir.glob("*/rm_k*")):
        config, summary, _ = records(folder)
        assert config["rm_train"]["early_stop_patience"] == 2
        kept.setdefault(config["data"]["responses_per_prompt"], set()).add(int(summary["rm/best_step"]))
    assert sorted(kept) == list(KS)
    fig = figures.fig_diversity_lines(df, "x")
    footer = next(t for t in fig.texts if t.get_gid() == "footer").get_text().replace("\n", " ")
    # the paper study has no validation split: the footer says the weights were chosen on the reported set
    assert "RMs trained to convergence (early stopping on held-out loss, the accuracy's own set, patience 2" in footer
    chosen_apart = df.assign(**{"summary.rm/best_selection_loss": 0.5})  # as RMs stopped on a validation split log
    footer_val = next(t for t in figures.fig_diversity_lines(chosen_apart, "x").texts if t.get_gid() == "footer")
    assert "(early stopping on validation loss, patience 2" in footer_val.get_text().replace("\n", " ")
    for k, steps in kept.items():
        assert f"K={k}: {'/'.join(map(str, sorted(steps)))}" in footer
    # the same runs recorded as fixed-epoch RMs: the footer says the optimisation is NOT matched
    fixed = df.assign(**{"config.rm_train.early_stop_patience": 0})
    footer = next(t for t in figures.fig_diversity_lines(fixed, "x").texts if t.get_gid() == "footer").get_text()
    assert "NOT matched" in footer.replace("\n", " ")


def test_the_h3_claims_come_from_the_converged_rms(study):
    sweep_dir, _ = study
    table = pd.read_csv(sweep_dir / "claims.csv").set_index("id")
    for claim in ("H3-accuracy", "H3-gold"):
        assert table.loc[claim, "n_replicates"] == 2 and np.isfinite(table.loc[claim, "effect"])
    trained = {Path(s["rm/artifact"]).name: s["rm/n_params"] for s in (records(f)[1] for f in sweep_dir.glob("*/rm_k*"))}
    used = set()
    for folder in sweep_dir.glob("*/bon_k*"):
        config, summary, _ = records(folder)
        assert config["rm_train"]["early_stop_patience"] == 2
        key = rm_artifact(OmegaConf.create(config)).key  # the RM the best-of-n job loaded
        used.add(key)
        assert summary["rm/n_params"] == trained[key]  # its proxy's size, recorded by the best-of-n job itself
    assert used == set(trained) and len(trained) == len(KS) * 2  # an RM per (K, replicate)


def test_the_heatmap_is_skipped_at_one_budget_saying_why(study):
    sweep_dir, stdout = study
    assert not (sweep_dir / "figures" / "diversity_heatmap.png").exists()
    assert (sweep_dir / "figures" / "diversity.png").is_file()
    assert "skipped diversity_heatmap: one comparison budget per sweep over K (12): a heatmap needs >= 2 budgets" in stdout


def test_samples_per_prompt_put_training_flops_on_x(study, df):
    sweep_dir, _ = study
    assert (sweep_dir / "figures" / "samples_per_prompt_matched.png").is_file()
    fig = figures.fig_samples_per_prompt_matched(df, "x")
    flops_ax = fig.axes[2]
    assert "FLOPs" in flops_ax.get_xlabel() and flops_ax.get_xscale() == "log"
    # expected: per samples-per-prompt, at each held-out evaluation (after s iterations), the mean over
    # replicates of ppo/flops as iteration s - 1 logged it (0 before any), read from metrics.jsonl
    expected = {}
    for folder in sorted(sweep_dir.glob("*/ppo_spp*")):
        config, summary, rows = records(folder)
        cumulative = {r["ppo/step"] + 1: r["ppo/flops"] for r in rows if "ppo/flops" in r}
        assert summary["ppo/flops"] == cumulative[config["ppo"]["steps"]]
        rm_metrics = json.loads((rm_artifact(OmegaConf.create(config)).path / "metrics.json").read_text())
        assert summary["rm/n_params"] == rm_metrics["rm/n_params"] > 0  # its proxy's size, as its RM job counted it
        for r in rows:
            if r.get("eval/step", 0) > 0:  # iteration 0 (no compute yet) is not on the log axis
                expected.setdefault(config["ppo"]["samples_per_prompt"], {}).setdefault(r["eval/step"], []).append(
                    cumulative.get(r["eval/step"], 0.0))
    drawn = [sorted(bars.lines[0].get_xdata()) for bars in flops_ax.containers]  # one errorbar line per spp
    assert drawn == [sorted(np.mean(v) for v in expected[n].values()) for n in sorted(expected)]
    assert max(drawn[1]) > 1.5 * max(drawn[0])  # 2 samples per prompt cost about twice 1 per prompt


def test_one_best_of_n_seed_draws_its_logged_prompt_interval(study, df):
    sweep_dir, _ = study
    folder = sorted(sweep_dir.glob("*/bon_k2"))[0]
    logged = [r for r in records(folder)[2] if "bon/gold_gain_low" in r]
    one = df[df["run_id"].str.endswith(f"{folder.parent.name}/{folder.name}")]
    assert one["run_id"].nunique() == 1
    fig = figures.fig_overoptimization(one, "x", "bon")
    [band] = [c for c in fig.axes[0].collections if c.get_gid() == "prompt_interval"]
    (low, high) = band.get_paths()[0].vertices[:, 1].min(), band.get_paths()[0].vertices[:, 1].max()
    assert low == pytest.approx(min(r["bon/gold_gain_low"] for r in logged))
    assert high == pytest.approx(max(r["bon/gold_gain_high"] for r in logged))
    assert "hatched: 95% interval over prompts" in next(t for t in fig.texts if t.get_gid() == "footer").get_text().replace("\n", " ")
    both = figures.fig_overoptimization(df[df["run_id"].str.endswith("bon_k2")], "x", "bon")  # two seeds: seed band
    assert not [c for c in both.axes[0].collections if c.get_gid() == "prompt_interval"]
