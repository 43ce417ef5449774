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


def group_to_json(group: PreferenceGroup) -> dict:
    """A plain dict with every field (pairs as lists), for the data artifact's JSONL."""
    out = {"prompt": group.prompt, "responses": list(group.responses), "pairs": [list(p) for p in group.pairs]}
    if group.margins is not None:
        out["margins"] = list(group.margins)
    if group.gold is not None:
        out["gold"] = list(group.gold)
    return out


def group_from_json(obj: dict) -> PreferenceGroup:
    """Inverse of group_to_json (the data artifact is written by us, so no validation here)."""
    return PreferenceGroup(
        prompt=obj["prompt"],
        responses=tuple(obj["responses"]),
        pairs=tuple((int(w), int(l)) for w, l in obj["pairs"]),
        margins=tuple(obj["margins"]) if obj.get("margins") is not None else None,
        gold=tuple(obj["gold"]) if obj.get("gold") is not None else None,
    )


def write_groups(groups, path) -> None:
    """JSONL of groups, written to a temp file then renamed (never a readable partial file)."""
    import json
    import os
    from pathlib import Path

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for g in groups:
            fh.write(json.dumps(group_to_json(g)) + "\n")
    os.replace(tmp, path)


def read_groups(path) -> list:
    import json

    with open(path, encoding="utf-8") as fh:
        return [group_from_json(json.loads(line)) for line in fh if line.strip()]
