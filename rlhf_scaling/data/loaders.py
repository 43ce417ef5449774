"""Loading existing preference data into PreferenceGroups, with validation of every record.

Formats (`task.name`):
  jsonl          pairwise  {"prompt", "chosen", "rejected"[, "margin"][, "scores": [chosen, rejected]]}
                 K-wise    {"prompt", "responses": [...], "ranking": [best .. worst indices]
                            [, "scores": [one per response]][, "margins": [one per pair]]}
                 Both shapes may be mixed in one file. A ranking yields all C(K,2) pairs, in the order
                 (ranking[a], ranking[b]) for a < b; "margins" (if any) follow that order. "scores" are
                 gold scores. (Pairwise "scores" and K-wise "margins" exist so that every group
                 records.write_groups(..., record=group_record) writes loads back unchanged.)
  hh             Anthropic-HH shape: "chosen"/"rejected" full transcripts; the prompt is the shared
                 prefix up to and including the last "\\n\\nAssistant:", the responses are what follows.
  ultrafeedback  UltraFeedback-binarized shape: "prompt", "chosen"/"rejected" message lists (the last
                 assistant message is the response), optional "score_chosen"/"score_rejected" -> margin.

Sources: a .jsonl file is read line by line here (any format), so that a truncated line or bad bytes
are reported with their line number instead of failing the whole file inside a JSON parser. Anything
else goes through the `datasets` library: a .json/.parquet file, a folder written by save_to_disk
(Dataset or DatasetDict, `split` picks from the latter), another local data folder, or a hub id.

Bad records never pass silently (peer bug: TRL RewardTrainer dropping over-length pairs unreported):
with on_bad_record="error" the first one raises DataError `<path>:<line or record>: <problem>`;
with "filter" it is dropped and counted, by reason, in the LoadReport. Over-long prompts are bad
records; over-long responses are not (the encoder truncates them and reports that).
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from rlhf_scaling.data.records import PreferenceGroup

ASSISTANT = "\n\nAssistant:"
MAX_EXAMPLES = 3  # examples kept per filter reason in the LoadReport
FORMATS = ("jsonl", "hh", "ultrafeedback")


class DataError(ValueError):
    """Unusable preference data; the message is one line: `<path>:<line>: <problem>` or `<path>: <problem>`."""


class _Bad(Exception):
    """Internal: one record's problem, with a short reason key (the LoadReport's counter name)."""

    def __init__(self, reason: str, problem: str):
        super().__init__(problem)
        self.reason = reason


@dataclass
class LoadReport:
    """What was read, kept and filtered.

    n_read:   records seen (non-blank lines of a JSONL file, rows of a dataset).
    n_kept:   records that became PreferenceGroups.
    filtered: count of dropped records per reason (e.g. "identical_pair").
    examples: the first MAX_EXAMPLES dropped records per reason, as (1-based line/record, problem).
    """

    n_read: int = 0
    n_kept: int = 0
    filtered: Dict[str, int] = field(default_factory=dict)
    examples: Dict[str, List[Tuple[int, str]]] = field(default_factory=dict)

    @property
    def n_filtered(self) -> int:
        return sum(self.filtered.values())

    def add(self, reason: str, number: int, problem: str) -> None:
        """Count one dropped record."""
        self.filtered[reason] = self.filtered.get(reason, 0) + 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < MAX_EXAMPLES:
            shown.append((number, problem))

    def summary(self) -> str:
        """One line for the log: `kept 980/1000 records; filtered: identical_pair=12, prompt_too_long=8`."""
        text = f"kept {self.n_kept}/{self.n_read} records"
        if self.filtered:
            text += "; filtered: " + ", ".join(f"{k}={v}" for k, v in sorted(self.filtered.items()))
        return text

    def details(self) -> List[str]:
        """One line per filter reason with its first examples, for logging after summary()."""
        return [f"{reason}: {count} (e.g. " + "; ".join(f"{n}: {p}" for n, p in self.examples[reason]) + ")"
                for reason, count in sorted(self.filtered.items())]


# ----------------------------------------------------------------------------- field checks


def _field(record: dict, key: str):
    """record[key]; a missing key and a null are the same thing (datasets fills absent columns with None)."""
    value = record.get(key)
    if value is None:
        raise _Bad("missing_field", f"missing field {key!r}")
    return value


def _text(record: dict, key: str) -> str:
    """A non-blank string field."""
    value = _field(record, key)
    if not isinstance(value, str):
        raise _Bad("wrong_type", f"{key!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise _Bad("empty_text", f"{key!r} is empty")
    return value


def _number(value, key: str, reason: str) -> float:
    """A finite real number (bools are not numbers here); NaN/inf are `reason`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _Bad("wrong_type", f"{key!r} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise _Bad(reason, f"{key!r} is {value}")
    return float(value)


def _numbers(record: dict, key: str, n: int, reason: str) -> Optional[Tuple[float, ...]]:
    """An optional list of exactly n finite numbers."""
    value = record.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != n:
        raise _Bad("wrong_type", f"{key!r} must be a list of {n} numbers")
    return tuple(_number(v, key, reason) for v in value)


def ranking_pairs(ranking: Iterable[int]) -> Tuple[Tuple[int, int], ...]:
    """All C(K,2) (winner, loser) pairs implied by a best-to-worst ranking, in a fixed order."""
    ranking = list(ranking)
    return tuple((ranking[a], ranking[b]) for a, b in combinations(range(len(ranking)), 2))


# ----------------------------------------------------------------------------- record parsers


def _pairwise(prompt: str, chosen: str, rejected: str, margin=None, gold=None) -> PreferenceGroup:
    """A K = 2 group; the same text on both sides teaches the RM nothing and is a labelling error."""
    if chosen.strip() == rejected.strip():
        raise _Bad("identical_pair", "'chosen' and 'rejected' are identical")
    return PreferenceGroup(prompt, (chosen, rejected), ((0, 1),), None if margin is None else (margin,), gold)


def _kwise(record: dict, prompt: str) -> PreferenceGroup:
    """{"responses", "ranking"[, "scores"][, "margins"]} -> a group with all C(K,2) ranked pairs."""
    responses = record["responses"]
    if not isinstance(responses, list) or not all(isinstance(r, str) for r in responses):
        raise _Bad("wrong_type", "'responses' must be a list of strings")
    k = len(responses)
    if k < 2:
        raise _Bad("too_few_responses", f"K-wise record has {k} response(s), need at least 2")
    if any(not r.strip() for r in responses):
        raise _Bad("empty_text", f"response {next(i for i, r in enumerate(responses) if not r.strip())} is empty")
    if len({r.strip() for r in responses}) != k:
        raise _Bad("duplicate_response", "'responses' contains the same text twice")
    ranking = _field(record, "ranking")
    # Check element types before sorting: sorted() of mixed types raises TypeError, and
    # 1.0 == 1 would let a float ranking pass the permutation test.
    if not isinstance(ranking, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ranking) \
            or sorted(ranking) != list(range(k)):
        raise _Bad("bad_ranking", f"'ranking' must be a permutation of 0..{k - 1}, got {ranking!r}")
    pairs = ranking_pairs(ranking)
    gold = _numbers(record, "scores", k, "bad_score")
    margins = _numbers(record, "margins", len(pairs), "bad_margin")
    return PreferenceGroup(prompt, tuple(responses), pairs, margins, gold)


def parse_jsonl_record(record) -> PreferenceGroup:
    """One JSONL object, pairwise or K-wise (it has "responses") -> PreferenceGroup, or _Bad."""
    if not isinstance(record, dict):
        raise _Bad("wrong_type", f"a record must be a JSON object, got {type(record).__name__}")
    prompt = _text(record, "prompt")
    if record.get("responses") is not None:
        return _kwise(record, prompt)
    chosen, rejected = _text(record, "chosen"), _text(record, "rejected")
    margin = None if record.get("margin") is None else _number(record["margin"], "margin", "bad_margin")
    return _pairwise(prompt, chosen, rejected, margin, _numbers(record, "scores", 2, "bad_score"))


def parse_hh_record(record) -> PreferenceGroup:
    """Anthropic-HH: split both transcripts after their last assistant turn; the prefixes must agree."""
    if not isinstance(record, dict):
        raise _Bad("wrong_type", f"a record must be an object, got {type(record).__name__}")
    chosen, rejected = _text(record, "chosen"), _text(record, "rejected")
    cut_c, cut_r = chosen.rfind(ASSISTANT), rejected.rfind(ASSISTANT)
    if cut_c < 0 or cut_r < 0:
        raise _Bad("bad_transcript", "a transcript has no '\\n\\nAssistant:' turn")
    cut_c, cut_r = cut_c + len(ASSISTANT), cut_r + len(ASSISTANT)
    prompt = chosen[:cut_c]
    if rejected[:cut_r] != prompt:
        raise _Bad("bad_transcript", "'chosen' and 'rejected' transcripts do not share the prompt")
    # The remainder starts with the space after "Assistant:"; the encoder re-adds exactly one.
    c, r = chosen[cut_c:].strip(), rejected[cut_r:].strip()
    if not c or not r:
        raise _Bad("empty_text", f"the {'chosen' if not c else 'rejected'} response is empty")
    return _pairwise(prompt, c, r)


def _last_assistant(record: dict, key: str) -> str:
    """Content of the last assistant message in record[key] (a list of {"role", "content"})."""
    messages = _field(record, key)
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise _Bad("wrong_type", f"{key!r} must be a list of {{'role', 'content'}} messages")
    replies = [m.get("content") for m in messages if m.get("role") == "assistant"]
    if not replies:
        raise _Bad("missing_field", f"{key!r} has no assistant message")
    if not isinstance(replies[-1], str):
        raise _Bad("wrong_type", f"{key!r}: assistant content must be a string, got {type(replies[-1]).__name__}")
    if not replies[-1].strip():
        raise _Bad("empty_text", f"{key!r}: the assistant message is empty")
    return replies[-1]


def parse_ultrafeedback_record(record) -> PreferenceGroup:
    """UltraFeedback-binarized: the judge's score difference, when both scores are there, is the margin."""
    if not isinstance(record, dict):
        raise _Bad("wrong_type", f"a record must be an object, got {type(record).__name__}")
    prompt = _text(record, "prompt")
    chosen, rejected = _last_assistant(record, "chosen"), _last_assistant(record, "rejected")
    margin = None
    if record.get("score_chosen") is not None and record.get("score_rejected") is not None:
        high = _number(record["score_chosen"], "score_chosen", "bad_margin")
        low = _number(record["score_rejected"], "score_rejected", "bad_margin")
        margin = high - low
        # A tie states no preference, and a lower chosen score contradicts the label: both are
        # labelling errors to report, not comparisons to train on.
        if margin == 0:
            raise _Bad("tie", f"score_chosen = score_rejected = {high}: a tie has no preferred response")
        if margin < 0:
            raise _Bad("contradictory_scores", f"score_chosen {high} < score_rejected {low}")
    return _pairwise(prompt, chosen, rejected, margin)


PARSERS = {"jsonl": parse_jsonl_record, "hh": parse_hh_record, "ultrafeedback": parse_ultrafeedback_record}


# ----------------------------------------------------------------------------- sources


def _jsonl_records(path: Path) -> Iterator[Tuple[int, object]]:
    """(1-based line, parsed object or _Bad) per non-blank line; bad bytes and bad JSON are _Bad."""
    with open(path, "rb") as fh:  # bytes, so one bad line cannot stop the decoder for the rest
        for number, raw in enumerate(fh, start=1):
            try:
                # utf-8-sig on line 1 drops a byte-order mark that editors on Windows add.
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                yield number, _Bad("not_utf8", f"not UTF-8 ({err.reason} at byte {err.start})")
                continue
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as err:
                yield number, _Bad("bad_json", f"malformed JSON ({err.msg} at column {err.colno})")


def _first_line(err: BaseException) -> str:
    """An exception as one line (datasets/pyarrow errors can span many)."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def _open_dataset(path: str, local: Path, split: str):
    """A datasets.Dataset from a local .json/.parquet file or folder, or a hub id."""
    import datasets

    try:
        if local.is_file():
            kind = "parquet" if local.suffix.lower() == ".parquet" else "json"
            return datasets.load_dataset(kind, data_files=str(local), split="train")
        if local.is_dir() and not ((local / "dataset_dict.json").is_file() or (local / "state.json").is_file()):
            return datasets.load_dataset(str(local), split=split)  # a folder of data files
        if local.is_dir():
            ds = datasets.load_from_disk(str(local))
        else:
            return datasets.load_dataset(path, split=split)
    except Exception as err:  # noqa: BLE001 - any reader failure is the data's fault; say it in one line
        where = "" if local.exists() else " (not a local path; tried it as a hub dataset)"
        raise DataError(f"{path}: cannot load{where}: {_first_line(err)}") from err
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(f"{path}: no split {split!r}; it has {sorted(ds)}")
        ds = ds[split]
    return ds


def _records(path: str, split: str) -> Iterator[Tuple[int, object]]:
    """(1-based line or record number, record or _Bad) from any supported source."""
    local = Path(path).expanduser()
    if local.is_file() and local.suffix.lower() not in (".json", ".parquet"):
        yield from _jsonl_records(local)
        return
    if _looks_local(path) and not local.exists():
        raise FileNotFoundError(f"preference data not found: {path}")
    yield from enumerate(_open_dataset(str(path), local, split), start=1)


def _looks_local(path: str) -> bool:
    """A path the user meant as local (it exists, starts like a path, or has a data file suffix),
    as opposed to a hub dataset id."""
    local = Path(path).expanduser()
    return local.exists() or str(path).startswith((".", "/", "~")) \
        or local.suffix.lower() in (".jsonl", ".json", ".parquet")


def source_identity(path: str) -> dict:
    """What identifies task.path's content, for the data artifact's key: the SHA-256 of a local
    file or of a local folder's files (rlhf_scaling.fingerprint), or the id of a hub dataset.
    A local path that is gone is FileNotFoundError naming it."""
    from rlhf_scaling.fingerprint import path_digest

    local = Path(path).expanduser()
    if local.exists():
        return {"sha256": path_digest(local, recursive=True)}
    if _looks_local(path):
        raise FileNotFoundError(f"preference data not found (task.path): {path}")
    return {"hub_dataset": str(path)}  # keyed by id: a hub dataset's revision is not resolved yet


def read_prompts(path) -> List[str]:
    """The distinct prompts of a JSONL file, in file order: each non-blank line an object with a
    "prompt" string (a preference file and a data artifact's eval.jsonl are such files).
    Errors are DataError `<path>:<line>: <problem>`; a missing file is FileNotFoundError."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"prompt file not found (task.prompts_path): {path}")
    prompts: Dict[str, None] = {}
    for number, record in _jsonl_records(path):
        if isinstance(record, _Bad):
            raise DataError(f"{path}:{number}: {record}")
        try:
            prompts[_text(record if isinstance(record, dict) else {}, "prompt")] = None
        except _Bad as bad:
            raise DataError(f"{path}:{number}: {bad}") from None
    if not prompts:
        raise DataError(f"{path}: no prompts (want one JSON object with a \"prompt\" string per line)")
    return list(prompts)


def load_preferences(path: str, fmt: str, *, count_tokens: Callable[[str], int], max_prompt_tokens: int,
                     on_bad_record: str = "error", split: str = "train") -> Tuple[List[PreferenceGroup], LoadReport]:
    """Read and validate preference data.

    path:              a .jsonl/.json/.parquet file, a save_to_disk folder, a data folder, or a hub id.
    fmt:               "jsonl", "hh" or "ultrafeedback" (the record shape; see the module docstring).
    count_tokens:      text -> token count, the tokenizer the prompts will be encoded with.
    max_prompt_tokens: longer prompts are bad records (prompt_too_long).
    on_bad_record:     "error": raise DataError at the first bad record; "filter": drop and count it.
    split:             the split of a DatasetDict folder, a data folder or a hub id.

    Returns the groups in file order and the LoadReport. Raises DataError when no record is usable.
    """
    if fmt not in PARSERS:
        raise ValueError(f"unknown preference format {fmt!r}; one of {list(FORMATS)}")
    if on_bad_record not in ("error", "filter"):
        raise ValueError(f"on_bad_record must be 'error' or 'filter', got {on_bad_record!r}")
    parse, report, groups = PARSERS[fmt], LoadReport(), []
    for number, record in _records(str(path), split):
        report.n_read += 1
        try:
            if isinstance(record, _Bad):
                raise record
            group = parse(record)
            n_tokens = count_tokens(group.prompt)
            if n_tokens > max_prompt_tokens:
                raise _Bad("prompt_too_long", f"prompt has {n_tokens} tokens > max_prompt_tokens={max_prompt_tokens}")
        except _Bad as bad:
            if on_bad_record == "error":
                raise DataError(f"{path}:{number}: {bad}") from None
            report.add(bad.reason, number, str(bad))
            continue
        groups.append(group)
        report.n_kept += 1
    if not groups:
        raise DataError(f"{path}: no usable preference records ({report.summary()})")
    return groups, report


# ----------------------------------------------------------------------------- writing


def _ranking_of(group: PreferenceGroup) -> Optional[List[int]]:
    """The best-to-worst ranking whose C(K,2) pairs are exactly group.pairs, or None if there is none."""
    if not all(0 <= i < group.k for pair in group.pairs for i in pair):
        return None
    wins = [0] * group.k
    for winner, _ in group.pairs:
        wins[winner] += 1
    # In a complete transitive ranking the best wins K-1 comparisons, the next K-2, ...
    ranking = sorted(range(group.k), key=lambda i: -wins[i])
    expected = ranking_pairs(ranking)
    if len(group.pairs) != len(expected) or set(group.pairs) != set(expected):
        return None
    return ranking


def group_record(group: PreferenceGroup) -> dict:
    """A group in the JSONL input shape: pairwise for K = 2 with pairs ((0, 1),), otherwise K-wise;
    `records.write_groups(groups, path, record=group_record)` writes a file `task=jsonl` loads back.

    Raises ValueError for a group the shape cannot hold (pairs that are not one full ranking).
    """
    if group.k == 2 and tuple(group.pairs) == ((0, 1),):
        out = {"prompt": group.prompt, "chosen": group.responses[0], "rejected": group.responses[1]}
        if group.margins is not None:
            out["margin"] = float(group.margins[0])  # float(): numpy scalars are not JSON
        if group.gold is not None:
            out["scores"] = [float(g) for g in group.gold]
        return out
    ranking = _ranking_of(group)
    if ranking is None:
        raise ValueError(f"pairs {list(group.pairs)} are not the C(K,2) pairs of one ranking; "
                         "the JSONL input shape cannot hold them (the data artifact's group_to_json can)")
    out = {"prompt": group.prompt, "responses": list(group.responses), "ranking": ranking}
    if group.gold is not None:
        out["scores"] = [float(g) for g in group.gold]
    if group.margins is not None:
        # The loader lists pairs in ranking_pairs order; margins must follow that order, not the group's.
        by_pair = dict(zip(group.pairs, group.margins))
        out["margins"] = [float(by_pair[p]) for p in ranking_pairs(ranking)]
    return out
