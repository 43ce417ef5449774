"""Loading existing preference data into PreferenceGroups, with validation of every record.

Formats (`task.name`):
  jsonl          pairwise  {"prompt", "chosen", "rejected"[, "margin"]}
                 K-wise    {"prompt", "responses": [...], "ranking": [best .. worst indices][, "scores"]}
  hh             Anthropic-HH shape: "chosen"/"rejected" full transcripts; the prompt is the shared
                 prefix up to the last "\\n\\nAssistant:", the responses are what follows it.
  ultrafeedback  UltraFeedback-binarized shape: "prompt", "chosen"/"rejected" message lists (the last
                 assistant message is the response), optional "score_chosen"/"score_rejected" -> margin.
hh and ultrafeedback go through the `datasets` library: a local .jsonl/.json/.parquet file, a folder
written by save_to_disk, or a hub id.

Bad records never pass silently: with on_bad_record="error" the first one raises DataError naming
file:line and the problem; with "filter" it is dropped and counted in the LoadReport.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Tuple

from rlhf_scaling.data.records import PreferenceGroup

ASSISTANT = "\n\nAssistant:"


class DataError(ValueError):
    """A bad preference record; the message is one line: `<file>:<line>: <problem>`."""


class _Bad(Exception):
    """Internal: a record-level problem with a short reason key and a message."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class LoadReport:
    """What was read, kept and filtered (by reason, with the first few line numbers)."""

    n_read: int = 0
    n_kept: int = 0
    filtered: Dict[str, int] = field(default_factory=dict)
    examples: Dict[str, List[int]] = field(default_factory=dict)

    def add(self, reason: str, line: int) -> None:
        self.filtered[reason] = self.filtered.get(reason, 0) + 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 5:
            self.examples[reason].append(line)

    def summary(self) -> str:
        text = f"kept {self.n_kept}/{self.n_read} records"
        if self.filtered:
            text += "; filtered: " + ", ".join(f"{k}={v}" for k, v in sorted(self.filtered.items()))
        return text


# ----------------------------------------------------------------------------- record parsers


def _text(record: dict, key: str) -> str:
    if key not in record:
        raise _Bad("missing_field", f"missing field {key!r}")
    value = record[key]
    if not isinstance(value, str):
        raise _Bad("wrong_type", f"{key!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise _Bad("empty_text", f"{key!r} is empty")
    return value


def _margin(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Bad("wrong_type", f"'margin' must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise _Bad("bad_margin", f"'margin' is {value}")
    return float(value)


def _pairwise(prompt: str, chosen: str, rejected: str, margin=None) -> PreferenceGroup:
    if chosen.strip() == rejected.strip():
        raise _Bad("identical_pair", "'chosen' and 'rejected' are identical")
    return PreferenceGroup(prompt, (chosen, rejected), ((0, 1),), None if margin is None else (margin,))


def parse_jsonl_record(record: dict) -> PreferenceGroup:
    """One JSONL object (pairwise or K-wise) -> PreferenceGroup, or _Bad."""
    if not isinstance(record, dict):
        raise _Bad("wrong_type", f"a record must be a JSON object, got {type(record).__name__}")
    prompt = _text(record, "prompt")
    if "responses" not in record:
        margin = _margin(record["margin"]) if record.get("margin") is not None else None
        return _pairwise(prompt, _text(record, "chosen"), _text(record, "rejected"), margin)
    responses, ranking = record["responses"], record.get("ranking")
    if not isinstance(responses, list) or not all(isinstance(r, str) for r in responses):
        raise _Bad("wrong_type", "'responses' must be a list of strings")
    if len(responses) < 2:
        raise _Bad("too_few_responses", f"K-wise record has {len(responses)} responses (need >= 2)")
    if any(not r.strip() for r in responses):
        raise _Bad("empty_text", "a response is empty")
    if len({r.strip() for r in responses}) != len(responses):
        raise _Bad("duplicate_response", "responses contain duplicates")
    if not isinstance(ranking, list) or sorted(ranking) != list(range(len(responses))) \
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in ranking):
        raise _Bad("bad_ranking", f"'ranking' must be a permutation of 0..{len(responses) - 1}, got {ranking!r}")
    scores = record.get("scores")
    if scores is not None and (not isinstance(scores, list) or len(scores) != len(responses)
                               or not all(isinstance(s, (int, float)) and math.isfinite(s) for s in scores)):
        raise _Bad("wrong_type", "'scores' must be K finite numbers")
    pairs = tuple((ranking[a], ranking[b]) for a, b in combinations(range(len(ranking)), 2))
    return PreferenceGroup(prompt, tuple(responses), pairs, None, tuple(map(float, scores)) if scores else None)


def parse_hh_record(record: dict) -> PreferenceGroup:
    """Anthropic-HH: split both transcripts at the last assistant turn; the prefixes must agree."""
    chosen, rejected = _text(record, "chosen"), _text(record, "rejected")
    cut_c, cut_r = chosen.rfind(ASSISTANT), rejected.rfind(ASSISTANT)
    if cut_c < 0 or cut_r < 0:
        raise _Bad("bad_transcript", "no '\\n\\nAssistant:' turn in the transcript")
    prompt = chosen[: cut_c + len(ASSISTANT)]
    if rejected[: cut_r + len(ASSISTANT)] != prompt:
        raise _Bad("bad_transcript", "chosen and rejected transcripts do not share the prompt")
    c, r = chosen[cut_c + len(ASSISTANT):].strip(), rejected[cut_r + len(ASSISTANT):].strip()
    if not c or not r:
        raise _Bad("empty_text", "a response is empty")
    return _pairwise(prompt, c, r)


def _last_assistant(messages, key: str) -> str:
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise _Bad("wrong_type", f"{key!r} must be a list of messages")
    replies = [m.get("content") for m in messages if m.get("role") == "assistant"]
    if not replies or not isinstance(replies[-1], str) or not replies[-1].strip():
        raise _Bad("empty_text", f"{key!r} has no assistant reply")
    return replies[-1]


def parse_ultrafeedback_record(record: dict) -> PreferenceGroup:
    prompt = _text(record, "prompt")
    for key in ("chosen", "rejected"):
        if key not in record:
            raise _Bad("missing_field", f"missing field {key!r}")
    margin = None
    if record.get("score_chosen") is not None and record.get("score_rejected") is not None:
        margin = _margin(float(record["score_chosen"]) - float(record["score_rejected"]))
    return _pairwise(prompt, _last_assistant(record["chosen"], "chosen"),
                     _last_assistant(record["rejected"], "rejected"), margin)


PARSERS = {"jsonl": parse_jsonl_record, "hh": parse_hh_record, "ultrafeedback": parse_ultrafeedback_record}


# ----------------------------------------------------------------------------- sources


def _jsonl_records(path: Path) -> Iterator[Tuple[int, object]]:
    """(1-based line, parsed object or _Bad) per non-blank line; bad bytes and bad JSON are _Bad."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield number, _Bad("not_utf8", f"not UTF-8 ({err.reason} at byte {err.start})")
                continue
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as err:
                yield number, _Bad("bad_json", f"malformed JSON ({err.msg})")


def _dataset_records(path: str, split: str) -> Iterator[Tuple[int, object]]:
    """(1-based record number, dict) from a datasets source: a file, a save_to_disk folder, or a hub id."""
    import datasets

    local = Path(path)
    if local.is_dir():
        ds = datasets.load_from_disk(str(local))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise DataError(f"{path}: no split {split!r} (has {sorted(ds)})")
            ds = ds[split]
    elif local.is_file():
        kind = "parquet" if local.suffix == ".parquet" else "json"
        ds = datasets.load_dataset(kind, data_files=str(local), split="train")
    else:
        ds = datasets.load_dataset(path, split=split)
    for number, record in enumerate(ds, start=1):
        yield number, record


def load_preferences(path: str, fmt: str, *, count_tokens: Callable[[str], int], max_prompt_tokens: int,
                     on_bad_record: str = "error", split: str = "train") -> Tuple[List[PreferenceGroup], LoadReport]:
    """Read and validate preference data; returns the groups and what was filtered."""
    if fmt not in PARSERS:
        raise ValueError(f"unknown preference format {fmt!r}; one of {sorted(PARSERS)}")
    if on_bad_record not in ("error", "filter"):
        raise ValueError(f"on_bad_record must be 'error' or 'filter', got {on_bad_record!r}")
    looks_local = fmt == "jsonl" or str(path).startswith((".", "/", "~")) or Path(path).suffix in (".jsonl", ".json", ".parquet")
    if looks_local and not Path(path).exists():
        raise FileNotFoundError(f"preference data not found: {path}")
    name = Path(path).name
    source = _jsonl_records(Path(path)) if fmt == "jsonl" else _dataset_records(str(path), split)
    parse, report, groups = PARSERS[fmt], LoadReport(), []
    for number, record in source:
        report.n_read += 1
        try:
            if isinstance(record, _Bad):
                raise record
            group = parse(record)
            if count_tokens(group.prompt) > max_prompt_tokens:
                raise _Bad("prompt_too_long", f"prompt has {count_tokens(group.prompt)} tokens > {max_prompt_tokens}")
        except _Bad as bad:
            if on_bad_record == "error":
                raise DataError(f"{name}:{number}: {bad}") from None
            report.add(bad.reason, number)
            continue
        groups.append(group)
        report.n_kept += 1
    if not groups:
        raise DataError(f"{name}: no usable preference records ({report.summary()})")
    return groups, report
