"""Scoring text with trained proxy RMs (one model or an ensemble of M members)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import torch

from rlhf_scaling.data.encode import encode_prompt_response, pad_batch
from rlhf_scaling.models import REWARD_MODEL_FILE, RewardModel, load_reward_model


def load_ensemble(rm_dir: Path, device) -> List[RewardModel]:
    """Every member_<m>/ of an RM artifact, in member order, in eval mode."""
    members = sorted((p for p in Path(rm_dir).glob("member_*") if (p / REWARD_MODEL_FILE).is_file()),
                     key=lambda p: int(p.name.split("_")[1]))
    if not members:
        raise FileNotFoundError(f"no member_<m>/ reward models in {rm_dir}")
    return [load_reward_model(p).to(device).eval() for p in members]


@torch.no_grad()
def score_texts(models: Sequence[RewardModel], tokenizer, prompts: Sequence[str], responses: Sequence[str], *,
                max_response_tokens: int, batch_size: int = 512, padding_free: bool = False) -> torch.Tensor:
    """(M, B) re-centred rewards of B (prompt, response) pairs under each of M models.

    padding_free: each batch is packed end to end (RewardModel.forward), same rewards up to rounding."""
    seqs, _ = encode_prompt_response(tokenizer, prompts, responses, max_response_tokens)
    device = next(models[0].parameters()).device
    out = []
    for start in range(0, len(seqs), batch_size):
        ids, mask = pad_batch(seqs[start:start + batch_size], tokenizer.pad_token_id, side="right")
        ids, mask = ids.to(device), mask.to(device)
        out.append(torch.stack([m(ids, mask, padding_free) for m in models]).cpu())
    return torch.cat(out, dim=1)
