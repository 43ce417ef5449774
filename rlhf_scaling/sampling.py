"""Sampling responses from a policy: left-padded prompts, HF generate, responses cut at EOS."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import torch

from rlhf_scaling.data.encode import encode_texts, pad_batch


@dataclass
class Rollouts:
    """B sampled responses with the token tensors PPO needs.

    prompt_ids, prompt_mask:     (B, Lq) left-padded prompt tokens and 0/1 mask.
    response_ids, response_mask: (B, T) right-padded response tokens; the mask covers the tokens
                                 up to and including the first EOS (or all max_new_tokens if none
                                 was sampled); T = the longest response in the batch.
    texts:  B decoded responses without EOS.   ended: (B,) bool, True where an EOS was sampled.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    texts: List[str]
    ended: torch.Tensor

    @property
    def lengths(self) -> torch.Tensor:
        """(B,) response length in tokens (EOS included)."""
        return self.response_mask.sum(dim=1)


def response_mask_from_ids(response_ids: torch.Tensor, eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) sampled ids -> (B, T) mask through the first EOS, and (B,) whether an EOS occurred."""
    is_eos = response_ids == eos_id
    ended = is_eos.any(dim=1)
    # Tokens strictly after the first EOS are cut: cumulative EOS count before position t must be 0.
    before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()
    return (before == 0).long(), ended


@torch.no_grad()
def sample(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int, temperature: float = 1.0,
           batch_size: int = 256) -> Rollouts:
    """One response per prompt (repeat prompts for several), sampled with pure temperature sampling.

    Uses the global torch RNG, seeded once at the entry point; same seed -> same samples.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    prompt_seqs = encode_texts(tokenizer, prompts)
    chunks = []
    for start in range(0, len(prompts), batch_size):
        p_ids, p_mask = pad_batch(prompt_seqs[start:start + batch_size], tokenizer.pad_token_id, side="left")
        out = model.generate(
            input_ids=p_ids.to(device), attention_mask=p_mask.to(device), do_sample=True,
            temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        )
        r_ids = out[:, p_ids.shape[1]:].cpu()
        if r_ids.shape[1] < max_new_tokens:  # generation stopped early for the whole batch
            pad = torch.full((r_ids.shape[0], max_new_tokens - r_ids.shape[1]), tokenizer.pad_token_id)
            r_ids = torch.cat([r_ids, pad], dim=1)
        chunks.append((p_ids, p_mask, r_ids))
    model.train(was_training)
    width = max(c[0].shape[1] for c in chunks)
    p_ids = torch.cat([torch.nn.functional.pad(c[0], (width - c[0].shape[1], 0), value=tokenizer.pad_token_id) for c in chunks])
    p_mask = torch.cat([torch.nn.functional.pad(c[1], (width - c[1].shape[1], 0), value=0) for c in chunks])
    r_ids = torch.cat([c[2] for c in chunks])
    r_mask, ended = response_mask_from_ids(r_ids, tokenizer.eos_token_id)
    r_ids = r_ids.masked_fill(r_mask == 0, tokenizer.pad_token_id)
    # Columns past the longest response are padding in every row: dropping them leaves every real
    # token's logits unchanged (causal attention) and saves PPO's forwards and backwards that width.
    width = max(int(r_mask.sum(dim=1).max()), 1)
    r_ids, r_mask = r_ids[:, :width], r_mask[:, :width]
    texts = decode_responses(tokenizer, r_ids, r_mask)
    return Rollouts(p_ids, p_mask, r_ids, r_mask, texts, ended)


def decode_responses(tokenizer, response_ids: torch.Tensor, response_mask: torch.Tensor) -> List[str]:
    """Text of each response, EOS and padding removed."""
    texts = []
    for ids, mask in zip(response_ids.tolist(), response_mask.tolist()):
        kept = [t for t, m in zip(ids, mask) if m and t != tokenizer.eos_token_id]
        texts.append(tokenizer.decode(kept, skip_special_tokens=True).strip())
    return texts
