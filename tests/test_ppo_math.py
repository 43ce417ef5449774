"""PPO maths against hand-computed examples (right-padded rows of different lengths)."""

import math

import pytest
import torch

from rlhf_scaling.ppo_math import (
    AdaptiveKLController,
    FixedKLController,
    entropy_from_logits,
    gae,
    kl_penalised_rewards,
    kl_per_token,
    logprobs_from_logits,
    masked_mean,
    policy_loss,
    sequence_kl,
    value_loss,
    whiten,
    whiten_scores,
)

# Two rollouts: row 0 has 3 real tokens, row 1 has 2; T = 4.
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])


def close(a, b, tol=1e-6):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64),
                          atol=tol, rtol=0)


# --------------------------------------------------------------------------------------------
# Log-probs, KL, rewards
# --------------------------------------------------------------------------------------------


def test_logprobs_from_logits():
    logits = torch.tensor([[[0.0, math.log(3.0)], [1.0, 1.0]]])  # (1, 2, 2)
    tokens = torch.tensor([[1, 0]])
    # softmax(0, ln 3) = (1/4, 3/4); softmax(1, 1) = (1/2, 1/2)
    assert close(logprobs_from_logits(logits, tokens), [[math.log(0.75), math.log(0.5)]])


def test_kl_estimators():
    logp = torch.tensor([math.log(0.5), math.log(0.2)])
    ref = torch.tensor([math.log(0.25), math.log(0.4)])
    assert close(kl_per_token(logp, ref, "k1"), [math.log(2), math.log(0.5)])
    # k3 = ρ − 1 − log ρ with ρ = π_ref/π: ρ = 0.5 -> 0.5 − 1 + ln 2; ρ = 2 -> 1 − ln 2.
    assert close(kl_per_token(logp, ref, "k3"), [-0.5 + math.log(2), 1 - math.log(2)])
    with pytest.raises(ValueError):
        kl_per_token(logp, ref, "k2")


def test_k3_is_never_negative_while_k1_can_be():
    gen = torch.Generator().manual_seed(0)
    logp = -5 * torch.rand(64, 32, generator=gen)
    ref = -5 * torch.rand(64, 32, generator=gen)
    assert (kl_per_token(logp, ref, "k3") >= 0).all()
    assert (kl_per_token(logp, ref, "k1") < 0).any()


def test_kl_penalised_rewards_hand_example():
    kl_k1 = torch.tensor([[0.1, -0.2, 0.3, 9.0], [0.5, 0.4, -7.0, 3.0]])  # padding holds garbage
    ref = torch.randn(2, 4)
    logp = ref + kl_k1
    scores = torch.tensor([2.0, -1.0])
    rewards, kl = kl_penalised_rewards(scores, logp, ref, MASK, kl_coef=0.5)
    # −β·kl on real tokens; the score on the LAST REAL token (col 2 for row 0, col 1 for row 1).
    assert close(rewards, [[-0.05, 0.1, -0.15 + 2.0, 0.0], [-0.25, -0.2 - 1.0, 0.0, 0.0]])
    assert close(kl, [[0.1, -0.2, 0.3, 0.0], [0.5, 0.4, 0.0, 0.0]])
    assert close(sequence_kl(kl, MASK), [0.2, 0.9])


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_non_finite_padding_does_not_leak(estimator):
    # Padding log-probs of −inf / nan (e.g. a masked-out PAD logit) must not reach real tokens.
    logp = torch.tensor([[-1.0, -2.0, -0.5, float("-inf")], [-0.3, -0.7, float("nan"), float("nan")]])
    ref = torch.tensor([[-1.5, -1.0, -0.5, 0.0], [-0.3, -1.7, float("nan"), -1.0]])
    rewards, kl = kl_penalised_rewards(torch.tensor([1.0, 2.0]), logp, ref, MASK, 0.1, estimator)
    assert torch.isfinite(rewards).all() and torch.isfinite(kl).all()
    assert (kl[~MASK.bool()] == 0).all() and (rewards[~MASK.bool()] == 0).all()
    assert torch.isfinite(sequence_kl(kl, MASK)).all()


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_returned_kl_is_the_penalised_kl(estimator):
    gen = torch.Generator().manual_seed(1)
    logp, ref = -3 * torch.rand(2, 4, generator=gen), -3 * torch.rand(2, 4, generator=gen)
    beta = 0.3
    # With zero scores the rewards are the penalty alone: rewards == −β · kl, elementwise.
    rewards, kl = kl_penalised_rewards(torch.zeros(2), logp, ref, MASK, beta, estimator)
    assert close(rewards, -beta * kl)
    assert close(kl, kl_per_token(logp, ref, estimator) * MASK)
    # And with scores, removing the score from the last real tokens leaves the same penalty.
    rewards_s, kl_s = kl_penalised_rewards(torch.tensor([1.0, 2.0]), logp, ref, MASK, beta, estimator)
    assert torch.equal(kl_s, kl)
    rewards_s[0, 2] -= 1.0
    rewards_s[1, 1] -= 2.0
    assert close(rewards_s, rewards)


def test_score_on_single_token_row_and_empty_row_raises():
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    rewards, _ = kl_penalised_rewards(torch.tensor([3.0, 4.0]), torch.zeros(2, 3), torch.zeros(2, 3), mask, 0.1)
    assert close(rewards, [[3.0, 0, 0], [0, 0, 4.0]])
    with pytest.raises(ValueError):
        kl_penalised_rewards(torch.ones(2), torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([[1, 0, 0], [0, 0, 0]]),
                             0.1)


# --------------------------------------------------------------------------------------------
# GAE
# --------------------------------------------------------------------------------------------

GAE_REWARDS = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 99.0]])
GAE_VALUES = torch.tensor([[0.5, 1.0, 1.5], [0.5, 1.0, 7.0]])
GAE_MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])


def test_gae_gamma1_lam1_is_reward_to_go_minus_value():
    adv, ret = gae(GAE_REWARDS, GAE_VALUES, GAE_MASK, gamma=1.0, lam=1.0)
    # Row 0: reward-to-go (6, 5, 3) − V.  Row 1 ends after 2 tokens: rtg (3, 2); padding 0.
    assert close(adv, [[5.5, 4.0, 1.5], [2.5, 1.0, 0.0]])
    assert close(ret, [[6.0, 5.0, 3.0], [3.0, 2.0, 0.0]])


def test_gae_discounted_by_hand():
    adv, ret = gae(GAE_REWARDS, GAE_VALUES, GAE_MASK, gamma=0.5, lam=0.5)
    # Row 0: δ2 = 3 − 1.5 = 1.5; δ1 = 2 + 0.5·1.5 − 1 = 1.75; δ0 = 1 + 0.5·1 − 0.5 = 1.
    #        A2 = 1.5; A1 = 1.75 + 0.25·1.5 = 2.125; A0 = 1 + 0.25·2.125 = 1.53125.
    # Row 1: δ1 = 2 + 0 − 1 = 1 (no bootstrap from padding); δ0 = 1 + 0.5·1 − 0.5 = 1;
    #        A1 = 1; A0 = 1 + 0.25·1 = 1.25.
    assert close(adv, [[1.53125, 2.125, 1.5], [1.25, 1.0, 0.0]])
    assert close(ret, [[2.03125, 3.125, 3.0], [1.75, 2.0, 0.0]])


def test_gae_ignores_non_finite_padding():
    rewards = GAE_REWARDS.clone()
    values = GAE_VALUES.clone()
    rewards[1, 2], values[1, 2] = float("nan"), float("inf")
    adv, ret = gae(rewards, values, GAE_MASK, gamma=0.5, lam=0.5)
    assert close(adv, [[1.53125, 2.125, 1.5], [1.25, 1.0, 0.0]])
    assert close(ret, [[2.03125, 3.125, 3.0], [1.75, 2.0, 0.0]])


def test_gae_lam0_is_one_step_td():
    adv, _ = gae(GAE_REWARDS, GAE_VALUES, GAE_MASK, gamma=0.9, lam=0.0)
    assert close(adv, [[1 + 0.9 * 1.0 - 0.5, 2 + 0.9 * 1.5 - 1.0, 3 - 1.5], [1 + 0.9 * 1.0 - 0.5, 2 - 1.0, 0.0]])


# --------------------------------------------------------------------------------------------
# Clipped losses
# --------------------------------------------------------------------------------------------


def test_policy_loss_clipping_by_hand():
    ratios = torch.tensor([[1.0, 1.1, 1.5, 0.5], [0.5, 1.5, 3.0, 3.0]])
    adv = torch.tensor([[1.0, 1.0, 1.0, 1.0], [-1.0, -1.0, -1.0, -1.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    old = torch.zeros(2, 4)
    logp = ratios.log().requires_grad_(True)
    loss, clip_frac, approx_kl = policy_loss(logp, old, adv, mask, clip_range=0.2)
    # A > 0: per-token max(−ρA, −clip(ρ)A) = (−1, −1.1, −1.2*, −0.5);  (* = clipped term active)
    # A < 0: (0.8*, 1.5).  Mean over 6 real tokens: (−3.8 + 2.3)/6 = −0.25; 2 of 6 clipped.
    assert loss.item() == pytest.approx(-0.25)
    assert clip_frac.item() == pytest.approx(1 / 3)
    real = ratios[mask.bool()]
    assert approx_kl.item() == pytest.approx(float((real - 1 - real.log()).mean()), rel=1e-5)
    # Clipped tokens carry no gradient; padding carries none either.
    loss.backward()
    assert logp.grad[0, 2] == 0 and logp.grad[1, 0] == 0 and logp.grad[1, 2:].abs().sum() == 0
    assert logp.grad[0, 0] != 0 and logp.grad[1, 1] != 0


def test_policy_loss_on_policy_equals_minus_mean_advantage():
    adv = torch.randn(3, 5)
    logp = torch.randn(3, 5)
    mask = torch.ones(3, 5)
    loss, clip_frac, approx_kl = policy_loss(logp, logp.clone(), adv, mask, 0.2)
    assert loss.item() == pytest.approx(-adv.mean().item(), abs=1e-6)
    assert clip_frac.item() == 0 and approx_kl.item() == pytest.approx(0.0, abs=1e-7)


def test_value_loss_clipping_by_hand():
    values = torch.tensor([[0.1, 0.5, -0.5, 100.0]])
    old = torch.zeros(1, 4)
    returns = torch.ones(1, 4)
    mask = torch.tensor([[1, 1, 1, 0]])
    loss, clip_frac = value_loss(values, old, returns, mask, clip_range_value=0.2)
    # V_clip = (0.1, 0.2, −0.2); unclipped² = (0.81, 0.25, 2.25); clipped² = (0.81, 0.64, 1.44).
    # 0.5·mean(max) = 0.5·(0.81 + 0.64 + 2.25)/3; the clipped term wins only at index 1.
    assert loss.item() == pytest.approx(0.5 * 3.7 / 3)
    assert clip_frac.item() == pytest.approx(1 / 3)


# --------------------------------------------------------------------------------------------
# Whitening, masked mean, entropy
# --------------------------------------------------------------------------------------------


def test_whiten_on_masked_entries():
    gen = torch.Generator().manual_seed(0)
    x = 3 + 5 * torch.randn(4, 7, generator=gen, dtype=torch.float64)
    mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2, [1] * 2 + [0] * 5, [1] * 6 + [0]])
    x = torch.where(mask.bool(), x, torch.full_like(x, 1e6))  # padding must not count
    w = whiten(x, mask)
    real = w[mask.bool()]
    assert real.mean().item() == pytest.approx(0.0, abs=1e-9)
    assert real.std().item() == pytest.approx(1.0, abs=1e-6)
    assert (w[~mask.bool()] == 0).all()
    w_scaled = whiten(x, mask, shift_mean=False)
    assert w_scaled[mask.bool()].mean().item() == pytest.approx(x[mask.bool()].mean().item(), rel=1e-6)


def _over_two_ranks(fn, *shards):
    """fn(*shard_r, reduce=...) on two threads that act as two ranks: `reduce` sums each tensor
    over both (what distributed.sum_over_ranks does across processes). Returns both results."""
    import threading

    barrier, slots, out = threading.Barrier(2), [None, None], [None, None]

    def reduce_for(rank):
        def reduce(x):
            slots[rank] = x
            barrier.wait()
            total = slots[0] + slots[1]
            barrier.wait()  # both have read the slots before the next call overwrites them
            return total
        return reduce

    def work(rank):
        out[rank] = fn(*shards[rank], reduce=reduce_for(rank))

    threads = [threading.Thread(target=work, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_whiten_over_ranks_equals_whiten_of_all_rows():
    """The live PPO path whitens advantages over every rank's rollouts with whiten(reduce=sum_over_ranks):
    each rank's result must be its rows of whitening the concatenated batch in one process."""
    gen = torch.Generator().manual_seed(1)
    x = 2 + 3 * torch.randn(6, 5, generator=gen, dtype=torch.float64)
    mask = (torch.arange(5)[None, :] < torch.tensor([5, 3, 1, 4, 2, 5])[:, None]).long()
    whole = whiten(x, mask)
    parts = _over_two_ranks(whiten, (x[:2], mask[:2]), (x[2:], mask[2:]))  # unequal token counts
    assert torch.allclose(torch.cat(parts), whole, atol=1e-12)
    alone = whiten(x[:2], mask[:2])  # the statistic of one rank only differs: the reduce matters
    assert not torch.allclose(alone, whole[:2])
    means = _over_two_ranks(masked_mean, (x[:2], mask[:2]), (x[2:], mask[2:]))
    assert means[0].item() == pytest.approx(masked_mean(x, mask).item(), rel=1e-12) == means[1].item()


def test_whiten_scores_scales_without_moving_the_mean():
    """ppo.whiten_rewards: unit std over the batch, the batch mean kept (TRL's whiten_rewards uses
    shift_mean=False): a batch of uniformly good responses keeps positive rewards."""
    scores = torch.tensor([3.0, 4.0, 5.0, 8.0], dtype=torch.float64)
    out = whiten_scores(scores)
    assert out.mean().item() == pytest.approx(scores.mean().item(), rel=1e-12)
    assert (out - out.mean()).std().item() == pytest.approx(1.0, rel=1e-6)
    assert (out > 0).all()
    assert torch.allclose(out - out.mean(), (scores - scores.mean()) / scores.std(), atol=1e-6)
    parts = _over_two_ranks(whiten_scores, (scores[:1],), (scores[1:],))
    assert torch.allclose(torch.cat(parts), out, atol=1e-12)


def test_masked_mean():
    x = torch.tensor([[1.0, 2.0, float("nan")], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert masked_mean(x, mask).item() == pytest.approx(7 / 3)
    assert close(masked_mean(x, mask, dim=1), [1.5, 4.0])


def test_entropy_from_logits():
    V = 8
    logits = torch.zeros(1, 3, V)
    logits[0, 1] = torch.tensor([100.0] + [0.0] * (V - 1))  # nearly deterministic token
    mask = torch.tensor([[1, 1, 0]])
    # (log V + ~0) / 2; the padded third position (uniform, log V) is excluded.
    assert entropy_from_logits(logits, mask).item() == pytest.approx(math.log(V) / 2, abs=1e-6)


# --------------------------------------------------------------------------------------------
# KL controllers
# --------------------------------------------------------------------------------------------


def test_adaptive_kl_controller_moves_beta_with_bounded_steps():
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    ctl.update(current_kl=6.6, n_steps=1000)  # error 0.1 -> β·(1 + 0.1·0.1)
    assert ctl.value == pytest.approx(0.1 * 1.01)
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    ctl.update(current_kl=60.0, n_steps=1000)  # error 9 clipped to 0.2
    assert ctl.value == pytest.approx(0.1 * 1.02)
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    ctl.update(current_kl=0.0, n_steps=1000)  # error −1 clipped to −0.2
    assert ctl.value == pytest.approx(0.1 * 0.98)
    ctl.update(current_kl=6.0, n_steps=1000)  # on target: unchanged
    assert ctl.value == pytest.approx(0.1 * 0.98)


def test_kl_controllers_resume():
    ctl = AdaptiveKLController(0.05, target=4.0, horizon=100)
    for kl in (10.0, 8.0, 1.0):
        ctl.update(kl, 10)
    resumed = AdaptiveKLController(0.05, target=4.0, horizon=100)
    resumed.load_state_dict(ctl.state_dict())
    ctl.update(7.0, 10)
    resumed.update(7.0, 10)
    assert resumed.value == ctl.value
    fixed = FixedKLController(0.02)
    fixed.update(100.0, 1000)
    assert fixed.value == 0.02
    other = FixedKLController(0.5)
    other.load_state_dict(fixed.state_dict())
    assert other.value == 0.02
