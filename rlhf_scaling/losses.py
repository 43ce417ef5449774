"""Reward-model losses and evaluation metrics (pure torch functions).

Notation
--------
B       batch size: prompts (groups) or comparisons, depending on the function
K       responses per prompt (`data.responses_per_prompt`); one reward per response
P       labelled comparisons per group (padded to the batch maximum; `pair_mask` marks real ones)
r_w     reward of the preferred ("chosen", winner) response, in reward units (logits of BT)
r_l     reward of the rejected (loser) response
m       margin (Llama 2), in reward units; 0 when absent

Equations
---------
Bradley–Terry (Bradley & Terry 1952): P(y_w ≻ y_l | x) = σ(r(x, y_w) − r(x, y_l)), so the
negative log-likelihood of one comparison is  L = −log σ(r_w − r_l).

InstructGPT K-wise loss (Ouyang et al. 2022, eq. 1):
    loss(θ) = −1/C(K,2) · E_{(x, y_w, y_l)} [ log σ(r_θ(x, y_w) − r_θ(x, y_l)) ]
i.e. all comparisons of a prompt's K responses form ONE batch element and each response gets ONE
forward pass (K forwards, not K(K−1)); the loss is the mean over the labelled pairs.

Llama 2 margin loss (Touvron et al. 2023, §3.2.2, eq. 2):
    L = −log σ(r_w − r_l − m(r)),   m(r) a discrete function of the annotated preference strength.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

# Touvron et al. 2023 (§3.2.2; the two margin variants and their ablation are in Appendix A.3.3):
# the margin tables of Llama 2, keyed by the annotators' preference strength on their four-point
# scale ("negligibly better" is the paper's "negligibly better / unsure").
LLAMA2_MARGINS = {
    "small": {"significantly_better": 1.0, "better": 2.0 / 3.0, "slightly_better": 1.0 / 3.0, "negligibly_better": 0.0},
    "large": {"significantly_better": 3.0, "better": 2.0, "slightly_better": 1.0, "negligibly_better": 0.0},
}


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------


def kwise_loss(rewards: torch.Tensor, pairs: torch.Tensor, pair_mask: Optional[torch.Tensor] = None,
               margins: Optional[torch.Tensor] = None) -> torch.Tensor:
    """InstructGPT K-wise loss (Ouyang et al. 2022, eq. 1), optionally with Llama 2 margins.

    rewards:   (B, K) one reward per response; the caller computes them with ONE forward pass per
               response, which is the whole point: B·K forwards, never B·K·(K−1).
    pairs:     (B, P, 2) long, (winner index, loser index) into K for each labelled comparison.
    pair_mask: (B, P) bool, True on real pairs (groups may have fewer than P); None = all real.
    margins:   (B, P) margins m, subtracted from r_w − r_l; None = 0.
    Returns a scalar: the mean over ALL real pairs of the batch of −log σ(r_w − r_l − m), in nats.

    Averaging over pairs (not per group then over groups) makes the loss identical to
    the Bradley–Terry loss on the explicitly expanded pairs (K = 2 groups, one pair each: rm_train.loss=bt), for any K and any number of pairs per group.
    """
    if pairs.dim() != 3 or pairs.shape[-1] != 2:
        raise ValueError(f"pairs must have shape (B, P, 2), got {tuple(pairs.shape)}")
    if rewards.dim() != 2 or rewards.shape[0] != pairs.shape[0]:
        raise ValueError(f"rewards must have shape (B, K) with B = {pairs.shape[0]}, got {tuple(rewards.shape)}")
    if pair_mask is not None:
        pair_mask = pair_mask.bool()
        # Padded pairs may hold any index (e.g. −1 as a fill value); point them at slot 0 so the
        # gather below cannot go out of range. Their terms are discarded further down.
        pairs = torch.where(pair_mask.unsqueeze(-1), pairs, torch.zeros_like(pairs))
    # (B, K) gathered along K with (B, P) indices -> (B, P) rewards of winners and losers. Each
    # response's reward is read by every pair it is in, so autograd sums its pair gradients into
    # that single reward: one forward and one backward per response.
    r_w = torch.gather(rewards, 1, pairs[..., 0])
    r_l = torch.gather(rewards, 1, pairs[..., 1])
    diff = r_w - r_l
    if margins is not None:
        diff = diff - margins
    if pair_mask is None:
        return -F.logsigmoid(diff).mean()
    n_real = pair_mask.sum()
    if int(n_real) == 0:
        raise ValueError("kwise_loss: pair_mask selects no pairs")
    # Mask BEFORE the nonlinearity with torch.where (not by multiplying by the mask afterwards):
    # padded pairs may point at empty slots holding inf/nan, and nan * 0 = nan would poison the
    # loss and, through logsigmoid's backward, the gradient.
    diff = torch.where(pair_mask, diff, torch.zeros_like(diff))
    nll = torch.where(pair_mask, -F.logsigmoid(diff), torch.zeros_like(diff))  # (B, P)
    return nll.sum() / n_real


def llama2_margin(strength: str, table: str = "small") -> float:
    """Margin m for an annotated preference strength (Touvron et al. 2023 §3.2.2).

    strength: "significantly_better" | "better" | "slightly_better" | "negligibly_better".
    table: "small" -> 1, 2/3, 1/3, 0;  "large" -> 3, 2, 1, 0 (reward units).

    In the synthetic setup there are no annotated strengths: the data stage derives a numeric
    margin from the gold-score difference of the two responses instead, and passes it directly as
    `margins` to `kwise_loss`. This function is for human-labelled
    data that carries Llama-2-style strength labels.
    """
    if table not in LLAMA2_MARGINS:
        raise ValueError(f"unknown margin table {table!r}; expected one of {sorted(LLAMA2_MARGINS)}")
    margins = LLAMA2_MARGINS[table]
    if strength not in margins:
        raise ValueError(f"unknown preference strength {strength!r}; expected one of {list(margins)}")
    return margins[strength]


# --------------------------------------------------------------------------------------------
# Evaluation metrics (floats, for logging)
# --------------------------------------------------------------------------------------------


def pair_accuracy(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> float:
    """Fraction of comparisons where r_w > r_l; exact ties count 0.5 (a coin flip).

    r_chosen, r_rejected: (B,). Returns a float in [0, 1]; nan for B = 0.
    """
    r_chosen, r_rejected = r_chosen.detach().float(), r_rejected.detach().float()
    if r_chosen.numel() == 0:
        return float("nan")
    wins = (r_chosen > r_rejected).float() + 0.5 * (r_chosen == r_rejected).float()
    return float(wins.mean())


def expected_calibration_error(r_chosen: torch.Tensor, r_rejected: torch.Tensor, n_bins: int = 10) -> float:
    """Expected calibration error of the Bradley–Terry win probabilities.

    r_chosen, r_rejected: (B,). The model's probability that the chosen response wins is
    p = σ(r_w − r_l). Convention (the usual binary-classifier one, e.g. Guo et al. 2017): the
    model predicts the side it favours, with confidence c = max(p, 1 − p) ∈ [0.5, 1]; it is
    correct when it favours the chosen response (p > 0.5; p = 0.5 counts as half correct, as in
    `pair_accuracy`). Comparisons are placed in `n_bins` equal-width bins of c over [0, 1]
    (so only the upper half is populated for binary predictions) and
        ECE = Σ_b (n_b / B) · |accuracy_b − mean confidence_b|.
    Returns a float in [0, 0.5]; nan for B = 0.
    """
    r_chosen, r_rejected = r_chosen.detach().double(), r_rejected.detach().double()
    if r_chosen.numel() == 0:
        return float("nan")
    p = torch.sigmoid(r_chosen - r_rejected)
    conf = torch.maximum(p, 1 - p)
    correct = (p > 0.5).double() + 0.5 * (p == 0.5).double()
    # Bin b covers (b/n, (b+1)/n]; confidence 1.0 lands in the last bin.
    bins = torch.clamp((conf * n_bins).ceil().long() - 1, 0, n_bins - 1)
    count = torch.bincount(bins, minlength=n_bins).double()
    conf_sum = torch.bincount(bins, weights=conf, minlength=n_bins)
    acc_sum = torch.bincount(bins, weights=correct, minlength=n_bins)
    # Σ_b (n_b/B)|acc_b − conf_b| = Σ_b |acc_sum_b − conf_sum_b| / B
    return float((acc_sum - conf_sum).abs().sum() / count.sum())


def length_correlation(rewards: torch.Tensor, lengths: torch.Tensor) -> float:
    """Pearson correlation of reward with response length in tokens (a length-bias diagnostic).

    rewards, lengths: (N,) over responses. Returns a float in [−1, 1]; nan when either input is
    constant (correlation undefined) or N < 2 — logged as nan rather than a misleading 0.
    """
    x, y = rewards.detach().double().flatten(), lengths.detach().double().flatten()
    if x.numel() < 2:
        return float("nan")
    x, y = x - x.mean(), y - y.mean()
    denom = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    if denom == 0.0:
        return float("nan")
    return float((x * y).sum()) / denom
