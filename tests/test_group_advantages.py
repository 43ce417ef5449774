"""Critic-free advantages (RLOO, GRPO) and GRPO's KL loss against hand-computed values and against the
formulas of TRL's RLOOTrainer / GRPOTrainer; the stage's advantage step for each algorithm; the
groups of a prompt kept on one rank; the config errors of the critic-free algorithms."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rlhf_scaling import group_advantages as G
from rlhf_scaling import ppo_math as P
from rlhf_scaling.cli import compose
from rlhf_scaling.config import ConfigError
from rlhf_scaling.stages.ppo import advantages_of, rank_batch, rank_prompts

# Three groups of k = 3: distinct rewards, all tied (zero variance), two tied.
REWARDS = torch.tensor([1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 1.0, 1.0, 3.0])


def test_rloo_advantage_is_reward_minus_the_mean_of_the_others():
    # [1,2,4]: baselines (2+4)/2, (1+4)/2, (1+2)/2 = 3, 2.5, 1.5; [5,5,5]: 5; [1,1,3]: 2, 2, 1.
    expected = [-2.0, -0.5, 2.5, 0.0, 0.0, 0.0, -1.0, -1.0, 2.0]
    assert G.rloo_advantages(REWARDS, 3).tolist() == pytest.approx(expected, abs=1e-6)


def test_grpo_advantage_uses_the_sample_std_and_a_tied_group_gives_zero():
    # [1,2,4]: mean 7/3, deviations -4/3, -1/3, 5/3, sample variance (16+1+25)/9 / 2 = 7/3.
    s1 = math.sqrt(7 / 3) + G.GRPO_STD_EPS
    # [1,1,3]: mean 5/3, deviations -2/3, -2/3, 4/3, sample variance (4+4+16)/9 / 2 = 4/3.
    s3 = math.sqrt(4 / 3) + G.GRPO_STD_EPS
    expected = [-4 / 3 / s1, -1 / 3 / s1, 5 / 3 / s1, 0.0, 0.0, 0.0, -2 / 3 / s3, -2 / 3 / s3, 4 / 3 / s3]
    out = G.grpo_advantages(REWARDS, 3)
    assert out.tolist() == pytest.approx(expected, abs=1e-6)
    assert torch.isfinite(out).all() and out[3:6].tolist() == [0.0, 0.0, 0.0]  # std 0: no NaN, no inf


def test_group_advantages_refuse_a_batch_that_is_not_whole_groups():
    with pytest.raises(ValueError, match="whole groups"):
        G.rloo_advantages(REWARDS, 4)
    with pytest.raises(ValueError, match="k >= 2"):
        G.grpo_advantages(REWARDS, 1)


# ----------------------------------------------------------------------------- the peer's formulas

# TRL at commit f2cd5771 (2026-07-24), read, not imported (no TRL in this environment):
# trl/trainer/grpo_trainer.py: advantages = (rewards − group mean) / (nanstd(group) + 1e-4), with
# trl/trainer/utils.py nanstd = sqrt(mean((x − mean)²) · n/(n − 1)) (Bessel-corrected);
# trl/trainer/rloo_trainer.py: rewards −= beta · Σ_t (old_logps − ref_logps) (k1, per sequence), then
# baseline = (group sum − r) / (k − 1), advantages = rewards − baseline (normalize_advantages=False).


def trl_grpo(rewards: np.ndarray, k: int) -> np.ndarray:
    g = rewards.reshape(-1, k)
    mean = g.mean(axis=1, keepdims=True)
    std = np.sqrt(((g - mean) ** 2).mean(axis=1, keepdims=True) * k / (k - 1))
    return ((g - mean) / (std + 1e-4)).reshape(-1)


def trl_rloo(rewards: np.ndarray, seq_kl: np.ndarray, beta: float, k: int) -> np.ndarray:
    g = (rewards - beta * seq_kl).reshape(-1, k)
    return (g - (g.sum(axis=1, keepdims=True) - g) / (k - 1)).reshape(-1)


def rollouts(seed=0, groups=5, k=4, t=6):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(groups * k, generator=gen, dtype=torch.float64)
    scores[:k] = 0.7  # one tied group
    logprobs = -torch.rand(groups * k, t, generator=gen, dtype=torch.float64) * 3
    ref_logprobs = -torch.rand(groups * k, t, generator=gen, dtype=torch.float64) * 3
    lengths = torch.randint(1, t + 1, (groups * k,), generator=gen)
    mask = (torch.arange(t)[None, :] < lengths[:, None]).double()
    return scores, logprobs, ref_logprobs, mask


def settings(algorithm, k=4, estimator="k1"):
    return SimpleNamespace(algorithm=algorithm, samples_per_prompt=k, kl_estimator=estimator)


def test_grpo_matches_trls_formula_on_identical_rewards():
    scores, logprobs, ref_logprobs, mask = rollouts()
    ours = G.grpo_advantages(scores, 4).numpy()
    np.testing.assert_allclose(ours, trl_grpo(scores.numpy(), 4), rtol=1e-12, atol=1e-12)
    # The stage's step: the same advantage on every real token, 0 on padding, no KL in it.
    adv, returns, kl = advantages_of(scores, logprobs, ref_logprobs, None, mask, 0.3, settings("grpo", estimator="k3"))
    assert returns is None
    np.testing.assert_allclose(adv.numpy(), (ours[:, None] * mask.numpy()), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(kl.numpy(), (P.kl_per_token(logprobs, ref_logprobs, "k3") * mask).numpy())


def test_rloo_with_its_kl_penalty_matches_trls_formula_on_identical_rollouts():
    scores, logprobs, ref_logprobs, mask = rollouts(seed=1)
    beta = 0.3
    seq_kl = ((logprobs - ref_logprobs) * mask).sum(1).numpy()
    expected = trl_rloo(scores.numpy(), seq_kl, beta, 4)
    assert np.abs(beta * seq_kl).max() > 0.1  # the penalty moves the advantages: a real comparison
    adv, returns, kl = advantages_of(scores, logprobs, ref_logprobs, None, mask, beta, settings("rloo"))
    assert returns is None
    np.testing.assert_allclose(adv.numpy(), expected[:, None] * mask.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(P.sequence_kl(kl, mask).numpy(), seq_kl, rtol=1e-12)


def test_ppo_keeps_its_critic_advantages():
    scores, logprobs, ref_logprobs, mask = rollouts(seed=2)
    values = torch.zeros_like(logprobs)
    p = SimpleNamespace(algorithm="ppo", kl_estimator="k1", gamma=1.0, lam=0.95)
    adv, returns, _ = advantages_of(scores, logprobs, ref_logprobs, values, mask, 0.1, p)
    rewards, _ = P.kl_penalised_rewards(scores, logprobs, ref_logprobs, mask, 0.1)
    gae, gae_returns = P.gae(rewards, values, mask, 1.0, 0.95)
    torch.testing.assert_close(adv, P.whiten(gae, mask))
    torch.testing.assert_close(returns, gae_returns)


# ----------------------------------------------------------------------------- GRPO's KL loss term


def test_kl_loss_is_the_k3_token_mean_and_pulls_toward_the_reference():
    logprobs = torch.log(torch.tensor([[0.5, 0.2, 0.9]], dtype=torch.float64)).requires_grad_()
    ref = torch.log(torch.tensor([[0.25, 0.2, 0.1]], dtype=torch.float64))
    mask = torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64)  # the third token is padding
    loss = G.kl_loss(logprobs, ref, mask)
    # token 1: r = π_ref/π = 0.5, r − 1 − log r = log 2 − 0.5; token 2: r = 1 -> 0; mean over 2 real tokens.
    assert loss.item() == pytest.approx((math.log(2) - 0.5) / 2, abs=1e-12)
    loss.backward()
    # d/d log π of (r − 1 − log r) = 1 − r: positive where π > π_ref (descent lowers log π), 0 where equal.
    assert logprobs.grad[0, 0].item() == pytest.approx((1 - 0.5) / 2) and logprobs.grad[0, 1].item() == 0.0
    assert logprobs.grad[0, 2].item() == 0.0  # padding has no gradient


def test_per_token_places_the_sequence_advantage_on_real_tokens_only():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert G.per_token(torch.tensor([2.0, -1.0]), mask).tolist() == [[2.0, 2.0, 0.0], [-1.0, 0.0, 0.0]]


# ----------------------------------------------------------------------------- groups stay on one rank


def test_each_rank_holds_whole_groups_of_a_prompts_rollouts():
    prompts = [f"p{i}" for i in range(4)]
    local_n, _ = rank_batch(4 * 3, 6, world_size=2, group=3)
    shares = [rank_prompts(prompts, 3, rank, local_n) for rank in range(2)]
    assert shares == [["p0"] * 3 + ["p1"] * 3, ["p2"] * 3 + ["p3"] * 3]
    with pytest.raises(ConfigError, match="ppo.prompts_per_step = 3 must be divisible by the 2 ranks"):
        rank_batch(3 * 2, 2, world_size=2, group=2)  # a group would straddle the ranks
    assert rank_batch(3 * 2, 2, world_size=2) == (3, 1)  # PPO needs no whole groups


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("overrides, message", [
    (["ppo.algorithm=rloo", "ppo.samples_per_prompt=1"], "ppo.samples_per_prompt: ppo.algorithm=rloo"),
    (["ppo.algorithm=grpo", "ppo.samples_per_prompt=1", "ppo.kl_estimator=k3"], "ppo.samples_per_prompt: ppo.algorithm=grpo"),
    (["ppo.algorithm=grpo"], "ppo.kl_estimator: ppo.algorithm=grpo puts the KL in the loss"),
    (["ppo.algorithm=a2c"], "ppo.algorithm: 'a2c' is not one of"),
])
def test_critic_free_settings_that_cannot_work_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=f"^{message}"):
        compose(["stage=ppo", *overrides])
    compose(["stage=ppo", "ppo.algorithm=rloo"])  # the default samples_per_prompt = 2 is enough
