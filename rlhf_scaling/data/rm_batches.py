"""Batches for reward-model training: every response of a batch in ONE flat forward, pairs as indices.

A batch of B groups with K_b responses each becomes one (N, L) token tensor, N = sum_b K_b, so
each response is forwarded exactly once however many comparisons it is in (InstructGPT's K-wise
trick: K forwards per prompt instead of K(K-1) for expanded pairs). Rewards (N,) are then
scattered into a (B, K_max) grid and the loss gathers (winner, loser) pairs from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch

from rlhf_scaling.data.encode import encode_prompt_response, pad_batch
from rlhf_scaling.data.records import PreferenceGroup


@dataclass
class EncodedGroup:
    """A group's token sequences (prompt + response + EOS per response) and its labels."""

    seqs: List[List[int]]
    pairs: List[tuple]
    margins: Optional[List[float]]
    gold: Optional[List[float]]


@dataclass
class RMBatch:
    """input_ids, attention_mask: (N, L) right-padded, N = total responses in the batch.
    group_index, slot: (N,) which group and which position within it each response is.
    pairs: (B, P, 2) (winner, loser) slots; pair_mask: (B, P); margins: (B, P) (0 where unknown)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    group_index: torch.Tensor
    slot: torch.Tensor
    pairs: torch.Tensor
    pair_mask: torch.Tensor
    margins: torch.Tensor
    n_groups: int
    k_max: int

    def to(self, device) -> "RMBatch":
        for name in ("input_ids", "attention_mask", "group_index", "slot", "pairs", "pair_mask", "margins"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def reward_grid(self, rewards: torch.Tensor) -> torch.Tensor:
        """(N,) rewards -> (B, K_max) grid (0 in empty slots, never gathered by a real pair)."""
        grid = rewards.new_zeros(self.n_groups, self.k_max)
        return grid.index_put((self.group_index, self.slot), rewards)


def encode_groups(groups: Sequence[PreferenceGroup], tokenizer, max_response_tokens: int):
    """Tokenise every response once. Returns (encoded groups, number of truncated responses)."""
    encoded, truncated = [], 0
    for g in groups:
        seqs, cut = encode_prompt_response(tokenizer, [g.prompt] * g.k, list(g.responses), max_response_tokens)
        truncated += cut
        encoded.append(EncodedGroup(seqs, list(g.pairs), list(g.margins) if g.margins else None,
                                    list(g.gold) if g.gold else None))
    return encoded, truncated


def expand_pairs(groups: Sequence[PreferenceGroup]) -> List[PreferenceGroup]:
    """Every labelled pair as its own K=2 group (chosen, rejected): the pairwise (BT) data layout."""
    out = []
    for g in groups:
        for n, (w, l) in enumerate(g.pairs):
            margins = (g.margins[n],) if g.margins else None
            gold = (g.gold[w], g.gold[l]) if g.gold else None
            out.append(PreferenceGroup(g.prompt, (g.responses[w], g.responses[l]), ((0, 1),), margins, gold))
    return out


def collate(groups: Sequence[EncodedGroup], pad_id: int) -> RMBatch:
    """Flatten the groups' responses into one padded batch and index their pairs."""
    seqs, group_index, slot = [], [], []
    for b, g in enumerate(groups):
        for k, s in enumerate(g.seqs):
            seqs.append(s)
            group_index.append(b)
            slot.append(k)
    ids, mask = pad_batch(seqs, pad_id, side="right")
    n_pairs = max(len(g.pairs) for g in groups)
    pairs = torch.zeros(len(groups), n_pairs, 2, dtype=torch.long)
    pair_mask = torch.zeros(len(groups), n_pairs, dtype=torch.bool)
    margins = torch.zeros(len(groups), n_pairs)
    for b, g in enumerate(groups):
        pairs[b, : len(g.pairs)] = torch.tensor(g.pairs, dtype=torch.long)
        pair_mask[b, : len(g.pairs)] = True
        if g.margins:
            margins[b, : len(g.margins)] = torch.tensor(g.margins)
    return RMBatch(ids, mask, torch.tensor(group_index), torch.tensor(slot), pairs, pair_mask, margins,
                   len(groups), max(len(g.seqs) for g in groups))
