"""PPO maths for RLHF: KL-penalised rewards, GAE, clipped losses, KL controllers (pure functions).

Notation
--------
B        rollouts in the batch (prompts_per_step × samples_per_prompt)
T        response tokens (padded length); the prompt is not part of these tensors
V        vocabulary size
mask     (B, T), 1 on real response tokens (EOS included), 0 on padding; RIGHT-padded, so row b
         has its real tokens at positions 0 .. len_b − 1 and rows have different lengths
logprobs (B, T) log π(a_t | s_t) of the current policy at the sampled tokens, in nats
ref_logprobs (B, T) the same under the frozen reference (init / SFT) policy π_ref
scores   (B,) reward-model score of each whole response (one per rollout)
values   (B, T) critic estimates V(s_t)
β        kl_coef, the per-token KL penalty coefficient (Ziegler et al. 2019; Stiennon et al. 2020)

Reward per token (Ziegler et al. 2019 eq. 2; Ouyang et al. 2022 eq. 2):
    r_t = −β · kl_t                      on every real response token
    r_T += score                         on the LAST real token of the row only
where kl_t is a per-token estimate of KL(π ‖ π_ref). Summed over a sequence, kl_t estimates the
sequence KL in nats, which is what the overoptimization curves use (d = sqrt(KL)).

Mechanical code (masking, gathering) is kept apart from the equations and commented as such.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple, Union

import torch
import torch.nn.functional as F

KL_ESTIMATORS = ("k1", "k3")


# --------------------------------------------------------------------------------------------
# Masked reductions (boilerplate)
# --------------------------------------------------------------------------------------------


def no_reduce(x: torch.Tensor) -> torch.Tensor:
    """The identity: statistics over this process's entries only (the default `reduce`)."""
    return x


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: Optional[int] = None,
                reduce: Callable[[torch.Tensor], torch.Tensor] = no_reduce) -> torch.Tensor:
    """Mean of `x` over positions where `mask` is 1.

    x, mask: same shape (e.g. (B, T)). dim: None = over everything (scalar), or one dim.
    reduce (dim=None only): sums a tensor over the data-parallel ranks (e.g.
    distributed.sum_over_ranks), so the mean is over every rank's masked entries, as one process
    holding all of them would compute it; the identity in one process.
    Empty masks give 0 (the numerator is 0 and the count is clamped to 1), never nan.
    Padding entries are excluded with torch.where, so nan/inf on padding cannot leak in.
    """
    maskf = mask.to(x.dtype)
    x = torch.where(mask.bool(), x, torch.zeros_like(x))
    if dim is None:
        total = reduce(torch.stack([x.sum(), maskf.sum()]))  # (sum, count)
        return total[0] / total[1].clamp_min(1)
    return x.sum(dim) / maskf.sum(dim).clamp_min(1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True,
               reduce: Callable[[torch.Tensor], torch.Tensor] = no_reduce) -> torch.Tensor:
    """Variance of `x` over the masked entries (scalar); Bessel-corrected when `unbiased`.

    Two passes (the mean, then squared deviations from it), each summed with `reduce` over the
    ranks as in masked_mean. For n <= 1 entries the variance is 0 (the denominator is clamped to
    1, and the deviation sum is 0 then); no host sync.
    """
    mean = masked_mean(x, mask, reduce=reduce)
    dev = torch.where(mask.bool(), (x - mean) ** 2, torch.zeros_like(x))
    total = reduce(torch.stack([dev.sum(), mask.sum().to(x.dtype)]))  # (sum of squared deviations, n)
    return total[0] / ((total[1] - 1) if unbiased else total[1]).clamp_min(1)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8,
           reduce: Callable[[torch.Tensor], torch.Tensor] = no_reduce) -> torch.Tensor:
    """Normalise `x` to mean 0 / (unbiased) std 1 over the masked entries.

    x, mask: (B, T) (or (B,)). shift_mean=False rescales only, keeping the original mean (used for
    rewards, whose sign carries meaning). reduce: statistics over every rank's entries (masked_mean).
    Padding positions are returned as 0.
    Why: advantage whitening per batch stabilises the policy-gradient scale across steps.
    """
    mean = masked_mean(x, mask, reduce=reduce)
    var = masked_var(x, mask, reduce=reduce)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return torch.where(mask.bool(), out, torch.zeros_like(out))


def whiten_scores(scores: torch.Tensor, eps: float = 1e-8,
                  reduce: Callable[[torch.Tensor], torch.Tensor] = no_reduce) -> torch.Tensor:
    """ppo.whiten_rewards: (B,) RM scores scaled to unit (unbiased) std over the batch, their
    mean KEPT (whiten with shift_mean=False, as TRL's whiten_rewards does): subtracting the batch
    mean would turn a batch of uniformly good (or bad) responses into one with zero mean reward,
    hiding the RM's sign from the policy. reduce: the batch is every rank's rollouts (masked_mean)."""
    return whiten(scores, torch.ones_like(scores), shift_mean=False, eps=eps, reduce=reduce)


# --------------------------------------------------------------------------------------------
# Log-probabilities, KL and rewards
# --------------------------------------------------------------------------------------------


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log π(tokens) from logits.

    logits: (B, T, V) already aligned with `tokens` (logits[:, t] predicts tokens[:, t]);
    tokens: (B, T) long. Returns (B, T) log-probabilities in nats.
    """
    logp = F.log_softmax(logits.float(), dim=-1)
    return torch.gather(logp, -1, tokens.unsqueeze(-1)).squeeze(-1)


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token single-sample estimate of KL(π ‖ π_ref) at the sampled tokens, in nats.

    logprobs, ref_logprobs: (B, T). Returns (B, T), not masked.
    - "k1": log π − log π_ref. Unbiased, but individual tokens (and whole sequences) can be
      negative; this is the penalty of Ziegler et al. 2019 / Stiennon et al. 2020.
    - "k3": exp(log π_ref − log π) − 1 − (log π_ref − log π). Unbiased for KL too (E_π[π_ref/π] = 1)
      and never negative, since e^u − 1 − u ≥ 0 (Schulman 2020, "Approximating KL divergence").
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        u = -log_ratio  # log(π_ref/π)
        return torch.expm1(u) - u  # expm1 keeps precision when π ≈ π_ref
    raise ValueError(f"unknown KL estimator {estimator!r}; expected one of {KL_ESTIMATORS}")


def last_response_token(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) mask -> (B,) long index of each row's last real token.

    Taken from the mask, not the last column: rows have different lengths. Raises on empty rows,
    which would otherwise silently drop that rollout's score.
    """
    mask = mask.bool()
    if not bool(mask.any(dim=1).all()):
        raise ValueError("every rollout needs at least one real response token (a row of mask is all 0)")
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask, positions, torch.full_like(positions, -1)).max(dim=1).values


def kl_penalised_rewards(scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor,
                         mask: torch.Tensor, kl_coef: Union[float, torch.Tensor],
                         estimator: str = "k1") -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-token RLHF rewards: −β·kl_t on every real token, plus the RM score on the last one.

    scores: (B,) RM scores; logprobs, ref_logprobs, mask: (B, T); kl_coef: β (float or 0-d tensor).
    Returns (rewards (B, T), kl (B, T)); both are 0 on padding.

    The returned `kl` is exactly the tensor inside the penalty: log `sequence_kl(kl, mask)` from it
    so the logged KL is the trained KL (the peers logged a different estimator than they
    penalised: TRL #1161, #925). Name the estimator in the metric (e.g. ppo/kl_k1).
    """
    # torch.where, not `* mask`: padding log-probs may be −inf/nan, and nan · 0 = nan.
    kl = kl_per_token(logprobs, ref_logprobs, estimator)
    kl = torch.where(mask.bool(), kl, torch.zeros_like(kl))
    rewards = -kl_coef * kl
    # The score lands on the last REAL token of each row (a PAD after EOS is the TRL #3750 bug).
    last = last_response_token(mask)
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards = rewards.index_put((rows, last), scores.to(rewards.dtype), accumulate=True)
    return rewards, kl


def sequence_kl(kl: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T) per-token KL -> (B,) KL of each sequence in nats (sum over its real tokens)."""
    return torch.where(mask.bool(), kl, torch.zeros_like(kl)).sum(dim=1)


# --------------------------------------------------------------------------------------------
# Advantages
# --------------------------------------------------------------------------------------------


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
        gamma: float, lam: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, eqs. 11–16).

    rewards, values, mask: (B, T), right-padded. Returns (advantages, returns), both (B, T).
        δ_t = r_t + γ V(s_{t+1}) − V(s_t),   A_t = δ_t + γλ A_{t+1}
    over each row's real tokens. The episode ends after the last real token, so the value (and
    the advantage) beyond it is 0: no bootstrapping from padding. Padding positions get 0
    advantage and 0 return. returns = advantages + values (the critic's target, TD(λ)).
    The loop runs over T (time), which is inherently sequential; B is vectorised.
    """
    maskf = mask.to(values.dtype)
    # torch.where, not `* mask`: nan/inf on padding must not reach the real tokens via nan · 0.
    rewards = torch.where(mask.bool(), rewards, torch.zeros_like(rewards))
    values = torch.where(mask.bool(), values, torch.zeros_like(values))
    T = rewards.shape[1]
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])
    next_adv = torch.zeros_like(values[:, 0])
    for t in reversed(range(T)):
        # mask[:, t+1] = 0 once the row has ended, which zeroes the bootstrap; right padding
        # makes "the next position is real" the same as "the episode continues".
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv_t = (delta + gamma * lam * next_adv) * maskf[:, t]
        advantages[:, t] = adv_t
        next_value, next_adv = values[:, t], adv_t
    returns = (advantages + values) * maskf
    return advantages, returns


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, clip_range: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO clipped surrogate (Schulman et al. 2017, eq. 7), as a loss to minimise.

    logprobs: (B, T) current policy (with grad); old_logprobs: (B, T) at rollout time;
    advantages: (B, T); mask: (B, T); clip_range: ε.
        ρ_t = exp(log π − log π_old),  L = −E_t[min(ρ_t A_t, clip(ρ_t, 1−ε, 1+ε) A_t)]
    Returns (loss scalar, clip_fraction scalar: share of real tokens where the clipped term was
    the active one, approx_kl scalar: k3 estimate of KL(π_old ‖ π) = E[(ρ − 1) − log ρ] in nats
    per token); the two diagnostics are detached.
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((clipped > unclipped).to(logprobs.dtype), mask)
        approx_kl = masked_mean(ratio - 1.0 - log_ratio, mask)
    return loss, clip_fraction, approx_kl


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip_range_value: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss: 0.5 · E_t[max((V − R)², (V_clip − R)²)], V_clip = V_old + clip(V − V_old, ±ε_v).

    values: (B, T) current critic (with grad); old_values: (B, T) at rollout time; returns: (B, T)
    GAE targets; mask: (B, T). The pessimistic max keeps the critic from moving far from its
    rollout-time estimate in one update (the PPO2 baselines convention, as in Ziegler et al. 2019).
    Returns (loss scalar, clip_fraction scalar detached: share of real tokens where the clipped
    term was larger).
    """
    values_clipped = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    err_unclipped = (values - returns) ** 2
    err_clipped = (values_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(err_unclipped, err_clipped), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((err_clipped > err_unclipped).to(values.dtype), mask)
    return loss, clip_fraction


def entropy_per_token(logits: torch.Tensor) -> torch.Tensor:
    """(B, T, V) logits -> (B, T) entropy of the policy at each position, in nats, not masked.

    H = logsumexp(z) − Σ_v softmax(z)_v z_v (computed in fp32).
    """
    logits = logits.float()
    p = F.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (p * logits).sum(dim=-1)


def entropy_from_logits(logits: torch.Tensor, mask: torch.Tensor,
                        reduce: Callable[[torch.Tensor], torch.Tensor] = no_reduce) -> torch.Tensor:
    """Mean per-token entropy of the policy over real tokens, in nats (scalar). logits: (B, T, V); mask: (B, T);
    reduce: over every rank's tokens (masked_mean)."""
    return masked_mean(entropy_per_token(logits), mask, reduce=reduce)


# --------------------------------------------------------------------------------------------
# KL coefficient controllers
# --------------------------------------------------------------------------------------------


class AdaptiveKLController:
    """Proportional controller on β (Ziegler et al. 2019, §2.2).

    e_t = clip(KL_t / KL_target − 1, −0.2, 0.2);   β_{t+1} = β_t (1 + K_β e_t),  K_β = n_steps / horizon.
    current_kl and target are in nats per sequence; horizon and n_steps in rollouts (so one update
    moves β by at most ±20% × n_steps/horizon).
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        if target <= 0 or horizon <= 0:
            raise ValueError(f"target ({target}) and horizon ({horizon}) must be positive")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


class FixedKLController:
    """Constant β, with the same interface as AdaptiveKLController (update is a no-op)."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])
