"""The paper study through the CLI at a tiny size: `rlhf-scaling -m +sweep=paper` with one miniature
sweep (data_size) and two replicates writes claims.md / claims.csv with a row per claim (computed
where its sweep ran, "not run" elsewhere) and the figures, sharing every SFT policy and data set."""

import json

import pandas as pd
import pytest

from cli_sweep import run_sweep  # tests/cli_sweep.py
from rlhf_scaling.analysis.claims import CLAIMS
from rlhf_scaling.cli import compose
from rlhf_scaling.config import ConfigError, validate
from rlhf_scaling.stages.common import rm_artifact

TINY = ["sft.steps=30", "sft.n_demos=200", "paper.comparison_budgets=[96,192,384]", "data.n_eval_prompts=16",
        "rm_train.epochs=1", "rm_train.batch_size=8", "bon.n_max=16", "bon.n_eval_prompts=16", "progress=false"]


def test_paper_study_writes_a_computed_row_per_claim(tmp_path):
    sweep_dir = run_sweep(tmp_path, "+sweep=paper", "paper.sweep=data_size", "replicate=0,1", *TINY, timeout=900)
    table = pd.read_csv(sweep_dir / "claims.csv").set_index("id")
    assert list(table.index) == [c.id for c in CLAIMS]
    text = (sweep_dir / "claims.md").read_text()
    assert all(f"| {c.id} (" in text for c in CLAIMS)
    ran = table[table["sweep"] == "data_size"]
    assert set(ran.index) == {"G5-accuracy", "G5-gold", "H2"}
    assert (ran["n_replicates"] == 2).all() and ran["effect"].notna().all() and ran["low"].notna().all()
    assert (ran["n_runs"] == 12).all()  # 3 budgets x (rm, bon) x 2 replicates
    assert set(ran["verdict"]) <= {"supported", "contradicted", "inconclusive"}
    assert (table.loc[table["sweep"] != "data_size", "verdict"] == "not run").all()
    assert (sweep_dir / "figures" / "rm_accuracy.png").is_file()
    # one SFT policy and one data set per budget, shared by both replicates; an RM per (budget, replicate)
    art = tmp_path / "artifacts"
    assert len(list((art / "sft").glob("*/COMPLETE"))) == 1
    assert len(list((art / "data").glob("*/COMPLETE"))) == 3
    assert len(list((art / "rm").glob("*/COMPLETE"))) == 6
    seeds = {(json.loads(p.read_text())["replicate"], json.loads(p.read_text())["rm_train"]["seed"])
             for p in sweep_dir.glob("*/rm_c96/config.json")}
    assert seeds == {(0, 0), (1, 1)}


def test_fixed_rm_design_shares_one_rm_across_policy_sizes():
    """proxy.trained_on: a run of any policy finds the RM trained on that policy's samples."""
    own = compose(["stage=ppo", "model@policy=tiny-m"])
    other = compose(["stage=ppo", "model@policy=tiny-s", "+model@proxy.trained_on=tiny-m"])
    plain = compose(["stage=ppo", "model@policy=tiny-s"])
    assert rm_artifact(other).key == rm_artifact(own).key != rm_artifact(plain).key
    with pytest.raises(ConfigError, match="proxy.trained_on"):
        validate(compose(["stage=rm", "+model@proxy.trained_on=tiny-m"]))


def test_paper_config_composes_and_validates_every_sweep():
    for sweep in ("overoptimization", "data_size", "diversity", "policy_size", "samples_per_prompt"):
        validate(compose(["+sweep=paper", f"paper.sweep={sweep}", "replicate=2"]))
    with pytest.raises(ConfigError, match="paper.diversity_budget"):
        validate(compose(["+sweep=paper", "paper.diversity_budget=1000"]))


def test_every_point_of_every_paper_sweep_is_a_valid_config_with_its_seeds_and_group():
    from rlhf_scaling.stages.paper import VARIED_SEEDS, point_config, points

    for sweep in VARIED_SEEDS:
        cfg = compose(["+sweep=paper", f"paper.sweep={sweep}", "replicate=2"])
        pts = points(cfg)
        assert len({folder for folder, _, _ in pts}) == len(pts) >= 2
        for folder, stage, updates in pts:
            sub = point_config(cfg, stage, updates)
            validate(sub)
            assert sub.stage.name == stage and sub.tracking.group == sweep
            assert all(sub[section].seed == 2 for section in VARIED_SEEDS[sweep])
            assert sub.data.seed == 0 and sub.sft.seed == 0 and sub.seed == 0
    fixed = compose(["+sweep=paper", "paper.sweep=policy_size"])
    rms = {rm_artifact(point_config(fixed, stage, u)).key for _, stage, u in points(fixed)}
    assert len(rms) == 1  # one RM for every policy size
