"""Turning K gold-scored responses per prompt into labelled comparisons (with label noise), and
the prompt-vs-response diversity split at a fixed comparison budget.

Budget formula: a prompt with K responses yields C(K,2) = K(K-1)/2 comparisons, so at a fixed
budget B of comparisons,  n_prompts = B / C(K,2).  E.g. B = 3072: K=2 -> 3072 prompts,
K=4 -> 512, K=8 -> 109.7 (not divisible: rejected by config validation), K=16 -> 25.6.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import combinations
from typing import List, Sequence

from rlhf_scaling.data.records import PreferenceGroup


@dataclass
class LabelStats:
    """Counts for the data record: how many pairs were ties (coin-flipped) and noise-flipped."""

    pairs: int = 0
    ties: int = 0
    flipped: int = 0


def label_group(prompt: str, responses: Sequence[str], gold: Sequence[float], *, label_noise: float,
                rng: random.Random, stats: LabelStats) -> PreferenceGroup:
    """All C(K,2) comparisons of one prompt, labelled by gold.

    A tie in gold is a forced choice: a fair coin picks the winner (counted in stats.ties).
    With probability `label_noise` a label is flipped (annotator noise; counted in stats.flipped).
    Margins are the gold differences |g_w - g_l| (before any flip, so a flipped pair keeps its strength).
    """
    pairs, margins = [], []
    for i, j in combinations(range(len(responses)), 2):
        if gold[i] == gold[j]:
            stats.ties += 1
            win, lose = (i, j) if rng.random() < 0.5 else (j, i)
        else:
            win, lose = (i, j) if gold[i] > gold[j] else (j, i)
        if rng.random() < label_noise:
            win, lose = lose, win
            stats.flipped += 1
        pairs.append((win, lose))
        margins.append(abs(gold[i] - gold[j]))
        stats.pairs += 1
    return PreferenceGroup(prompt, tuple(responses), tuple(pairs), tuple(margins), tuple(float(g) for g in gold))


def split_eval(groups: List[PreferenceGroup], n_eval: int, seed: int, key=None):
    """Shuffle (seeded) and hold out n_eval units: (train, eval), each in input order.

    A unit is one group, or with `key` every group sharing key(group): split by prompt, a prompt
    with several records is held out whole, so held-out prompts are never trained on."""
    keys = list(range(len(groups))) if key is None else [key(g) for g in groups]
    units = list(dict.fromkeys(keys))
    random.Random(seed).shuffle(units)
    held = set(units[:n_eval])
    return [g for k, g in zip(keys, groups) if k not in held], [g for k, g in zip(keys, groups) if k in held]
