"""Direct-alignment maths: DPO and IPO losses, the implicit reward (pure torch functions).

Notation
--------
B         responses in a batch (every response of every prompt, one forward each)
T         response tokens (padded length); the prompt is not part of these tensors
P         labelled pairs (chosen, rejected) over those responses
logprobs  (B, T) log π(y_t | x, y_<t) of the trained policy at the response tokens, in nats
ref_logprobs (B, T) the same under the frozen reference π_ref (the SFT policy)
mask      (B, T) 1 on real response tokens (EOS included), 0 on padding; prompt tokens are never in it
β         dpo.beta, the KL strength

Equations
---------
Sequence log-ratio of a response y to prompt x (nats):  ρ(x, y) = Σ_t mask_t (log π − log π_ref)_t.
Implicit reward (Rafailov et al. 2023, eq. 5; the log Z(x) term is the same for every response of a
prompt and cancels in every comparison):  r(x, y) = β · ρ(x, y).
h = ρ(x, y_w) − ρ(x, y_l): how much more the policy than the reference prefers the chosen response.
DPO (Rafailov et al. 2023, eq. 7):  L = −log σ(β h).
IPO (Azar et al. 2023, eq. 17, τ = β):  L = (h̄ − 1/(2β))², with h̄ built from the PER-TOKEN MEAN
log-ratios ρ(x, y)/|y|. The paper writes h with sequence log-likelihoods; TRL's DPOTrainer
(trl/trainer/dpo_trainer.py, loss_type="ipo") divides each response's log-ratio by its completion
length, and states that the IPO authors confirmed their reported results use this normalised form.
We follow it: summed log-ratios would make the squared loss's target 1/(2β) a per-sequence margin
that long and short responses reach very differently.
Both losses are averaged over the batch's pairs (every pair weighs the same, as in the K-wise RM loss).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

LOSSES = ("dpo", "ipo")


def sequence_logprobs(logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T) per-token log-probs, (B, T) response mask -> (B,) their sum over the real response
    tokens, nats. Padding is excluded with torch.where, so any value there (even nan) is ignored."""
    return torch.where(mask.bool(), logprobs, torch.zeros_like(logprobs)).sum(dim=-1)


def implicit_reward(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor,
                    beta: float) -> torch.Tensor:
    """(B,) DPO's implicit reward β · Σ_t (log π − log π_ref) over each response's real tokens
    (Rafailov et al. 2023, eq. 5, without the prompt-only log Z(x)); reward units = β · nats."""
    return beta * sequence_logprobs(logprobs - ref_logprobs, mask)


def preference_loss(chosen_logratio: torch.Tensor, rejected_logratio: torch.Tensor, beta: float, loss: str = "dpo",
                    chosen_len: Optional[torch.Tensor] = None, rejected_len: Optional[torch.Tensor] = None
                    ) -> torch.Tensor:
    """(P,) loss per pair, from the (P,) summed log-ratios ρ = Σ_t (log π − log π_ref) of the chosen
    and rejected responses.

    loss="dpo": −log σ(β (ρ_w − ρ_l)).  loss="ipo": ((ρ_w/n_w − ρ_l/n_l) − 1/(2β))², with n_w, n_l
    = chosen_len, rejected_len, the (P,) real response tokens of each (required for IPO).
    """
    if loss == "dpo":
        return -F.logsigmoid(beta * (chosen_logratio - rejected_logratio))
    if loss == "ipo":
        if chosen_len is None or rejected_len is None:
            raise ValueError("the IPO loss needs the response lengths (per-token mean log-ratios)")
        h = chosen_logratio / chosen_len.clamp_min(1) - rejected_logratio / rejected_len.clamp_min(1)
        return (h - 1.0 / (2.0 * beta)) ** 2
    raise ValueError(f"unknown loss {loss!r}; choose one of {LOSSES}")


def pair_logratios(logratio: torch.Tensor, pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) one value per response, (P, 2) long (chosen index, rejected index) into B -> (P,) chosen,
    (P,) rejected values. A response in several pairs is read by each (its gradients add up): one
    forward per response however many comparisons it is in (the K-wise RM trick)."""
    return logratio[pairs[:, 0]], logratio[pairs[:, 1]]
