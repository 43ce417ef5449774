"""The PPO actor-critic: the rollouts laid out for every forward over them, the critic
(ppo.critic=separate: its own transformer + value head; shared: a value head on the policy's trunk)
and the forwards that give policy logits and values over the response tokens.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from rlhf_scaling.config import ConfigError
from rlhf_scaling.packing import PackPlan, packed_hidden_states, plan_packing, position_ids_from_mask


def value_head(hidden_size: int) -> nn.Linear:
    """A zero-initialised scalar head (H -> 1): every value estimate starts at 0."""
    head = nn.Linear(hidden_size, 1)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head


@dataclass
class ResponseBatch:
    """Rollouts [prompt (n_prompt) | response (T)] laid out once for every PPO forward over them.

    ids, mask: (B, L = n_prompt + T), the prompt left-padded and the response right-padded.
    Padding-free (`plan` set): the real tokens are packed end to end (rlhf_scaling/packing.py) and
    (b, t), each (M,), are the rollout and response position of the M real response tokens. One
    plan serves the policy, reference and critic forwards of the same rollouts.
    """

    ids: torch.Tensor
    mask: torch.Tensor
    n_prompt: int
    plan: Optional[PackPlan] = None
    b: Optional[torch.Tensor] = None
    t: Optional[torch.Tensor] = None

    @classmethod
    def of(cls, ids: torch.Tensor, mask: torch.Tensor, n_prompt: int, padding_free: bool) -> "ResponseBatch":
        if not padding_free:
            return cls(ids, mask, n_prompt)
        b, t = mask[:, n_prompt:].nonzero(as_tuple=True)
        return cls(ids, mask, n_prompt, plan_packing(mask), b, t)

    def rows(self, index: torch.Tensor) -> "ResponseBatch":
        """The minibatch of rollouts `index` (packed anew: its rollouts fill fewer rows)."""
        return ResponseBatch.of(self.ids[index], self.mask[index], self.n_prompt, self.plan is not None)

    def states(self, backbone) -> torch.Tensor:
        """Hidden states of `backbone` (an HF base model) at the states before each response token:
        (M, H) at the real ones when padding-free, else (B, T, H)."""
        if self.plan is not None:
            return packed_hidden_states(backbone, self.ids, self.plan, self.b, self.n_prompt - 1 + self.t)
        h = backbone(input_ids=self.ids, attention_mask=self.mask,
                     position_ids=position_ids_from_mask(self.mask)).last_hidden_state
        return h[:, self.n_prompt - 1:-1]

    def scatter(self, x: torch.Tensor) -> torch.Tensor:
        """Per-response-token outputs as (B, T, ...): padding-free (M, ...) values are placed at
        (b, t) with zeros on padding (differentiable); padded (B, T, ...) ones pass through."""
        if self.plan is None:
            return x
        B, L = self.mask.shape
        return x.new_zeros((B, L - self.n_prompt, *x.shape[1:])).index_put((self.b, self.t), x)


class Critic(nn.Module):
    """ppo.critic=separate: per-token values from a copy of the init policy's transformer + a value head."""

    def __init__(self, policy):
        super().__init__()
        self.backbone = copy.deepcopy(policy.base_model)
        self.head = value_head(policy.config.hidden_size)

    def forward(self, batch: ResponseBatch) -> torch.Tensor:
        """(B, T) fp32 values V(s_t) of the states before each response token; 0 on response
        padding when padding-free."""
        return batch.scatter(self.head(batch.states(self.backbone)).squeeze(-1).float())


def policy_forward(model, batch: ResponseBatch, temperature: float,
                   head: Optional[nn.Linear] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Logits (B, T, V) that predict the T response tokens, and with `head` (ppo.critic=shared) the
    (B, T) fp32 values from that head on the same forward's last hidden states (else None).

    Only the positions that predict response tokens go through the LM head: with a 50k vocabulary
    the head is a large share of the forward, and the prompt's logits are never used. Padding-free,
    logits and values on response padding are 0 (every consumer masks them). The padded path runs
    the model's own forward, so models that post-process their logits keep doing so.
    """
    if batch.plan is not None:
        h = batch.states(model.base_model)
        logits = batch.scatter(model.get_output_embeddings()(h) / temperature)
    else:
        n_response = batch.ids.shape[1] - batch.n_prompt
        # The LM head's input is the last T + 1 final hidden states (logits_to_keep); capturing it
        # costs nothing, where output_hidden_states would keep every layer's (B, L, H).
        head_input = []
        hook = (model.get_output_embeddings().register_forward_pre_hook(lambda _, args: head_input.append(args[0]))
                if head is not None else None)
        try:
            logits = model(input_ids=batch.ids, attention_mask=batch.mask, position_ids=position_ids_from_mask(batch.mask),
                           logits_to_keep=n_response + 1).logits[:, :-1] / temperature
        finally:
            if hook is not None:
                hook.remove()
        h = head_input[0][:, :-1] if head is not None else None
    values = batch.scatter(head(h).squeeze(-1).float()) if head is not None else None
    return logits, values


def logits_and_values(policy, critic, batch: ResponseBatch, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Policy logits (B, T, V) and values (B, T) of the rollouts: one trunk forward when `critic`
    is a bare value head on the policy (ppo.critic=shared), a second one through a Critic's own
    transformer (separate)."""
    if isinstance(critic, Critic):
        return policy_forward(policy, batch, temperature)[0], critic(batch)
    return policy_forward(policy, batch, temperature, critic)


def check_plain_lm_head(model) -> None:
    """A padding-free forward applies the output embedding to the backbone's hidden states itself,
    which is the model's own forward only where nothing rescales or caps the logits after the head."""
    post = [k for k in ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")
            if getattr(model.config, k, None) not in (None, 1, 1.0)]
    if post or model.get_output_embeddings() is None:
        raise ConfigError(f"ppo.padding_free: {type(model).__name__} post-processes its logits ({', '.join(post) or 'no output embedding'}); "
                          f"set ppo.padding_free=false")
