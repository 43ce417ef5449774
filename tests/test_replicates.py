"""Seeds as an axis: `replicate=0,1` on a sweep varies the seeds that sweep names and shares the
upstream artifacts the others key (README "Seeds and replicates"), through the CLI."""

import json

import pytest

from cli_sweep import run_sweep  # tests/cli_sweep.py
from rlhf_scaling.analysis.runs import load_local_runs, per_run, varying_config

# Slow for `make test-fast` (< 3 min): real runs, or every figure/script drawn; `make test` runs them.
pytestmark = pytest.mark.slow

TINY = ["sft.steps=60", "sft.n_demos=300", "data.comparison_budget=192", "data.n_eval_prompts=16",
        "rm_train.epochs=1", "rm_train.batch_size=8", "progress=false"]


def test_replicates_share_upstream_artifacts_and_differ_in_the_stage_seed(tmp_path):
    sweep_dir = run_sweep(tmp_path, "+sweep=rm_size", "model@rm=tiny-xs", "replicate=0,1", *TINY)
    configs = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/config.json"))]
    assert sorted((c["replicate"], c["rm_train"]["seed"]) for c in configs) == [(0, 0), (1, 1)]
    assert {c["seed"] for c in configs} == {0} and {c["data"]["seed"] for c in configs} == {0}
    # one SFT policy and one data set, shared; one RM per replicate
    assert len(list((tmp_path / "artifacts" / "sft").glob("*/COMPLETE"))) == 1
    assert len(list((tmp_path / "artifacts" / "data").glob("*/COMPLETE"))) == 1
    assert len(list((tmp_path / "artifacts" / "rm").glob("*/COMPLETE"))) == 2
    # the analysis sees one setting with two replicates: nothing but seeds varies
    runs = per_run(load_local_runs(sweep_dir))
    assert len(runs) == 2
    assert varying_config(runs, seeds=False) == []
    assert set(varying_config(runs)) == {"config.replicate", "config.rm_train.seed"}
