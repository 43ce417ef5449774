"""The one record type every preference source produces and every RM loss consumes."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Tuple


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


def write_groups(groups: Iterable[PreferenceGroup], path, record: Callable[[PreferenceGroup], dict] = group_to_json
                 ) -> None:
    """JSONL, one `record(group)` a line: the data artifact's shape by default (group_to_json), or
    the input shape that `task=jsonl` reads (`record=loaders.group_record`).

    Atomic: a temp file in the same folder, then os.replace, so readers never see half a file and a
    group that cannot be written (ValueError from `record`, or a non-finite number: strict JSON)
    leaves any existing file untouched; the error names the group's index.
    """
    path = Path(path)
    lines = []
    for index, group in enumerate(groups):
        try:
            lines.append(json.dumps(record(group), ensure_ascii=False, allow_nan=False))
        except ValueError as err:
            raise ValueError(f"group {index}: {err}") from None
    # Same folder, so os.replace is a rename on one filesystem; the pid keeps concurrent writers apart.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("".join(line + "\n" for line in lines))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_groups(path) -> list:
    with open(path, encoding="utf-8") as fh:
        return [group_from_json(json.loads(line)) for line in fh if line.strip()]
