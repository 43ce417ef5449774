"""The one record type every preference source produces and every RM loss consumes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple


@dataclass(frozen=True)
class PreferenceGroup:
    """One prompt with K >= 2 responses and labelled comparisons among them.

    A pairwise comparison is the K = 2 case: responses=(chosen, rejected), pairs=((0, 1),).
    A K-wise ranking lists all C(K,2) pairs consistent with it (InstructGPT data).

    prompt:    the prompt text.
    responses: K response texts (without the prompt).
    pairs:     (winner index, loser index) per labelled comparison, indices into `responses`.
    margins:   preference strength per pair (Llama 2 margin loss), same order as `pairs`; None if unknown.
    gold:      gold score per response when a gold reward labelled the data; None for human data.
    """

    prompt: str
    responses: Tuple[str, ...]
    pairs: Tuple[Tuple[int, int], ...]
    margins: Optional[Tuple[float, ...]] = None
    gold: Optional[Tuple[float, ...]] = None

    @property
    def k(self) -> int:
        return len(self.responses)
