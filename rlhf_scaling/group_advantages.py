"""Critic-free policy-gradient maths: group-baseline advantages (RLOO, GRPO) and GRPO's KL loss term.

Notation (as in rlhf_scaling/ppo_math.py)
--------
k        group size = ppo.samples_per_prompt, the rollouts of one prompt (k >= 2)
G        groups (prompts) in the batch; B = G·k rollouts, laid out group by group: rollouts
         g·k .. g·k + k − 1 answer prompt g (stages/ppo.py rank_prompts keeps them consecutive and
         on one rank, so no statistic here needs a cross-rank gather)
rewards  (B,) one scalar per whole rollout (the proxy score; for RLOO minus β·its sequence KL)
T        response tokens; mask (B, T) 1 on real response tokens

The advantage of a rollout is one number for all its tokens (a bandit over whole responses): there
is no critic, so no per-token value and no GAE. Every function is pure (no state, no RNG).
"""

from __future__ import annotations

import torch

from rlhf_scaling.ppo_math import kl_per_token, masked_mean

# Added to GRPO's group std so a group of equal rewards gets advantage 0, not 0/0; the value TRL
# uses (trl/trainer/grpo_trainer.py `advantages / (std_rewards + 1e-4)`), so the two agree exactly.
GRPO_STD_EPS = 1e-4


def _groups(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """(B,) -> (G, k), refusing a batch that is not whole groups."""
    if k < 2 or rewards.ndim != 1 or rewards.numel() % k:
        raise ValueError(f"need a (B,) batch of whole groups of k >= 2 rollouts, got shape {tuple(rewards.shape)}, k={k}")
    return rewards.view(-1, k)


def rloo_advantages(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """REINFORCE leave-one-out advantages (Ahmadian et al. 2024, eq. 9; Kool et al. 2019).

    rewards: (B,) = G groups of k. Returns (B,): A_i = r_i − (1/(k−1)) Σ_{j≠i} r_j, the baseline of
    each rollout being the mean of the OTHER k−1 rollouts of its prompt (so it is independent of
    r_i and the estimator stays unbiased). Equal rewards in a group give 0; the advantages of a
    group sum to 0 and equal k/(k−1) · (r_i − group mean).
    """
    g = _groups(rewards, k)
    baseline = (g.sum(dim=1, keepdim=True) - g) / (k - 1)
    return (g - baseline).reshape(-1)


def grpo_advantages(rewards: torch.Tensor, k: int, eps: float = GRPO_STD_EPS) -> torch.Tensor:
    """Group-normalised advantages (Shao et al. 2024, DeepSeekMath §4.1.2, outcome supervision).

    rewards: (B,) = G groups of k. Returns (B,): A_i = (r_i − mean_g) / (std_g + eps), with std_g
    the SAMPLE standard deviation of the group (Bessel-corrected, divisor k − 1), as TRL's
    GRPOTrainer computes it (trl/trainer/utils.py nanstd applies count/(count − 1)). A group of
    equal rewards (std 0) gets advantage exactly 0: no NaN, no inf.
    """
    g = _groups(rewards, k)
    centred = g - g.mean(dim=1, keepdim=True)
    std = g.std(dim=1, unbiased=True, keepdim=True)
    return (centred / (std + eps)).reshape(-1)


def per_token(advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) sequence advantages -> (B, T): each rollout's advantage on each of its real tokens, 0 on padding."""
    return torch.where(mask.bool(), advantages[:, None].to(torch.float32).expand(mask.shape),
                       torch.zeros((), dtype=torch.float32, device=mask.device))


def kl_loss(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GRPO's KL term, added to the loss (Shao et al. 2024, eq. 4), as a scalar to minimise.

    logprobs: (B, T) current policy (with grad); ref_logprobs: (B, T); mask: (B, T).
    The k3 estimator per token, D_t = π_ref/π − log(π_ref/π) − 1 (>= 0, unbiased for KL(π ‖ π_ref)
    on tokens sampled from π), averaged over the real tokens of the batch (the same token mean as
    the clipped policy loss). Its gradient pulls π toward π_ref; the k1 log-ratio would give a
    gradient whose expectation under π is 0, which is why GRPO uses k3 here.
    """
    return masked_mean(kl_per_token(logprobs, ref_logprobs, "k3"), mask)
