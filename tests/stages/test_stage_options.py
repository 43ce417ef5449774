"""Every stage option through its stage, with an assertion that fails if the option were ignored:
ppo.whiten_rewards, ppo.adaptive_kl, ppo.kl_estimator=k3, the proxy ensemble combination
(proxy.ensemble = mean | min | uwo, proxy.uwo_lambda) in PPO and best-of-n, rm_train.loss=margin
and rm_train.margin_scale, rm_train.early_stop_patience (with and without data.n_val_prompts, and with
rm_train.plateau_lr_decays). Tiny runs on the session's shared PPO upstream (tests/conftest.py)."""

import json

import pandas as pd
import pytest
import torch

from rlhf_scaling import ppo_math as P
from rlhf_scaling.cli import compose
from rlhf_scaling.config import ConfigError
from rlhf_scaling.models import REWARD_MODEL_FILE
from rlhf_scaling.data.records import PreferenceGroup
from rlhf_scaling.stages import bon, ppo, rm
from rlhf_scaling.stages.common import open_tracker, rm_artifact
from rlhf_scaling.stages.rm import EarlyStopping, scaled_margins

slow = pytest.mark.slow  # every test here but the last runs a stage

# 8 rollouts per iteration, one minibatch, one epoch: each iteration is one optimizer step.
PPO = ["ppo.steps=2", "ppo.prompts_per_step=4", "ppo.samples_per_prompt=2", "ppo.minibatch_size=8",
       "ppo.ppo_epochs=1", "ppo.checkpoint_every=1000", "ppo.lr=1e-3"]
BON = ["bon.n_max=4", "bon.n_eval_prompts=8"]
# A cheap 2-member ensemble: tiny-xs members, 12 optimizer steps each (independently seeded, so they disagree).
ENSEMBLE = ["rm_train.ensemble_size=2", "model@rm=tiny-xs", "rm_train.batch_size=32"]


def cfg_of(store, stage, *extra):
    return compose([f"artifacts_dir={store.artifacts}", f"stage={stage}", "progress=false", "device=cpu",
                    *store.overrides, *extra])


def run_stage(module, cfg, run_dir, stage):
    with open_tracker(cfg, run_dir, stage) as tracker:
        tracker.summary(**module.run(cfg, tracker))
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def ppo_rows(store, run_dir, *extra):
    """The logged PPO iterations, in order."""
    rows = run_stage(ppo, cfg_of(store, "ppo", *PPO, *extra), run_dir, "ppo")
    return [r for r in rows if "ppo/proxy" in r]


@pytest.fixture(scope="module")
def baseline(ppo_store, tmp_path_factory):
    """PPO with every option at its default (k1, fixed β, no reward whitening, one RM)."""
    return ppo_rows(ppo_store, tmp_path_factory.mktemp("ppo_baseline") / "run")


@pytest.fixture(scope="module")
def ensemble_store(ppo_store, tmp_path_factory):
    """The shared upstream plus a 2-member proxy RM ensemble (independently seeded members)."""
    cfg = cfg_of(ppo_store, "rm", *ENSEMBLE)
    run_stage(rm, cfg, tmp_path_factory.mktemp("rm_ensemble") / "run", "rm")
    assert len(list(rm_artifact(cfg).path.glob("member_*"))) == 2
    return ppo_store


# ----------------------------------------------------------------------------- PPO options


@slow
def test_whiten_rewards_trains_on_scores_scaled_to_unit_std_with_their_mean_kept(ppo_store, baseline, tmp_path,
                                                                                 monkeypatch):
    seen = []
    original = P.kl_penalised_rewards

    def spy(scores, *a, **k):
        seen.append(scores.clone())
        return original(scores, *a, **k)

    monkeypatch.setattr(P, "kl_penalised_rewards", spy)
    rows = ppo_rows(ppo_store, tmp_path / "run", "ppo.whiten_rewards=true")
    scores = seen[0]  # iteration 0: the same rollouts and proxy scores as the baseline's
    assert rows[0]["ppo/proxy"] == pytest.approx(baseline[0]["ppo/proxy"], rel=1e-6)
    assert scores.mean().item() == pytest.approx(rows[0]["ppo/proxy"], rel=1e-5, abs=1e-6)  # mean kept
    assert scores.std().item() == pytest.approx(1.0, rel=1e-4)  # unit std (the raw scores' is not 1)
    assert rows[0]["ppo/value_loss"] != pytest.approx(baseline[0]["ppo/value_loss"], rel=1e-4)


@slow
def test_adaptive_kl_moves_beta_by_the_controller_rule(ppo_store, baseline, tmp_path):
    rows = ppo_rows(ppo_store, tmp_path / "run", "ppo.adaptive_kl=true", "ppo.target_kl=1.0", "ppo.kl_horizon=16",
                    "ppo.kl_coef=0.05")
    error = min(max(rows[0]["ppo/kl"] / 1.0 - 1.0, -0.2), 0.2)
    assert rows[0]["ppo/kl_coef"] == pytest.approx(0.05)
    assert rows[1]["ppo/kl_coef"] == pytest.approx(0.05 * (1 + error * 8 / 16), rel=1e-9)
    assert rows[1]["ppo/kl_coef"] != pytest.approx(0.05)
    assert baseline[1]["ppo/kl_coef"] == baseline[0]["ppo/kl_coef"]  # fixed β by default


@slow
def test_kl_estimator_k3_is_the_logged_and_penalised_kl(ppo_store, baseline, tmp_path):
    rows = ppo_rows(ppo_store, tmp_path / "run", "ppo.kl_estimator=k3")
    assert baseline[1]["ppo/kl"] == baseline[1]["ppo/kl_k1"]  # k1: the penalised KL is the k1 estimate
    # After one update the policy differs from the reference: k3 = Σ e^u − 1 − u >= 0 differs from k1 = Σ −u.
    assert rows[1]["ppo/kl_k1"] != 0
    assert rows[1]["ppo/kl"] >= 0
    assert rows[1]["ppo/kl"] != pytest.approx(rows[1]["ppo/kl_k1"], rel=1e-3)


@slow
def test_proxy_ensemble_combination_in_ppo(ensemble_store, tmp_path):
    """Iteration 0 samples the same rollouts whatever the combination (the policy is the init
    policy): the combined proxy score is the only difference. min and uwo sit strictly below
    mean when two independently trained members disagree."""
    proxy = {how: ppo_rows(ensemble_store, tmp_path / how, *ENSEMBLE, "ppo.steps=1", f"proxy.ensemble={how}")[0]
             for how in ("mean", "min", "uwo")}
    assert proxy["mean"]["ppo/gold"] == proxy["min"]["ppo/gold"] == proxy["uwo"]["ppo/gold"]  # same rollouts
    assert proxy["min"]["ppo/proxy"] < proxy["mean"]["ppo/proxy"]
    assert proxy["uwo"]["ppo/proxy"] < proxy["mean"]["ppo/proxy"]
    assert proxy["uwo"]["ppo/proxy"] != proxy["min"]["ppo/proxy"]


# ----------------------------------------------------------------------------- best-of-n


@slow
def test_proxy_ensemble_combination_in_best_of_n(ensemble_store, tmp_path):
    def at_n1(*extra):
        run_stage(bon, cfg_of(ensemble_store, "bon", *BON, *ENSEMBLE, *extra), tmp_path / "_".join(extra), "bon")
        curve = pd.read_csv(tmp_path / "_".join(extra) / "bon_curve.csv")
        return curve.set_index("n").loc[1]

    mean, low, uwo = at_n1("proxy.ensemble=mean"), at_n1("proxy.ensemble=min"), at_n1("proxy.ensemble=uwo")
    assert mean["gold"] == low["gold"] == uwo["gold"]  # n = 1: the same pool's mean gold
    assert low["proxy"] < mean["proxy"] and uwo["proxy"] < mean["proxy"]
    # uwo = mean − λ·var: λ = 0 is the mean, λ = 2 twice as far below it as λ = 1.
    assert at_n1("proxy.ensemble=uwo", "proxy.uwo_lambda=0")["proxy"] == pytest.approx(mean["proxy"], abs=1e-9)
    twice = at_n1("proxy.ensemble=uwo", "proxy.uwo_lambda=2")["proxy"]
    assert mean["proxy"] - twice == pytest.approx(2 * (mean["proxy"] - uwo["proxy"]), rel=1e-6)


# ----------------------------------------------------------------------------- RM margin loss


def rm_weights(store, tmp_path, *extra):
    cfg = cfg_of(store, "rm", "model@rm=tiny-xs", "rm_train.batch_size=32", *extra)  # 12 steps
    run_stage(rm, cfg, tmp_path / "_".join(extra or ["bt"]), "rm")
    from safetensors.torch import load_file

    return load_file(str(rm_artifact(cfg).path / "member_0" / REWARD_MODEL_FILE))


@slow
def test_margin_loss_and_margin_scale_change_the_trained_rm(ppo_store, tmp_path):
    """margin_scale=0 makes every margin 0: exactly the Bradley–Terry RM; scale 1 trains another."""
    bt = rm_weights(ppo_store, tmp_path, "rm_train.loss=bt")
    zero = rm_weights(ppo_store, tmp_path, "rm_train.loss=margin", "rm_train.margin_scale=0")
    one = rm_weights(ppo_store, tmp_path, "rm_train.loss=margin", "rm_train.margin_scale=1")
    assert all(torch.equal(bt[k], zero[k]) for k in bt if k != "offset")
    assert not torch.equal(bt["head.weight"], one["head.weight"])


def test_margins_come_from_the_data_else_from_gold_gaps_else_an_error():
    with_margin = PreferenceGroup("p", ("a", "b"), ((0, 1),), margins=(0.5,), gold=(3.0, 1.0))
    gold_only = PreferenceGroup("p", ("a", "b", "c"), ((0, 1), (2, 1)), gold=(3.0, 1.0, 1.5))
    assert scaled_margins([with_margin], 2.0)[0].margins == (1.0,)  # the data's margin wins
    assert scaled_margins([gold_only], 2.0)[0].margins == (4.0, 1.0)  # 2 x |gold_w − gold_l|
    with pytest.raises(ConfigError, match="rm_train.loss=margin needs a margin or gold"):
        scaled_margins([PreferenceGroup("p", ("a", "b"), ((0, 1),))], 1.0)


# ----------------------------------------------------------------------------- RM early stopping


@slow
def test_early_stopping_stops_on_the_held_out_loss_and_keeps_the_best_weights(ppo_store, tmp_path, caplog):
    """A high learning rate over 8 epochs overfits the 64 training prompts; with patience 1 and an
    evaluation every 2 steps the member stops at the first evaluation that does not improve, long
    before its 64 steps, and the saved RM is the best evaluation's (its loss, not the last one's).
    Without a validation split it watches the held-out loss, and says that accuracy is then optimistic."""
    cfg = cfg_of(ppo_store, "rm", "model@rm=tiny-xs", "rm_train.epochs=8", "rm_train.lr=0.05",
                 "rm_train.eval_every=2", "rm_train.early_stop_patience=1")
    with caplog.at_level("WARNING", logger="rlhf_scaling.stages.rm"):
        rows = run_stage(rm, cfg, tmp_path / "run", "rm")
    assert "optimistic by the selection" in caplog.text
    evals = {r["rm/step"]: r["rm/val_loss"] for r in rows if "rm/val_loss" in r and "rm/step" in r}
    summary = json.loads((rm_artifact(cfg).path / "metrics.json").read_text())
    stopped, best = summary["rm/stopped_step"], summary["rm/best_step"]
    assert max(evals) == stopped < 64  # stopped early: no step after it was trained
    assert stopped == best + 2  # patience 1: the first evaluation after the best one that is no better
    assert evals[stopped] >= evals[best] == min(evals.values()) == summary["rm/best_val_loss"]
    # the kept weights are the best evaluation's: the artifact's final held-out loss is the best one
    assert summary["rm/val_loss"] == pytest.approx(evals[best], rel=1e-5)
    assert not any(rm_artifact(cfg).path.glob("*.best"))  # the best-weights checkpoint is not shipped


@slow
def test_early_stopping_with_a_validation_split_chooses_the_weights_on_it_not_on_the_held_out_set(ppo_store, tmp_path):
    """`rlhf-scaling stage=rm stage.build_upstream=true data.n_val_prompts=16`: the data gains a validation
    split, and early stopping watches its loss (rm/selection_loss): the kept step is that loss's lowest,
    the stop the first evaluation after it, while the held-out rm/val_accuracy is reported of those weights.
    At lr 0.02 the two losses are lowest at different steps (validation 4, held-out 6 by 0.02), so a stopper
    fed the held-out loss would keep other weights and stop later."""
    import subprocess
    import sys

    keys = ["model@rm=tiny-xs", "rm_train.epochs=8", "rm_train.lr=0.02", "rm_train.eval_every=2",
            "rm_train.early_stop_patience=1", "data.n_val_prompts=16"]
    proc = subprocess.run([sys.executable, "-m", "rlhf_scaling.cli", f"hydra.run.dir={tmp_path / 'rm'}",
                           f"artifacts_dir={ppo_store.artifacts}", "stage=rm", "stage.build_upstream=true",
                           "progress=false", "device=cpu", *ppo_store.overrides, *keys],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "optimistic by the selection" not in proc.stderr
    rows = [json.loads(line) for line in (tmp_path / "rm" / "metrics.jsonl").read_text().splitlines()]
    selection = {r["rm/step"]: r["rm/selection_loss"] for r in rows if "rm/selection_loss" in r}
    held_out = {r["rm/step"]: r["rm/val_loss"] for r in rows if "rm/val_loss" in r and "rm/step" in r}
    assert selection.keys() == held_out.keys() and selection != held_out  # two sets, evaluated together
    kept = json.loads((rm_artifact(cfg_of(ppo_store, "rm", *keys)).path / "metrics.json").read_text())
    best = min(selection, key=selection.get)
    assert min(held_out, key=held_out.get) != best  # the choice is the validation split's, not the held-out set's
    assert kept["rm/best_step"] == best and kept["rm/stopped_step"] == best + 2 == max(selection)
    assert kept["rm/best_selection_loss"] == selection[best] and "rm/best_val_loss" not in kept
    assert kept["rm/val_loss"] == pytest.approx(held_out[best], rel=1e-5)  # the kept weights' held-out loss


# Cuts of the lr at plateaus: 2 cuts by 10x, an evaluation every 2 steps, patience 1, a constant lr (the world sweep's).
PLATEAU = ["model@rm=tiny-xs", "rm_train.epochs=8", "rm_train.lr=0.05", "rm_train.eval_every=2",
           "rm_train.early_stop_patience=1", "rm_train.plateau_lr_decays=2", "rm_train.plateau_lr_factor=0.1",
           "rm_train.lr_schedule=constant", "rm_train.warmup_ratio=0", "rm_train.seed=11"]


def own_store(ppo_store, store):
    """An artifact store of its own holding links to the shared SFT policy and data: an RM is trained there."""
    store.mkdir(exist_ok=True)
    for kind in ("sft", "data"):
        if not (store / kind).exists():
            (store / kind).symlink_to(ppo_store.artifacts / kind)
    return store


def rm_cli(ppo_store, run_dir, store, *extra):
    """`rlhf-scaling stage=rm` with PLATEAU on the shared upstream, its RM built in own_store(store); the
    run's metric rows."""
    import subprocess
    import sys

    from ppo_job import ppo_job_env

    proc = subprocess.run([sys.executable, "-m", "rlhf_scaling.cli", f"hydra.run.dir={run_dir}",
                           f"artifacts_dir={own_store(ppo_store, store)}", "stage=rm", "progress=false", "device=cpu",
                           *ppo_store.overrides, *PLATEAU, *extra],
                          cwd=run_dir.parent, env=ppo_job_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def plateau_run(ppo_store, tmp_path_factory):
    """The plain one-process run of PLATEAU through the CLI: (its metric rows, its RM artifact's metrics)."""
    root = tmp_path_factory.mktemp("plateau")
    rows = rm_cli(ppo_store, root / "rm", root / "store")
    return rows, json.loads((rm_artifact(plateau_cfg(ppo_store, root / "store")).path / "metrics.json").read_text())


def plateau_cfg(ppo_store, store):
    return compose([f"artifacts_dir={store}", "stage=rm", "progress=false", "device=cpu", *ppo_store.overrides, *PLATEAU])


def plateaus_of(rows) -> list:
    """The steps of the evaluations that brought no new lowest held-out loss."""
    losses = {r["rm/step"]: r["rm/val_loss"] for r in rows if "rm/val_loss" in r and "rm/step" in r}
    best, plateaus = float("inf"), []
    for step in sorted(losses):
        if losses[step] < best:
            best = losses[step]
        else:
            plateaus.append(step)
    return plateaus


@slow
def test_plateaus_cut_the_learning_rate_before_the_last_one_stops_and_a_resumed_member_cuts_alike(plateau_run, ppo_store,
                                                                                                  tmp_path):
    """`rlhf-scaling stage=rm rm_train.early_stop_patience=1 rm_train.plateau_lr_decays=2
    rm_train.plateau_lr_factor=0.1`: the first two plateaus of the held-out loss (an evaluation every 2
    steps that is no new best) each cut the learning rate tenfold from the next step on, the third stops;
    the artifact records the cuts. A member interrupted at its first cut (the checkpoint of that step) and
    resumed cuts and stops at the same steps and ends with the same weights as the uninterrupted run."""
    from in_process import run_recipe

    rows, kept = plateau_run
    lr = {r["rm/step"]: r["rm/lr"] for r in rows if "rm/lr" in r}
    plateaus = plateaus_of(rows)
    assert len(plateaus) == 3, plateaus
    assert kept["rm/stopped_step"] == plateaus[2] == max(lr) < 64 and kept["rm/lr_cuts"] == 2
    first, second = plateaus[0], plateaus[1]
    for low, high, rate in ((0, first, 0.05), (first, second, 0.005), (second, 64, 0.0005)):
        rates = [lr[s] for s in lr if low < s <= high]  # rm/lr: the rate after the row's step
        assert rates and rates == pytest.approx([rate] * len(rates), rel=1e-6), (rate, lr)

    # Interrupted at the first cut (its own store: an RM of the same keys), then resumed, in this process.
    cfg = plateau_cfg(ppo_store, own_store(ppo_store, tmp_path / "store"))
    with pytest.raises(InterruptedError):
        run_recipe(rm, cfg, tmp_path / "again", "rm", stop_at_step=first)
    run_recipe(rm, cfg, tmp_path / "again", "rm")
    resumed = json.loads((rm_artifact(cfg).path / "metrics.json").read_text())
    assert (resumed["rm/stopped_step"], resumed["rm/best_step"], resumed["rm/lr_cuts"]) == \
        (kept["rm/stopped_step"], kept["rm/best_step"], 2)
    assert resumed["rm/val_loss"] == pytest.approx(kept["rm/val_loss"], rel=1e-5)


@slow
@pytest.mark.distributed
def test_deepspeed_zero2_cuts_the_learning_rate_its_optimizer_steps_with(plateau_run, ppo_store, tmp_path):
    """The same command under `deepspeed=zero2` (one rank, fp32): the cuts reach the ZeRO optimizer's own
    rate, so its loss curve, its cuts and its stop are the one-process run's (a cut of the schedule alone
    would leave the step after each plateau at the old rate and the curves apart)."""
    rows, _ = plateau_run
    ds = rm_cli(ppo_store, tmp_path / "rm", tmp_path / "store", "deepspeed=zero2", "deepspeed.bf16=false")
    curve = lambda rs, key: [r[key] for r in rs if key in r and "rm/step" in r]  # noqa: E731
    assert plateaus_of(ds) == plateaus_of(rows)
    for key in ("rm/lr", "rm/loss", "rm/val_loss"):
        assert curve(ds, key) == pytest.approx(curve(rows, key), rel=1e-4, abs=1e-6), key


@slow
def test_a_best_of_n_job_that_builds_an_early_stopped_rm_reports_the_kept_weights_accuracy(ppo_store, tmp_path):
    """`rlhf-scaling stage=bon stage.build_upstream=true` with an early-stopped RM: the job's summary and the
    analysis loaders give the RM's accuracy and loss of the kept (best) weights, as its artifact records them, not
    the last logged evaluation's (the stopping step's, worse by construction); a second job that reuses the RM
    (and logs no RM records) reports the same facts. Before, the diversity sweep's RM accuracies were the
    stopping step's (docs/world.md, fifth session)."""
    import subprocess
    import sys

    from rlhf_scaling.analysis.figures import RM_ACCURACY, load_runs, rm_runs

    # rm_train.seed=7: an RM of its own (the early-stopping test above builds the same one with seed 0 in the shared store)
    rm_keys = ["model@rm=tiny-xs", "rm_train.epochs=8", "rm_train.lr=0.05", "rm_train.eval_every=2",
               "rm_train.early_stop_patience=1", "rm_train.seed=7"]
    for seed in (0, 1):
        proc = subprocess.run([sys.executable, "-m", "rlhf_scaling.cli", f"hydra.run.dir={tmp_path / f'bon{seed}'}",
                               f"artifacts_dir={ppo_store.artifacts}", "stage=bon", "stage.build_upstream=true",
                               "progress=false", "device=cpu", *ppo_store.overrides, *rm_keys, *BON, f"bon.seed={seed}"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    artifact = rm_artifact(cfg_of(ppo_store, "bon", *rm_keys))
    kept = json.loads((artifact.path / "metrics.json").read_text())
    rows = [json.loads(line) for line in (tmp_path / "bon0" / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if "rm/val_loss" in r][-1]
    assert last["rm/step"] == kept["rm/stopped_step"] > kept["rm/best_step"]  # built here, stopped early
    assert last["rm/val_loss"] > kept["rm/val_loss"]  # the last logged evaluation is not the kept weights'
    for job in ("bon0", "bon1"):
        summary = json.loads((tmp_path / job / "summary.json").read_text())
        assert summary["rm/val_loss"] == kept["rm/val_loss"] and summary["rm/val_accuracy"] == kept["rm/val_accuracy"]
        assert summary["rm/artifact"] == str(artifact.path) and "bon/n_max" in summary
    assert not any("rm/val_loss" in json.loads(line) for line in (tmp_path / "bon1" / "metrics.jsonl").read_text().splitlines())
    runs = load_runs(str(tmp_path))
    assert set(runs.loc[runs["run_id"].isin(["bon0", "bon1"]), "summary.rm/val_loss"]) == {kept["rm/val_loss"]}
    [accuracy] = rm_runs(runs)[RM_ACCURACY].tolist()  # one RM artifact: one row, the kept weights' accuracy
    assert accuracy == kept["rm/val_accuracy"]


def test_early_stopping_counts_evaluations_without_a_new_best():
    stopper = EarlyStopping(2)
    assert [stopper.update(x, step) for step, x in enumerate([1.0, 0.8, 0.9, 0.7, 0.75], 1)] == \
        [True, True, False, True, False]
    assert not stopper.stop and (stopper.best, stopper.best_step) == (0.7, 4)
    stopper.update(0.7, 6)  # equal is no improvement
    assert stopper.stop
    resumed = EarlyStopping(2, stopper.state_dict())
    assert resumed.stop and resumed.best_step == 4
    late = EarlyStopping(1, min_steps=5)  # no stop before step 5, however long the plateau
    stops = []
    for step in range(1, 7):
        late.update(1.0, step)  # a best at step 1, then a plateau
        stops.append(late.stop)
    assert stops == [False] * 4 + [True, True]
    assert EarlyStopping(1, late.state_dict(), min_steps=5).stop
    cutting = EarlyStopping(1, lr_cuts=2)  # two plateaus cut the lr, the third stops
    cuts = []
    for step, x in enumerate([1.0, 1.1, 0.9, 0.95, 0.8, 0.85, 0.9], 1):
        cutting.update(x, step)
        cuts.append((cutting.cut_lr(), cutting.stop))
    assert cuts == [(False, False), (True, False), (False, False), (True, False), (False, False), (False, True),
                    (False, True)]
    assert EarlyStopping(1, cutting.state_dict(), lr_cuts=2).stop  # the cuts done are in its state
    never = EarlyStopping(0)
    for step in range(10):
        never.update(1.0, step)
    assert not never.active and not never.stop
