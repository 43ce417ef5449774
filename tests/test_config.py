"""Composition of every config group option, and validation errors that name the key."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

from rlhf_scaling.cli import CONFIG_PATH, compose
from rlhf_scaling.config import ConfigError, bon_grid, n_train_prompts, validate

CONF = Path(CONFIG_PATH)
GROUPS = ["task", "gold", "stage", "deepspeed", "tracking", "slurm", "method"]


def test_the_default_world_is_the_feature_world_with_its_training_defaults_and_topics_keeps_the_stages_own():
    """conf/task/features.yaml sets, with the world, the training keys it needs (package-global); the
    topics world (task=synthetic) gets every dataclass default back; the paper study stays on topics."""
    from omegaconf import OmegaConf

    from rlhf_scaling.config import Config

    default, topics = compose(), compose(["task=synthetic"])
    assert (default.task.world, default.task.min_length, default.sft.steps, default.data.comparison_budget,
            default.rm_train.lr, default.ppo.steps) == ("features", 2, 3000, 15360, 1e-3, 200)
    schema = OmegaConf.structured(Config)
    for section in ("sft", "data", "rm_train", "ppo", "bon"):
        assert OmegaConf.to_container(topics[section]) == OmegaConf.to_container(schema[section]), section
    assert topics.task.world == "topics" and topics.task.min_length == 0
    assert compose(["+sweep=paper"]).task.world == "topics"
    assert compose(["+sweep=paper", "task=features"]).task.world == "features"  # the command line wins
    assert compose(["ppo.steps=7"]).ppo.steps == 7 and compose(["+sweep=method"]).ppo.steps == 40


def test_default_config_is_the_study():
    cfg = compose()
    assert cfg.stage.name == "study"
    assert len(cfg.study.rm_models) >= 3
    sizes = {spec.name for spec in cfg.study.rm_models.values()}
    assert sizes == {"tiny-xs", "tiny-s", "tiny-m"}


@pytest.mark.parametrize("model", sorted(p.stem for p in (CONF / "model").glob("*.yaml")))
def test_every_model_composes_as_policy_and_rm(model):
    overrides = [f"model@policy={model}", f"model@rm={model}", "stage=rm"]
    if model == "local":
        overrides += ["policy.name_or_path=/x", "rm.name_or_path=/x"]
    cfg = compose(overrides)
    assert cfg.policy.name == cfg.rm.name


@pytest.mark.parametrize("group", GROUPS)
def test_every_group_option_composes(group):
    for option in sorted(p.stem for p in (CONF / group).glob("*.yaml")):
        overrides = [f"{group}={option}"]
        if group == "task" and option != "synthetic":
            # Loaded text needs a policy with a tokenizer and, for the study's BoN/PPO, a model gold.
            overrides += ["task.path=/data/x.jsonl", "model@policy=pythia-14m", "gold=model",
                          "gold.name_or_path=/models/gold"]
        if group == "gold" and option == "model":
            overrides += ["gold.name_or_path=/models/gold"]
        compose(overrides)


@pytest.mark.parametrize("method, stage, algorithm, k", [
    ("ppo", "ppo", "ppo", 2), ("rloo", "ppo", "rloo", 4), ("grpo", "ppo", "grpo", 4), ("bon", "bon", "ppo", 2)])
def test_a_method_selects_its_stage_and_algorithm(method, stage, algorithm, k):
    """conf/method/<m>.yaml: one choice (method=...) sets the stage and the algorithm's keys; the
    critic-free methods run PPO's 64 rollouts per step as 16 prompts x 4."""
    cfg = compose([f"method={method}"])
    assert (cfg.stage.name, cfg.ppo.algorithm, cfg.ppo.samples_per_prompt) == (stage, algorithm, k)
    assert cfg.ppo.prompts_per_step * cfg.ppo.samples_per_prompt == 64
    assert cfg.ppo.kl_estimator == ("k3" if method == "grpo" else "k1")
    assert compose([f"method={method}", "ppo.samples_per_prompt=3"]).ppo.samples_per_prompt == 3  # the command line wins
    assert compose().stage.name == "study"  # no method: the default stage


def test_tiny_family_spans_more_than_30x():
    from rlhf_scaling.data.synthetic import build_tokenizer, make_task
    from rlhf_scaling.models import build_reward_model, count_parameters

    tok = build_tokenizer(make_task(8, 6, 6, 16))
    counts = []
    for name in ("tiny-xs", "tiny-s", "tiny-m", "tiny-l"):
        cfg = compose([f"model@rm={name}", "stage=rm"])
        counts.append(count_parameters(build_reward_model(cfg.rm, tok)))
    assert counts == sorted(counts) and counts[-1] / counts[0] > 30


@pytest.mark.parametrize("overrides, key", [
    (["data.responses_per_prompt=1"], "data.responses_per_prompt"),
    (["data.responses_per_prompt=8", "data.comparison_budget=1000"], "data.comparison_budget"),
    (["rm_train.lr=-1"], "rm_train.lr"),
    (["rm_train.loss=hinge"], "rm_train.loss"),
    (["data.label_noise=0.7"], "data.label_noise"),
    (["bon.n_grid=[1,2,1000]"], "bon.n_grid"),
    (["ppo.minibatch_size=1000"], "ppo.minibatch_size"),
    (["model@rm=local"], "rm.name_or_path"),
    (["rm_train.plateau_lr_decays=2"], "rm_train.early_stop_patience"),  # cuts at plateaus nothing detects
    (["rm_train.plateau_lr_factor=1.0"], "rm_train.plateau_lr_factor"),
    (["rm_train.plateau_lr_decays=-1"], "rm_train.plateau_lr_decays"),
])
def test_impossible_values_name_the_key(overrides, key):
    with pytest.raises((ConfigError, ConfigCompositionException, Exception)) as err:
        compose(overrides + ["stage=rm"])
    assert key in str(err.value)


def test_derived_quantities():
    cfg = compose(["data.responses_per_prompt=4", "data.comparison_budget=600", "stage=rm", "rm_train.batch_size=8"])
    assert n_train_prompts(cfg.data) == 100  # 600 / C(4,2)
    assert bon_grid(compose(["bon.n_max=48", "stage=bon"]).bon) == [1, 2, 4, 8, 16, 32, 48]


@pytest.mark.parametrize("args, needle", [
    (["data.responses_per_prompt=1"], "data.responses_per_prompt"),
    (["rm_train.not_a_key=3"], "not_a_key"),
    (["model@rm=tiny-nope"], "tiny-nope"),
])
def test_cli_fails_before_work_with_short_message(tmp_path, args, needle):
    proc = subprocess.run([sys.executable, "-m", "rlhf_scaling.cli", "stage=rm", f"artifacts_dir={tmp_path}",
                           f"hydra.run.dir={tmp_path}/run", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert needle in proc.stderr
    assert not (tmp_path / "rm").exists()  # nothing was built


SWEEPS = sorted(p.stem for p in (CONF / "sweep").glob("*.yaml"))


@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_sweep_composes_and_every_point_validates(sweep):
    """Each sweep point (the cross product of its sweeper params) composes and validates."""
    import itertools

    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_PATH, version_base=None):
        base = hydra_compose(config_name="config", overrides=[f"+sweep={sweep}"], return_hydra_config=True)
    params = base.hydra.sweeper.params
    assert params, f"sweep {sweep} sweeps nothing"
    grid = [[f"{k}={v}" for v in str(values).split(",")] for k, values in params.items()]
    for point in itertools.product(*grid):
        cfg = compose([f"+sweep={sweep}", *point])
        assert cfg.stage.build_upstream and cfg.experiment == sweep


@pytest.mark.parametrize("sweep", SWEEPS)
def test_a_sweep_whose_rms_stop_early_chooses_their_weights_on_a_validation_split(sweep):
    """Not on the held-out set their accuracy is reported on (README, RM early stopping). The paper study
    is the exception: its topics-world budgets and claims were measured before the split existed."""
    cfg = compose([f"+sweep={sweep}"])
    if cfg.rm_train.early_stop_patience and sweep != "paper":
        assert cfg.data.n_val_prompts > 0, sweep


def test_a_name_that_would_leave_the_store_is_a_one_line_error_before_any_write(tmp_path):
    """Model names become artifact and run folder names: a '..' in one must never write outside
    the artifact store; the CLI says so in one line (exit 2) and builds nothing."""
    store = tmp_path / "store" / "artifacts"
    proc = subprocess.run([sys.executable, "-m", "rlhf_scaling.cli", "stage=rm", "stage.build_upstream=true",
                           f"artifacts_dir={store}", f"hydra.run.dir={tmp_path}/store/run", "rm.name=../../escaped"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: rm.name:") and "plain name" in line
    assert not store.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]  # nothing escaped next to it


@pytest.mark.parametrize("args, key", [
    (["policy.name=/tmp/abs"], "policy.name"),
    (["study.rm_models.s.name=a/b"], "study.rm_models.s.name"),
    (["experiment=.."], "experiment"),
    (["rm.name='~root'"], "rm.name"),
])
def test_every_name_that_becomes_a_folder_must_be_plain(args, key):
    with pytest.raises(ConfigError, match=f"^{key}.*plain name"):
        compose(args)


def test_cli_error_line_and_hydra_record_never_show_a_secret(tmp_path):
    """A secret from the environment that reaches a path or override is masked in the one-line
    error and in Hydra's own .hydra/ copy of the overrides, as in our records."""
    secret = "hf_thisisasecrettokenvalue123"
    env = {**os.environ, "HF_TOKEN": secret}
    proc = subprocess.run([sys.executable, "-m", "rlhf_scaling.cli", "stage=data", f"artifacts_dir={tmp_path}/a",
                           f"hydra.run.dir={tmp_path}/run", "model@policy=local",
                           f"policy.name_or_path={tmp_path}/models/{secret}"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "error:" in proc.stderr and secret not in proc.stderr and "***" in proc.stderr
    hydra_record = "".join(p.read_text() for p in (tmp_path / "run" / ".hydra").glob("*.yaml"))
    assert "policy.name_or_path=" in hydra_record and secret not in hydra_record


@pytest.mark.parametrize("override, key", [
    ("rm_train.lr=inf", "rm_train.lr"),
    ("ppo.kl_coef=nan", "ppo.kl_coef"),
    ("rm_train.max_grad_norm=-inf", "rm_train.max_grad_norm"),
    ("sft.weight_decay=inf", "sft.weight_decay"),
    ("study.rm_models.s.n_params=1", None),  # an int: not a float field, still fine
])
def test_non_finite_floats_are_refused_naming_the_key(override, key):
    """Every float field, not a list of them: "inf" and "nan" parse as floats and pass every
    range check written as a comparison (nan > 0 is False, inf > 0 is True)."""
    if key is None:
        compose([override])
        return
    with pytest.raises(ConfigError, match=f"^{key}: must be a finite number"):
        compose([override])


@pytest.mark.parametrize("overrides, key, hint", [
    (["stage=rm"], "policy.source", "model@policy=local policy.name_or_path="),
    (["stage=bon", "model@policy=local", "policy.name_or_path=/m"], "gold.kind", "gold=model gold.name_or_path="),
    (["stage=ppo", "model@policy=local", "policy.name_or_path=/m"], "gold.kind", "gold=model gold.name_or_path="),
])
def test_own_data_configs_that_cannot_work_name_the_key_and_how_to_set_it(overrides, key, hint):
    with pytest.raises(ConfigError, match=rf"^{key}: .*{hint}"):
        compose(["task=jsonl", "task.path=/data/prefs.jsonl", *overrides])
    # The data and RM stages of own data need no gold; the synthetic task makes its own prompts.
    compose(["task=jsonl", "task.path=/data/prefs.jsonl", "stage=rm", "model@policy=local", "policy.name_or_path=/m"])
    with pytest.raises(ConfigError, match="^task.prompts_path"):
        compose(["stage=bon", "task.prompts_path=/p.jsonl"])


def test_the_readme_diversity_example_divides_and_6144_at_k12_is_refused():
    """README: budget 4200 gives 4200, 1400, 700, 280, 150 prompts at K = 2, 3, 4, 6, 8; 6144 at K=12 does not divide."""
    for k, prompts in ((2, 4200), (3, 1400), (4, 700), (6, 280), (8, 150)):
        cfg = compose(["stage=data", "data.comparison_budget=4200", f"data.responses_per_prompt={k}"])
        validate(cfg)
        assert n_train_prompts(cfg.data) == prompts
    with pytest.raises(ConfigError, match="data.comparison_budget"):
        validate(compose(["stage=data", "data.comparison_budget=6144", "data.responses_per_prompt=12"]))


def test_sweep_folder_names_leave_out_the_sweep_choice_and_keep_what_varies():
    """A sweep point's folder is named by the overrides that vary (hydra.job.override_dirname), not by
    `+sweep=...`, which every point of the sweep shares (Hydra matches exclude_keys without the `+`)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_PATH, version_base=None):
        cfg = hydra_compose(config_name="config", overrides=["+sweep=rm_size", "model@rm=tiny-xs", "replicate=1"],
                            return_hydra_config=True)
    name = cfg.hydra.job.override_dirname
    assert "model@rm=tiny-xs" in name and "replicate=1" in name
    assert "sweep" not in name, name
