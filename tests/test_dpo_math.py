"""DPO / IPO maths (rlhf_scaling/dpo_math.py) against hand-computed values and against the formula of a
peer's implementation (TRL's DPOTrainer) on identical log-probabilities."""

import math

import pytest
import torch

from rlhf_scaling import dpo_math as D


def test_dpo_loss_hand_computed():
    # chosen: log π = −3, log π_ref = −4 -> ρ_w = 1; rejected: −6 vs −5.5 -> ρ_l = −0.5; h = 1.5
    chosen, rejected = torch.tensor([-3.0 - -4.0]), torch.tensor([-6.0 - -5.5])
    # β = 0.1: −log σ(0.15) = log(1 + e^−0.15) = 0.620957...; β = 0.5: log(1 + e^−0.75) = 0.386871...
    assert D.preference_loss(chosen, rejected, 0.1, "dpo").item() == pytest.approx(0.6209570478, abs=1e-7)
    assert D.preference_loss(chosen, rejected, 0.5, "dpo").item() == pytest.approx(0.3868710061, abs=1e-7)
    # the pair the other way round: −log σ(−0.15) = log(1 + e^0.15) = 0.770957...
    assert D.preference_loss(rejected, chosen, 0.1, "dpo").item() == pytest.approx(0.7709570478, abs=1e-7)
    # equal log-ratios (the policy is the reference): log 2 whatever β
    zero = torch.zeros(3)
    assert D.preference_loss(zero, zero, 0.3, "dpo").tolist() == pytest.approx([math.log(2)] * 3)


def test_ipo_loss_hand_computed_with_per_token_mean_log_ratios():
    # ρ_w = 1 over 2 tokens -> 0.5 per token; ρ_l = −0.5 over 4 tokens -> −0.125; h̄ = 0.625
    chosen, rejected = torch.tensor([1.0]), torch.tensor([-0.5])
    n_w, n_l = torch.tensor([2.0]), torch.tensor([4.0])
    # β = 0.1: (0.625 − 1/0.2)² = (0.625 − 5)² = 19.140625; β = 1: (0.625 − 0.5)² = 0.015625
    assert D.preference_loss(chosen, rejected, 0.1, "ipo", n_w, n_l).item() == pytest.approx(19.140625)
    assert D.preference_loss(chosen, rejected, 1.0, "ipo", n_w, n_l).item() == pytest.approx(0.015625)
    # at the reference (h̄ = 0) the loss is 1/(4β²), whatever the lengths
    assert D.preference_loss(torch.zeros(1), torch.zeros(1), 0.1, "ipo", n_w, n_l).item() == pytest.approx(25.0)
    with pytest.raises(ValueError, match="lengths"):
        D.preference_loss(chosen, rejected, 0.1, "ipo")
    with pytest.raises(ValueError, match="unknown loss"):
        D.preference_loss(chosen, rejected, 0.1, "kto")


def test_implicit_reward_sums_response_tokens_only():
    """β·Σ_t (log π − log π_ref) over the mask; whatever sits on padding (huge values, nan) is ignored."""
    logprobs = torch.tensor([[-1.0, -2.0, -0.5, 1e9], [-0.25, float("nan"), 7e8, -3e9]])
    ref = torch.tensor([[-1.5, -1.0, -0.5, -1e9], [-0.75, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    # row 0: (0.5 − 1 + 0) = −0.5; row 1: 0.5; × β = 0.2
    assert D.implicit_reward(logprobs, ref, mask, 0.2).tolist() == pytest.approx([-0.1, 0.1])
    assert D.sequence_logprobs(logprobs, mask).tolist() == pytest.approx([-3.5, -0.25])


def test_kwise_pairs_read_each_response_once_and_average_over_pairs():
    """K = 3 responses with ranking 0 > 1 > 2: the three pairs' losses from one value per response."""
    rho = torch.tensor([2.0, 0.0, -1.0], requires_grad=True)
    pairs = torch.tensor([[0, 1], [0, 2], [1, 2]])
    chosen, rejected = D.pair_logratios(rho, pairs)
    loss = D.preference_loss(chosen, rejected, 0.5, "dpo").mean()
    expected = sum(math.log1p(math.exp(-0.5 * h)) for h in (2.0, 3.0, 1.0)) / 3
    assert loss.item() == pytest.approx(expected)
    loss.backward()  # response 0 is chosen twice: its gradient is the sum of both pairs' terms
    s = lambda h: 1 / (1 + math.exp(0.5 * h))  # noqa: E731  −d/dh of log(1 + e^{−βh}) = β σ(−βh)
    assert rho.grad.tolist() == pytest.approx([-0.5 * (s(2) + s(3)) / 3, 0.5 * (s(2) - s(1)) / 3,
                                               0.5 * (s(3) + s(1)) / 3])


# ----------------------------------------------------------------------------- the peer's formula

def trl_style_losses(per_token_logps, ref_per_token_logps, completion_mask, beta, loss_type):
    """TRL's DPOTrainer._compute_loss (huggingface/trl trl/trainer/dpo_trainer.py at f2cd577,
    restated here, not imported: TRL is not a dependency): the batch is [chosen rows; rejected rows]
    over whole [prompt | completion | padding] sequences; log-probs off the completion are zeroed,
    then summed per row; IPO divides each row's log-ratio by its completion length before the
    squared loss (sigmoid: −log σ(β Δ); ipo: (Δ̄ − 1/(2β))²)."""
    logps = per_token_logps.masked_fill(completion_mask == 0, 0.0).sum(1)
    ref_logps = ref_per_token_logps.masked_fill(completion_mask == 0, 0.0).sum(1)
    chosen_ratio, rejected_ratio = (logps - ref_logps).chunk(2)
    if loss_type == "sigmoid":
        return -torch.nn.functional.logsigmoid(beta * (chosen_ratio - rejected_ratio))
    chosen_mask, rejected_mask = completion_mask.chunk(2)
    delta = chosen_ratio / chosen_mask.sum(1).clamp(min=1) - rejected_ratio / rejected_mask.sum(1).clamp(min=1)
    return (delta - 1 / (2 * beta)) ** 2


@pytest.mark.parametrize("ours, theirs", [("dpo", "sigmoid"), ("ipo", "ipo")])
@pytest.mark.parametrize("beta", [0.05, 0.3])
def test_losses_equal_trls_formula_on_the_same_log_probs(ours, theirs, beta):
    """Random per-token log-probs over whole sequences of different prompt and completion lengths:
    TRL's layout (completion mask over the full sequence) and ours (response tokens only) agree."""
    gen = torch.Generator().manual_seed(0)
    n_pairs, width = 5, 12
    prompt_len = torch.randint(1, 4, (2 * n_pairs,), generator=gen)
    completion_len = torch.randint(1, 8, (2 * n_pairs,), generator=gen)
    logps = -torch.rand(2 * n_pairs, width, generator=gen) * 3
    ref_logps = -torch.rand(2 * n_pairs, width, generator=gen) * 3
    pos = torch.arange(width)
    completion = ((pos >= prompt_len[:, None]) & (pos < (prompt_len + completion_len)[:, None])).long()
    expected = trl_style_losses(logps, ref_logps, completion, beta, theirs)

    # ours: each row's response tokens moved to the front of a (2P, T) response tensor, padding after
    t = int(completion_len.max())
    resp, ref_resp, mask = (torch.full((2 * n_pairs, t), 123.0), torch.full((2 * n_pairs, t), -77.0),
                            torch.zeros(2 * n_pairs, t, dtype=torch.long))
    for i in range(2 * n_pairs):
        n, p = int(completion_len[i]), int(prompt_len[i])
        resp[i, :n], ref_resp[i, :n], mask[i, :n] = logps[i, p:p + n], ref_logps[i, p:p + n], 1
    rho = D.sequence_logprobs(resp - ref_resp, mask)
    pairs = torch.stack([torch.arange(n_pairs), torch.arange(n_pairs) + n_pairs], dim=1)
    chosen, rejected = D.pair_logratios(rho, pairs)
    lengths = mask.sum(1)
    got = D.preference_loss(chosen, rejected, beta, ours, lengths[pairs[:, 0]], lengths[pairs[:, 1]])
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
