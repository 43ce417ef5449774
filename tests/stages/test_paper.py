"""The paper study through the CLI at a tiny size: `rlhf-scaling -m +sweep=paper` with one miniature
sweep (data_size) and two replicates writes claims.md / claims.csv with a row per claim (computed
where its sweep ran, "not run" elsewhere) and the figures, sharing every SFT policy and data set."""

import json

import pandas as pd
import pytest
from omegaconf import OmegaConf

from cli_sweep import run_sweep  # tests/cli_sweep.py
from rlhf_scaling.analysis.claims import CLAIMS
from rlhf_scaling.cli import compose
from rlhf_scaling.config import ConfigError, validate
from rlhf_scaling.stages.common import rm_artifact

TINY = ["sft.steps=30", "sft.n_demos=200", "paper.comparison_budgets=[96,192,384]", "data.n_eval_prompts=16",
        "rm_train.epochs=1", "rm_train.batch_size=8", "bon.n_max=16", "bon.n_eval_prompts=16", "progress=false"]


@pytest.mark.slow  # for `make test-fast`: every figure drawn / a real run
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


def test_the_policy_size_sweep_shares_one_rm_across_policy_sizes_by_default():
    """The stand-alone `+sweep=policy_size` uses the fixed-RM design (Hou et al.) unless told otherwise."""
    keys = {rm_artifact(compose(["+sweep=policy_size", f"model@policy={p}"])).key for p in ("tiny-s", "tiny-m", "tiny-l")}
    assert len(keys) == 1
    own = {rm_artifact(compose(["+sweep=policy_size", f"model@policy={p}", "proxy.trained_on=null"])).key
           for p in ("tiny-s", "tiny-m")}
    assert len(own) == 2


def test_paper_budgets_are_its_own_and_its_rms_train_to_convergence():
    """The paper study's cut budgets (conf/sweep/paper.yaml) leave `make study` and the stand-alone sweeps
    at their world's defaults (the feature world's, conf/task/features.yaml); its RMs and the diversity
    sweep's stop early on the held-out loss, with the same rule at every K (matched optimisation)."""
    paper, study = compose(["+sweep=paper", "paper.sweep=overoptimization"]), compose([])
    for key in ("bon.n_max", "bon.n_eval_prompts", "ppo.steps", "ppo.prompts_per_step", "ppo.eval_every"):
        assert OmegaConf.select(paper, key) < OmegaConf.select(study, key), key
    assert compose(["+sweep=overoptimization"]).ppo.steps == study.ppo.steps
    assert study.rm_train.early_stop_patience == 0
    from rlhf_scaling.stages.paper import point_config, points

    diversity = compose(["+sweep=paper", "paper.sweep=diversity"])
    rules = {json.dumps(OmegaConf.to_container(point_config(diversity, stage, u).rm_train), sort_keys=True)
             for _, stage, u in points(diversity)}
    assert len(rules) == 1 and json.loads(rules.pop())["early_stop_patience"] > 0
    standalone = compose(["+sweep=diversity"])
    assert standalone.rm_train.early_stop_patience > 0 and standalone.rm_train.lr_schedule == "constant"


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


@pytest.mark.slurm
@pytest.mark.slow
def test_paper_study_under_slurm_is_one_array_and_writes_the_claims_on_the_submitting_side(slurm_cluster, tmp_path):
    """`make paper` with hydra/launcher=slurm: the (sweep, replicate) jobs are ONE Slurm array, and the
    Hydra callback writes claims.md and the figures when the array has returned."""
    sweep_dir = run_sweep(tmp_path, "+sweep=paper", "paper.sweep=data_size", "replicate=0,1", "hydra/launcher=slurm",
                          "slurm=local", "slurm.mem_gb=2", *TINY, timeout=900, env=slurm_cluster.env())
    scripts = list((sweep_dir / ".submitit").rglob("*_submission.sh"))
    assert len(scripts) == 1 and "#SBATCH --array=0-1%" in scripts[0].read_text()
    arrays = {json.loads(p.read_text())["slurm"]["SLURM_ARRAY_JOB_ID"] for p in sweep_dir.glob("*/env.json")}
    assert len(arrays) == 1
    table = pd.read_csv(sweep_dir / "claims.csv").set_index("id")
    assert (table.loc[["G5-accuracy", "G5-gold", "H2"], "n_replicates"] == 2).all()
    assert (sweep_dir / "figures" / "rm_accuracy.png").is_file()
