"""Reward-model losses and metrics against hand-derived values and brute-force expansions."""

import itertools
import math

import pytest
import torch

from rlhf_scaling.losses import (
    expected_calibration_error,
    kwise_loss,
    length_correlation,
    llama2_margin,
    pair_accuracy,
)

LN3 = math.log(3.0)


def pairwise_loss(r_chosen, r_rejected, margin=None):
    """The Bradley–Terry loss of (B,) chosen/rejected rewards as the RM stage computes it for
    rm_train.loss=bt/margin: kwise_loss on B groups of K = 2 with one pair each."""
    rewards = torch.stack([r_chosen, r_rejected], dim=1)
    pairs = torch.tensor([[[0, 1]]]).expand(len(r_chosen), 1, 2)
    margins = None if margin is None else torch.as_tensor(margin, dtype=rewards.dtype).expand(len(r_chosen))[:, None]
    return kwise_loss(rewards, pairs, margins=margins)


# --------------------------------------------------------------------------------------------
# Bradley–Terry
# --------------------------------------------------------------------------------------------


def test_pairwise_worked_values():
    # −log σ(0) = log 2;  −log σ(ln 3) = −log(3/4) = ln(4/3);  −log σ(−ln 3) = −log(1/4) = ln 4.
    assert pairwise_loss(torch.tensor([0.7]), torch.tensor([0.7])).item() == pytest.approx(math.log(2))
    assert pairwise_loss(torch.tensor([LN3]), torch.tensor([0.0])).item() == pytest.approx(math.log(4 / 3))
    assert pairwise_loss(torch.tensor([0.0]), torch.tensor([LN3])).item() == pytest.approx(math.log(4))
    # Mean over the batch.
    both = pairwise_loss(torch.tensor([LN3, 0.0]), torch.tensor([0.0, 0.0])).item()
    assert both == pytest.approx((math.log(4 / 3) + math.log(2)) / 2)


def test_pairwise_is_stable_for_large_gaps():
    loss = pairwise_loss(torch.tensor([0.0]), torch.tensor([200.0]))
    assert torch.isfinite(loss) and loss.item() == pytest.approx(200.0)
    assert pairwise_loss(torch.tensor([200.0]), torch.tensor([0.0])).item() == pytest.approx(0.0, abs=1e-12)


def test_margin_shifts_the_difference():
    # r_w − r_l = ln 3 + 1 with margin 1 leaves ln 3 -> ln(4/3).
    loss = pairwise_loss(torch.tensor([LN3 + 1.0]), torch.tensor([0.0]), margin=1.0)
    assert loss.item() == pytest.approx(math.log(4 / 3))
    # A positive margin demands a larger gap, so the loss can only grow; per-pair tensor margins too.
    rw, rl = torch.randn(16), torch.randn(16)
    m = torch.rand(16)
    assert pairwise_loss(rw, rl, m) > pairwise_loss(rw, rl)
    assert pairwise_loss(rw, rl, m).item() == pytest.approx(pairwise_loss(rw - m, rl).item())


def test_llama2_margin_tables():
    assert [llama2_margin(s) for s in ("significantly_better", "better", "slightly_better", "negligibly_better")] \
        == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0])
    assert [llama2_margin(s, "large") for s in ("significantly_better", "better", "slightly_better",
                                                 "negligibly_better")] == [3.0, 2.0, 1.0, 0.0]
    with pytest.raises(ValueError):
        llama2_margin("much_better")
    with pytest.raises(ValueError):
        llama2_margin("better", table="medium")


# --------------------------------------------------------------------------------------------
# K-wise
# --------------------------------------------------------------------------------------------


def test_kwise_at_k2_equals_bradley_terry():
    rewards = torch.randn(8, 2)
    winner = torch.randint(0, 2, (8,))
    pairs = torch.stack([winner, 1 - winner], dim=-1).unsqueeze(1)  # (B, 1, 2)
    r_w = rewards[torch.arange(8), winner]
    r_l = rewards[torch.arange(8), 1 - winner]
    assert kwise_loss(rewards, pairs).item() == pytest.approx(pairwise_loss(r_w, r_l).item(), rel=1e-6)


def test_kwise_worked_value_k3():
    # Rewards (ln 3, 0, 0) ranked 0 > 1 > 2: pairs (0,1), (0,2), (1,2) with gaps ln 3, ln 3, 0.
    rewards = torch.tensor([[LN3, 0.0, 0.0]])
    pairs = torch.tensor([[[0, 1], [0, 2], [1, 2]]])
    expected = (2 * math.log(4 / 3) + math.log(2)) / 3
    assert kwise_loss(rewards, pairs).item() == pytest.approx(expected)


def _random_groups(B, K, gen):
    """Random groups with a random number of labelled pairs each, padded to P, plus margins."""
    all_pairs = [p for p in itertools.permutations(range(K), 2)]
    rewards = torch.randn(B, K, generator=gen)
    chosen = []
    for _ in range(B):
        n = int(torch.randint(1, len(all_pairs) + 1, (1,), generator=gen))
        idx = torch.randperm(len(all_pairs), generator=gen)[:n].tolist()
        chosen.append([all_pairs[i] for i in idx])
    P = max(len(c) for c in chosen)
    pairs = torch.zeros(B, P, 2, dtype=torch.long)
    mask = torch.zeros(B, P, dtype=torch.bool)
    margins = torch.zeros(B, P)
    for b, c in enumerate(chosen):
        pairs[b, :len(c)] = torch.tensor(c)
        mask[b, :len(c)] = True
        margins[b, :len(c)] = torch.rand(len(c), generator=gen)
    return rewards, pairs, mask, margins, chosen


@pytest.mark.parametrize("K", [3, 4, 8])
def test_kwise_equals_bt_over_expanded_pairs(K):
    gen = torch.Generator().manual_seed(K)
    rewards, pairs, mask, margins, chosen = _random_groups(6, K, gen)
    # Brute force: list every real pair explicitly and feed BT.
    r_w = torch.tensor([float(rewards[b, w]) for b, c in enumerate(chosen) for w, _ in c])
    r_l = torch.tensor([float(rewards[b, l]) for b, c in enumerate(chosen) for _, l in c])
    m = torch.tensor([float(margins[b, i]) for b, c in enumerate(chosen) for i in range(len(c))])
    assert kwise_loss(rewards, pairs, mask).item() == pytest.approx(pairwise_loss(r_w, r_l).item(), rel=1e-5)
    assert kwise_loss(rewards, pairs, mask, margins).item() == pytest.approx(
        pairwise_loss(r_w, r_l, m).item(), rel=1e-5)


def test_kwise_ignores_padding_even_if_non_finite():
    rewards = torch.tensor([[1.0, 0.0, float("nan")]], requires_grad=True)
    pairs = torch.tensor([[[0, 1], [2, 0]]])
    mask = torch.tensor([[True, False]])
    loss = kwise_loss(rewards, pairs, mask)
    assert loss.item() == pytest.approx(pairwise_loss(torch.tensor([1.0]), torch.tensor([0.0])).item())
    loss.backward()
    assert torch.isfinite(rewards.grad).all() and rewards.grad[0, 2] == 0


def test_kwise_accepts_any_fill_value_in_padded_pairs():
    rewards = torch.tensor([[LN3, 0.0, 0.0]])
    pairs = torch.tensor([[[0, 1], [-1, -1], [7, 9]]])  # padding filled with out-of-range indices
    mask = torch.tensor([[True, False, False]])
    assert kwise_loss(rewards, pairs, mask).item() == pytest.approx(math.log(4 / 3))


def test_kwise_gradient_by_hand_each_reward_once():
    # Rewards (ln 3, 0, 0), pairs (0,1), (0,2), (1,2), N = 3 pairs. For one pair with gap d,
    # ∂[−log σ(d)]/∂d = −(1 − σ(d)): −1/4 at d = ln 3, −1/2 at d = 0; divided by N = 3.
    #   ∂L/∂r0 = −1/12 − 1/12 = −1/6;   ∂L/∂r1 = +1/12 − 1/6 = −1/12;   ∂L/∂r2 = +1/12 + 1/6 = 1/4.
    rewards = torch.tensor([[LN3, 0.0, 0.0]], requires_grad=True)
    pairs = torch.tensor([[[0, 1], [0, 2], [1, 2]]])
    kwise_loss(rewards, pairs).backward()
    assert torch.allclose(rewards.grad, torch.tensor([[-1 / 6, -1 / 12, 1 / 4]]), atol=1e-6)


@pytest.mark.parametrize("K", [3, 4, 8])
def test_kwise_gradient_equals_brute_force_sum_over_pairs(K):
    # Each response's ONE reward receives the sum of the gradients of every pair it is in; the
    # brute force gives every pair its own copy of both rewards and sums those copies' grads back.
    gen = torch.Generator().manual_seed(100 + K)
    rewards, pairs, mask, margins, chosen = _random_groups(5, K, gen)
    rewards.requires_grad_(True)
    kwise_loss(rewards, pairs, mask, margins).backward()
    n = sum(len(c) for c in chosen)
    expected = torch.zeros_like(rewards)
    for b, c in enumerate(chosen):
        for i, (w, l) in enumerate(c):
            rw = rewards[b, w].detach().clone().requires_grad_(True)
            rl = rewards[b, l].detach().clone().requires_grad_(True)
            (-torch.nn.functional.logsigmoid(rw - rl - margins[b, i]) / n).backward()
            expected[b, w] += rw.grad
            expected[b, l] += rl.grad
    assert torch.allclose(rewards.grad, expected, atol=1e-6)
    # Slots never used by a real pair get no gradient.
    used = torch.zeros_like(rewards, dtype=torch.bool)
    for b, c in enumerate(chosen):
        for w, l in c:
            used[b, w] = used[b, l] = True
    assert (rewards.grad[~used] == 0).all()


class CountingScorer(torch.nn.Module):
    """A tiny reward model that records how many sequences (rows) it has scored."""

    def __init__(self, dim):
        super().__init__()
        self.head = torch.nn.Linear(dim, 1)
        self.rows_seen = 0

    def forward(self, x):  # (N, dim) -> (N,)
        self.rows_seen += x.shape[0]
        return self.head(x).squeeze(-1)


def test_kwise_needs_k_forwards_per_prompt_not_k_k_minus_1():
    B, K, D = 5, 4, 3
    scorer = CountingScorer(D)
    responses = torch.randn(B, K, D)
    pairs = torch.tensor(list(itertools.combinations(range(K), 2))).expand(B, -1, -1)  # all C(K,2)
    flat = scorer(responses.reshape(B * K, D))  # (B·K,) ONE forward for all responses
    backward_calls = []
    flat.register_hook(lambda g: backward_calls.append(g.shape))
    rewards = flat.view(B, K)
    loss = kwise_loss(rewards, pairs)
    loss.backward()
    assert scorer.rows_seen == B * K
    # The scorer's output receives its gradient once (accumulated over pairs), for B·K rows.
    assert backward_calls == [torch.Size([B * K])]
    assert scorer.rows_seen != B * K * (K - 1)
    assert scorer.head.weight.grad is not None and scorer.head.weight.grad.abs().sum() > 0
    # Same loss as scoring every pair separately (which would cost 2 forwards per pair).
    brute = CountingScorer(D)
    brute.load_state_dict(scorer.state_dict())
    w = responses[:, pairs[0, :, 0]].reshape(-1, D)
    l = responses[:, pairs[0, :, 1]].reshape(-1, D)
    assert loss.item() == pytest.approx(pairwise_loss(brute(w), brute(l)).item(), rel=1e-5)
    assert brute.rows_seen == B * K * (K - 1)


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def test_pair_accuracy_counts_ties_as_half():
    chosen = torch.tensor([1.0, 2.0, 3.0, 0.0])
    rejected = torch.tensor([0.0, 2.0, 4.0, 0.0])
    assert pair_accuracy(chosen, rejected) == pytest.approx((1 + 0.5 + 0 + 0.5) / 4)


def test_ece_worked_values():
    # Four comparisons, all with |r_w − r_l| = ln 3 (confidence 0.75).
    gap = torch.full((4,), LN3)
    zero = torch.zeros(4)
    # 3 of 4 favour the chosen side -> accuracy 0.75 = confidence -> ECE 0.
    sign = torch.tensor([1.0, 1.0, 1.0, -1.0])
    assert expected_calibration_error(sign * gap, zero) == pytest.approx(0.0, abs=1e-6)
    # All favour the chosen side -> accuracy 1, confidence 0.75 -> ECE 0.25.
    assert expected_calibration_error(gap, zero) == pytest.approx(0.25)


def _calibrated_set(n, gen, scale):
    """Preferences drawn from BT with true gap d; the model reports scale·d."""
    d = 4 * torch.rand(n, generator=gen, dtype=torch.float64) - 2
    higher_wins = torch.rand(n, generator=gen, dtype=torch.float64) < torch.sigmoid(d)
    # chosen = the response that won; its reward is d if it was the higher one, else 0 vs d.
    r_chosen = torch.where(higher_wins, scale * d, torch.zeros_like(d))
    r_rejected = torch.where(higher_wins, torch.zeros_like(d), scale * d)
    return r_chosen, r_rejected


def test_ece_calibrated_vs_overconfident():
    gen = torch.Generator().manual_seed(0)
    calibrated = expected_calibration_error(*_calibrated_set(200_000, gen, scale=1.0))
    gen = torch.Generator().manual_seed(0)
    overconfident = expected_calibration_error(*_calibrated_set(200_000, gen, scale=5.0))
    assert calibrated < 0.01
    assert overconfident > 0.1


def test_length_correlation():
    lengths = torch.tensor([3.0, 5.0, 8.0, 13.0])
    assert length_correlation(2 * lengths + 1, lengths) == pytest.approx(1.0)
    assert length_correlation(-lengths, lengths) == pytest.approx(-1.0)
    # Hand value: r = (1, 0, 1, 0) against L = (1, 2, 3, 4): cov ∝ −1, var ∝ 1 and 5 -> −1/√5.
    assert length_correlation(torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.tensor([1.0, 2.0, 3.0, 4.0])) \
        == pytest.approx(-1 / math.sqrt(5))
    assert math.isnan(length_correlation(torch.ones(4), lengths))
    assert math.isnan(length_correlation(lengths, torch.full((4,), 7.0)))
