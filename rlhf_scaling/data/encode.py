"""Token encoding shared by every stage: prompt + response + EOS, padding, truncation counts."""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch


def encode_texts(tokenizer, texts: Sequence[str]) -> List[List[int]]:
    """Token ids of each text, no special tokens added."""
    return tokenizer(list(texts), add_special_tokens=False)["input_ids"]


def encode_prompt_response(
    tokenizer, prompts: Sequence[str], responses: Sequence[str], max_response_tokens: int
) -> Tuple[List[List[int]], int]:
    """prompt ids + response ids (cut to max_response_tokens) + EOS, per pair.

    Returns the sequences and how many responses were truncated, so the caller reports it
    (peer bug: over-length pairs silently dropped or cut, TRL RewardTrainer).
    """
    p_ids = encode_texts(tokenizer, prompts)
    # A response continues its prompt after a space; byte-level BPE (Pythia) folds that space into
    # the first word's token, and a whitespace word-level tokenizer ignores it.
    r_ids = encode_texts(tokenizer, [" " + r.lstrip() for r in responses])
    seqs, truncated = [], 0
    for p, r in zip(p_ids, r_ids):
        if len(r) > max_response_tokens:
            r, truncated = r[:max_response_tokens], truncated + 1
        seqs.append(list(p) + list(r) + [tokenizer.eos_token_id])
    return seqs, truncated


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, side: str = "right") -> Tuple[torch.Tensor, torch.Tensor]:
    """List of id lists -> (B, L) ids and (B, L) 0/1 attention mask, padded on `side`."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if side == "right":
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        else:
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
    return ids, mask
