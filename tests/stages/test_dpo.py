"""Stage `dpo`: the batch layout counts exactly the response tokens; a few steps learn a trivial
preference (DPO and IPO); the CLI run's step-0 evaluation is a gold scoring of the SFT policy's
samples and its evaluation is PPO's (same prompts, estimator and units); a killed job resumes to the
uninterrupted curve; ZeRO-2 on one CPU rank equals plain PyTorch."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from rlhf_scaling.cli import compose
from rlhf_scaling.data.records import PreferenceGroup
from rlhf_scaling.distributed import DistEnv
from rlhf_scaling.dpo_math import sequence_logprobs
from rlhf_scaling.models import build_policy, load_policy
from rlhf_scaling.sampling import sample
from rlhf_scaling.stages import dpo as dpo_stage
from rlhf_scaling.stages import ppo as ppo_stage
from rlhf_scaling.stages.common import policy_init_path, rm_artifact, setup_task
from rlhf_scaling.stages.data import trained_prompts
from rlhf_scaling.training import TorchTrainer, make_trainer

DPO = ["stage=dpo", "progress=false", "device=cpu", "dpo.batch_size=8", "dpo.epochs=2", "dpo.eval_every=4",
       "dpo.eval_prompts=16", "dpo.checkpoint_every=4", "dpo.lr=1e-3"]
EVAL_KEYS = ["eval/step", "eval/gold", "eval/gold_se", "eval/proxy", "eval/kl", "eval/sqrt_kl", "eval/response_len",
             "eval/ended_fraction", "eval/flops"]  # what PPO's held-out evaluation logs


def records(run_dir: Path) -> pd.DataFrame:
    return pd.DataFrame([json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
                         if line.strip()])


def cli(run_dir, store, *extra):
    return [sys.executable, "-m", "rlhf_scaling.cli", f"hydra.run.dir={run_dir}", f"artifacts_dir={store.artifacts}",
            *store.overrides, *DPO, *extra]


# ----------------------------------------------------------------------------- batch layout


@pytest.fixture(scope="module")
def tiny():
    """A tiny random policy and the synthetic task's tokenizer."""
    cfg = compose(["stage=dpo", "model@policy=tiny-xs"])
    setup = setup_task(cfg)
    torch.manual_seed(0)
    return build_policy(cfg.policy, setup.tokenizer).eval(), setup


@pytest.mark.parametrize("padding_free", [False, True])
def test_batched_response_logprobs_equal_each_sequence_alone(tiny, padding_free):
    """In a batch of rows with different prompt and response lengths (left-padded prompts,
    right-padded responses), each row's summed response log-prob equals the sum over that sequence's
    response tokens (EOS included) in an unpadded forward of it alone: neither prompt nor padding counts."""
    policy, setup = tiny
    prompts = setup.prompts(2, seed=3)
    groups = [PreferenceGroup(prompts[0], ("a b c d e", "a"), ((0, 1),)),
              PreferenceGroup(prompts[1] + " " + prompts[0], ("b c", "d e f"), ((1, 0),))]
    units, _ = dpo_stage.encode_units([_words(g, setup) for g in groups], setup.tokenizer, 16)
    pb = dpo_stage.collate(units, setup.tokenizer.pad_token_id, padding_free, "cpu")
    with torch.no_grad():
        got = sequence_logprobs(dpo_stage.response_logprobs(policy, pb), pb.r_mask)
    expected, lengths = [], []
    for u in units:
        for r in u.responses:
            ids = torch.tensor([u.prompt + r])
            with torch.no_grad():
                logp = torch.log_softmax(policy(input_ids=ids).logits[0, :-1].float(), -1)
            targets = ids[0, 1:]
            expected.append(logp.gather(1, targets[:, None])[len(u.prompt) - 1:, 0].sum().item())
            lengths.append(len(r))
    assert pb.r_mask.sum(1).tolist() == lengths == [6, 2, 3, 4]  # the response's words + EOS, nothing of the prompt
    assert [u.prompt for u in units] == [setup.tokenizer(g.prompt, add_special_tokens=False)["input_ids"]
                                         for g in groups]
    assert got.tolist() == pytest.approx(expected, abs=1e-4)
    assert pb.pairs.tolist() == [[0, 1], [3, 2]]  # the second unit's pair, offset to its rows


def _words(group: PreferenceGroup, setup) -> PreferenceGroup:
    """The group with its placeholder letters replaced by words of the task's vocabulary (either world)."""
    vocab = sorted(w for w in setup.tokenizer.get_vocab() if w.isalnum())  # words, not <pad>-like specials
    swap = lambda text: " ".join(vocab[ord(c) - ord("a")] for c in text.split())  # noqa: E731
    return PreferenceGroup(group.prompt, tuple(swap(r) for r in group.responses), group.pairs)


# ----------------------------------------------------------------------------- learning a trivial preference


@pytest.mark.parametrize("loss, initial_loss", [("dpo", math.log(2)), ("ipo", 1 / (4 * 0.1 ** 2))])
def test_a_few_steps_learn_a_trivial_preference(tiny, loss, initial_loss):
    """Chosen: a fixed short word sequence; rejected: another. The first step's loss is the loss at
    the reference (log 2 for DPO, 1/(4β²) for IPO at β = 0.1); after 15 steps the implicit reward
    ranks held-out pairs (unseen prompts) right, by a positive margin."""
    _, setup = tiny
    policy = build_policy(compose(["stage=dpo", "model@policy=tiny-xs"]).policy, setup.tokenizer)
    reference = build_policy(compose(["stage=dpo", "model@policy=tiny-xs"]).policy, setup.tokenizer)
    reference.load_state_dict(policy.state_dict())
    reference.eval().requires_grad_(False)
    good, bad = "a b c", "d e f"
    groups = [_words(PreferenceGroup(p, (good, bad) if i % 2 else (bad, good), ((0, 1),) if i % 2 else ((1, 0),)),
                     setup) for i, p in enumerate(setup.prompts(40, seed=1))]
    units, _ = dpo_stage.encode_units(groups, setup.tokenizer, 16)
    train, held = units[:32], units[32:]
    cfg = compose(["stage=dpo", f"dpo.loss={loss}", "dpo.beta=0.1", "dpo.padding_free=false"])
    trainer = make_trainer(policy, torch.optim.Adam(policy.parameters(), lr=3e-3), engine_cfg=None, where="test",
                           max_grad_norm=1.0)
    before, _ = dpo_stage.preference_eval(policy, reference, held, cfg.dpo, setup.tokenizer.pad_token_id, "cpu")
    first = None
    for step in range(1, 16):
        idx = [(8 * step + i) % 32 for i in range(8)]
        m = dpo_stage.train_step(trainer, reference, train, idx, cfg.dpo, setup.tokenizer.pad_token_id,
                                 DistEnv(), "cpu", step)
        first = first or m
    after, _ = dpo_stage.preference_eval(policy, reference, held, cfg.dpo, setup.tokenizer.pad_token_id, "cpu")
    assert first["dpo/loss"] == pytest.approx(initial_loss, rel=1e-5)
    assert first["dpo/accuracy"] == 0.5 and first["dpo/margin"] == 0.0  # the policy is the reference: ties
    assert before["eval/pref_accuracy"] == 0.5
    assert after["eval/pref_accuracy"] == 1.0 and after["eval/pref_loss"] < 0.6 * initial_loss
    assert m["dpo/accuracy"] == 1.0 and m["dpo/margin"] > 0 and m["dpo/reward_chosen"] > m["dpo/reward_rejected"]


# ----------------------------------------------------------------------------- the CLI run


@pytest.fixture(scope="module")
def cli_run(ppo_store, tmp_path_factory):
    """`rlhf-scaling stage=dpo ...` as a user runs it, on the session's SFT policy and data."""
    run_dir = tmp_path_factory.mktemp("dpo_cli") / "run"
    proc = subprocess.run(cli(run_dir, ppo_store), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = compose([f"artifacts_dir={ppo_store.artifacts}", *ppo_store.overrides, *DPO])
    return cfg, run_dir


@pytest.mark.slow
def test_cli_run_logs_ppos_eval_keys_and_step0_is_the_sft_policys_gold(cli_run):
    cfg, run_dir = cli_run
    rows = records(run_dir)
    evals = rows.dropna(subset=["eval/step"]).set_index("eval/step")
    steps = rows["dpo/step"].dropna().astype(int).tolist()
    assert steps == list(range(1, 17))  # 64 training prompts / 8 per step x 2 epochs
    assert evals.index.tolist() == [0, 4, 8, 12, 16]
    assert set(EVAL_KEYS) <= set(rows.columns)
    # step 0: gold of the SFT policy's own samples from the evaluation seed, on PPO's held-out prompts
    setup = setup_task(cfg)
    prompts, sample_seed = ppo_stage.held_out_prompts(setup, 16, cfg.seed + cfg.ppo.seed, trained_prompts(cfg, setup))
    assert json.loads((run_dir / "eval_prompts.json").read_text()) == prompts  # none of them trained on
    torch.manual_seed(sample_seed)
    samples = sample(load_policy(policy_init_path(cfg)), setup.tokenizer, prompts,
                     max_new_tokens=cfg.task.max_response_tokens, temperature=1.0)
    assert evals.loc[0, "eval/gold"] == pytest.approx(setup.gold.score(prompts, samples.texts).mean().item(), abs=1e-6)
    assert evals.loc[0, "eval/response_len"] == pytest.approx(samples.lengths.float().mean().item())
    assert abs(evals.loc[0, "eval/kl"]) < 1e-4 and abs(evals.loc[0, "eval/proxy"]) < 1e-5
    assert evals.loc[16, "eval/kl"] > 0.05  # the policy moved
    # DPO's proxy on its own samples is β x the k1 KL estimate (both β·Σ log π/π_ref)
    assert evals["eval/proxy"].tolist() == pytest.approx((cfg.dpo.beta * evals["eval/kl"]).tolist(), abs=1e-5)
    assert evals["eval/flops"].is_monotonic_increasing and rows["dpo/flops"].dropna().is_monotonic_increasing
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["dpo/peak_gold"] == pytest.approx(evals["eval/gold"].max())
    assert summary["dpo/better_form"] in ("rl", "bon") and summary["dpo/sse_ratio"] >= 1
    assert pd.read_csv(run_dir / "dpo_eval_curve.csv")["eval/step"].tolist() == [0, 4, 8, 12, 16]
    assert rows["dpo/train_pairs"].dropna().iloc[0] == 384  # every comparison the RM sees: 64 prompts x C(4,2)


@pytest.mark.slow
def test_dpo_evaluation_is_ppos_evaluation_of_the_same_policy(cli_run):
    """PPO's own evaluate (stages/ppo.py) on the trained DPO policy gives the final eval record's
    gold, KL (nats per sequence, PPO's k1 estimator), length and ended fraction."""
    cfg, run_dir = cli_run
    final = records(run_dir).dropna(subset=["eval/step"]).iloc[-1]
    setup = setup_task(cfg)
    prompts, sample_seed = ppo_stage.held_out_prompts(setup, 16, cfg.seed + cfg.ppo.seed, trained_prompts(cfg, setup))
    trained = TorchTrainer(nn.ModuleDict({"policy": load_policy(run_dir / "policy")}), None, where="test",
                           max_grad_norm=0.0)
    reference = load_policy(policy_init_path(cfg)).eval()
    from rlhf_scaling.scoring import load_ensemble

    proxies = load_ensemble(rm_artifact(cfg).path, "cpu")
    ppo_metrics, _ = ppo_stage.evaluate(trained, reference, proxies, setup, prompts, sample_seed, cfg.ppo,
                                        cfg.task.max_response_tokens, "mean", 1.0, "cpu")
    for key in ("eval/gold", "eval/gold_se", "eval/kl", "eval/sqrt_kl", "eval/response_len", "eval/ended_fraction"):
        assert final[key] == pytest.approx(ppo_metrics[key], rel=1e-4, abs=1e-5), key
    assert final["eval/kl"] > 0.05


# ----------------------------------------------------------------------------- resume and ZeRO-2


@pytest.fixture(scope="module")
def uninterrupted(cli_run):
    return records(cli_run[1])


def _curves(rows: pd.DataFrame) -> tuple:
    train_cols = ["dpo/step", "dpo/loss", "dpo/accuracy", "dpo/margin", "dpo/reward_chosen", "dpo/flops"]
    return (rows.dropna(subset=["dpo/step"])[train_cols].reset_index(drop=True),
            rows.dropna(subset=["eval/step"])[EVAL_KEYS].reset_index(drop=True))


@pytest.mark.slow
def test_killed_dpo_job_resumes_to_the_same_curve(ppo_store, uninterrupted, tmp_path):
    run_dir = tmp_path / "cut"
    job = subprocess.Popen(cli(run_dir, ppo_store), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:  # kill once a checkpoint exists and training has gone past it
        metrics = run_dir / "metrics.jsonl"
        if (run_dir / "checkpoint" / "DONE").exists() and metrics.read_text().count('"dpo/step"') >= 6:
            break
        assert job.poll() is None, "the job ended before it could be killed"
        time.sleep(0.02)
    job.send_signal(signal.SIGKILL)
    job.wait(60)
    assert records(run_dir)["dpo/step"].max() < 16, "the job finished before it could be killed"

    again = subprocess.run(cli(run_dir, ppo_store), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    rows = records(run_dir)
    assert rows["dpo/step"].dropna().astype(int).tolist() == list(range(1, 17))  # each step once
    assert rows["eval/step"].dropna().astype(int).tolist() == [0, 4, 8, 12, 16]
    for a, b in zip(_curves(uninterrupted), _curves(rows)):
        pd.testing.assert_frame_equal(a, b, rtol=1e-5)


@pytest.mark.distributed
@pytest.mark.slow
def test_zero2_on_one_rank_matches_plain_pytorch(ppo_store, cli_run, tmp_path):
    """The same job through DeepSpeed's ZeRO-2 engine (one CPU rank, fp32): the same curves and
    the same exported policy as the plain torch optimizer, to fp32 tolerance."""
    from safetensors.torch import load_file

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR",
                                                             "MASTER_PORT") and not k.startswith("SLURM_")}
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "rlhf-scaling" / "torch_extensions"))
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(cli(tmp_path / "ds", ppo_store, "deepspeed=zero2", "deepspeed.bf16=false"), env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    plain, ds = _curves(records(cli_run[1])), _curves(records(tmp_path / "ds"))
    for a, b in zip(plain, ds):
        for key in a.columns:
            assert b[key].tolist() == pytest.approx(a[key].tolist(), rel=1e-4, abs=1e-5), key
    wa, wb = (load_file(str(d / "policy" / "model.safetensors")) for d in (cli_run[1], tmp_path / "ds"))
    init = load_file(str(Path(policy_init_path(cli_run[0])) / "model.safetensors"))
    assert wa.keys() == wb.keys()
    # Adam turns fp32 rounding differences in near-zero gradients into differences of up to a step
    # (lr = 1e-3); measured 1e-4 at most, against weights that moved by over 1e-2 from the SFT policy.
    assert max((wa[k] - init[k]).abs().max().item() for k in wa) > 1e-2
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=5e-4)


def test_build_upstream_builds_sft_and_data_but_no_rm(monkeypatch):
    """DPO trains on the preference data itself: stage.build_upstream builds the SFT policy and the
    data, never a reward model."""
    import importlib

    from rlhf_scaling.stages.upstream import ensure_upstream

    built = []
    for name in ("sft", "data", "rm"):
        monkeypatch.setattr(importlib.import_module(f"rlhf_scaling.stages.{name}"), "run",
                            lambda cfg, tracker, name=name: built.append(name))
    ensure_upstream(compose(["stage=dpo"]), None, before="dpo")
    assert built == ["sft", "data"]
    built.clear()
    ensure_upstream(compose(["stage=ppo"]), None, before="ppo")
    assert built == ["sft", "data", "rm"]
