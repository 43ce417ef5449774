"""Loading existing preference data: formats, sources, every kind of bad record in both modes, writing back."""

import json
import math
import random
import re
from itertools import permutations

import pytest

from rlhf_scaling.data.loaders import (MAX_EXAMPLES, DataError, LoadReport, group_record, load_preferences,
                                       ranking_pairs)
from rlhf_scaling.data.records import PreferenceGroup, read_groups, write_groups

WORDS = lambda text: len(text.split())  # noqa: E731  - whitespace word count stands in for a tokenizer
MAX_PROMPT = 50


@pytest.fixture(autouse=True)
def hermetic_datasets(tmp_path, monkeypatch):
    """datasets caches under tmp_path and never reaches the hub."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


def write_lines(path, lines):
    path.write_bytes(b"\n".join(line if isinstance(line, bytes) else line.encode() for line in lines) + b"\n")
    return path


def load(path, fmt="jsonl", mode="error", split="train"):
    return load_preferences(str(path), fmt, count_tokens=WORDS, max_prompt_tokens=MAX_PROMPT,
                            on_bad_record=mode, split=split)


def hh(human, assistant):
    return f"\n\nHuman: {human}\n\nAssistant: {assistant}"


def messages(user, assistant):
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


GOOD = {
    "jsonl": {"prompt": "why is the sky blue", "chosen": "rayleigh scattering", "rejected": "paint"},
    "hh": {"chosen": hh("hi there", "hello, how can I help?"), "rejected": hh("hi there", "go away")},
    "ultrafeedback": {"prompt": "name a colour", "chosen": messages("name a colour", "blue"),
                      "rejected": messages("name a colour", "seven"), "score_chosen": 8.0, "score_rejected": 3.5},
}
LONG = "w " * (MAX_PROMPT + 10)

# (fmt, raw line, reason counted under "filter", words the "error" message must contain)
BAD = {
    "truncated_json": ("jsonl", '{"prompt": "a", "chosen": "b", "rej', "bad_json", "malformed JSON"),
    "not_utf8": ("jsonl", b'{"prompt": "\xff\xfe", "chosen": "b", "rejected": "c"}', "not_utf8", "not UTF-8"),
    "not_an_object": ("jsonl", "[1, 2]", "wrong_type", "must be a JSON object"),
    "chosen_not_str": ("jsonl", {"prompt": "a", "chosen": 3, "rejected": "c"}, "wrong_type",
                       "'chosen' must be a string"),
    "margin_not_number": ("jsonl", {"prompt": "a", "chosen": "b", "rejected": "c", "margin": "big"}, "wrong_type",
                          "'margin' must be a number"),
    "responses_not_strings": ("jsonl", {"prompt": "a", "responses": ["x", 2], "ranking": [0, 1]}, "wrong_type",
                              "'responses' must be a list of strings"),
    "missing_rejected": ("jsonl", {"prompt": "a", "chosen": "b"}, "missing_field", "missing field 'rejected'"),
    "missing_prompt": ("jsonl", {"chosen": "b", "rejected": "c"}, "missing_field", "missing field 'prompt'"),
    "missing_ranking": ("jsonl", {"prompt": "a", "responses": ["x", "y"]}, "missing_field", "missing field 'ranking'"),
    "empty_prompt": ("jsonl", {"prompt": " \n ", "chosen": "b", "rejected": "c"}, "empty_text", "'prompt' is empty"),
    "empty_rejected": ("jsonl", {"prompt": "a", "chosen": "b", "rejected": ""}, "empty_text", "'rejected' is empty"),
    "empty_kwise_response": ("jsonl", {"prompt": "a", "responses": ["x", "  ", "z"], "ranking": [0, 1, 2]},
                             "empty_text", "response 1 is empty"),
    "identical_pair": ("jsonl", {"prompt": "a", "chosen": "same", "rejected": "same"}, "identical_pair",
                       "'chosen' and 'rejected' are identical"),
    "identical_up_to_space": ("jsonl", {"prompt": "a", "chosen": " same\n", "rejected": "same"}, "identical_pair",
                              "identical"),
    "duplicate_response": ("jsonl", {"prompt": "a", "responses": ["x", "y", "x"], "ranking": [0, 1, 2]},
                           "duplicate_response", "same text twice"),
    "ranking_repeats": ("jsonl", {"prompt": "a", "responses": ["x", "y", "z"], "ranking": [0, 0, 2]},
                        "bad_ranking", "permutation of 0..2"),
    "ranking_short": ("jsonl", {"prompt": "a", "responses": ["x", "y", "z"], "ranking": [1, 0]},
                      "bad_ranking", "permutation of 0..2"),
    "ranking_out_of_range": ("jsonl", {"prompt": "a", "responses": ["x", "y"], "ranking": [1, 2]},
                             "bad_ranking", "permutation of 0..1"),
    "ranking_mixed_types": ("jsonl", {"prompt": "a", "responses": ["x", "y"], "ranking": ["b", 0]},
                            "bad_ranking", "permutation"),
    "ranking_floats": ("jsonl", {"prompt": "a", "responses": ["x", "y"], "ranking": [1.0, 0.0]},
                       "bad_ranking", "permutation"),
    "one_response": ("jsonl", {"prompt": "a", "responses": ["x"], "ranking": [0]}, "too_few_responses",
                     "1 response(s), need at least 2"),
    "no_responses": ("jsonl", {"prompt": "a", "responses": [], "ranking": []}, "too_few_responses", "need at least 2"),
    "prompt_too_long": ("jsonl", {"prompt": LONG, "chosen": "b", "rejected": "c"}, "prompt_too_long",
                        f"prompt has {MAX_PROMPT + 10} tokens > max_prompt_tokens={MAX_PROMPT}"),
    "nan_margin": ("jsonl", '{"prompt": "a", "chosen": "b", "rejected": "c", "margin": NaN}', "bad_margin",
                   "'margin' is nan"),
    "inf_margin": ("jsonl", '{"prompt": "a", "chosen": "b", "rejected": "c", "margin": Infinity}', "bad_margin",
                   "'margin' is inf"),
    "nan_score": ("jsonl", '{"prompt": "a", "responses": ["x", "y"], "ranking": [0, 1], "scores": [1, NaN]}',
                  "bad_score", "'scores' is nan"),
    "hh_no_assistant": ("hh", {"chosen": "\n\nHuman: hi", "rejected": hh("hi", "b")}, "bad_transcript",
                        "no '\\n\\nAssistant:' turn"),
    "hh_different_prompts": ("hh", {"chosen": hh("hi", "a"), "rejected": hh("bye", "b")}, "bad_transcript",
                             "do not share the prompt"),
    "hh_empty_response": ("hh", {"chosen": hh("hi", "a"), "rejected": hh("hi", "  ")}, "empty_text",
                          "rejected response is empty"),
    "hh_identical": ("hh", {"chosen": hh("hi", "a"), "rejected": hh("hi", "a")}, "identical_pair", "identical"),
    "hh_missing": ("hh", {"chosen": hh("hi", "a")}, "missing_field", "missing field 'rejected'"),
    "hh_prompt_too_long": ("hh", {"chosen": hh(LONG, "a"), "rejected": hh(LONG, "b")}, "prompt_too_long",
                           "tokens > max_prompt_tokens"),
    "uf_missing_chosen": ("ultrafeedback", {"prompt": "p", "rejected": messages("p", "r")}, "missing_field",
                          "missing field 'chosen'"),
    "uf_chosen_is_text": ("ultrafeedback", {"prompt": "p", "chosen": "c", "rejected": messages("p", "r")},
                          "wrong_type", "'chosen' must be a list of"),
    "uf_no_assistant": ("ultrafeedback", {"prompt": "p", "chosen": [{"role": "user", "content": "p"}],
                                          "rejected": messages("p", "r")}, "missing_field", "no assistant message"),
    "uf_empty_reply": ("ultrafeedback", {"prompt": "p", "chosen": messages("p", " "),
                                         "rejected": messages("p", "r")}, "empty_text", "assistant message is empty"),
    "uf_identical": ("ultrafeedback", {"prompt": "p", "chosen": messages("p", "r"), "rejected": messages("p", "r")},
                     "identical_pair", "identical"),
    "uf_nan_score": ("ultrafeedback", '{"prompt": "p", "chosen": [{"role": "assistant", "content": "c"}], '
                     '"rejected": [{"role": "assistant", "content": "r"}], "score_chosen": NaN, "score_rejected": 1}',
                     "bad_margin", "'score_chosen' is nan"),
    "uf_score_text": ("ultrafeedback", {"prompt": "p", "chosen": messages("p", "c"), "rejected": messages("p", "r"),
                                        "score_chosen": "8", "score_rejected": 1}, "wrong_type",
                      "'score_chosen' must be a number"),
    "uf_tie": ("ultrafeedback", {"prompt": "p", "chosen": messages("p", "c"), "rejected": messages("p", "r"),
                                 "score_chosen": 7.0, "score_rejected": 7.0}, "tie", "a tie has no preferred response"),
    "uf_contradictory": ("ultrafeedback", {"prompt": "p", "chosen": messages("p", "c"), "rejected": messages("p", "r"),
                                           "score_chosen": 2.0, "score_rejected": 6.5}, "contradictory_scores",
                         "score_chosen 2.0 < score_rejected 6.5"),
}


def raw(line):
    return line if isinstance(line, (str, bytes)) else json.dumps(line)


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_record_error_names_file_line_and_problem(tmp_path, case):
    fmt, line, _, problem = BAD[case]
    good = json.dumps(GOOD[fmt])
    path = write_lines(tmp_path / "prefs.jsonl", [good, good, raw(line), good])
    with pytest.raises(DataError) as err:
        load(path, fmt)
    message = str(err.value)
    assert message.startswith(f"{path}:3: ") and "\n" not in message
    assert problem in message


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_record_filter_counts_it(tmp_path, case):
    fmt, line, reason, problem = BAD[case]
    good = json.dumps(GOOD[fmt])
    path = write_lines(tmp_path / "prefs.jsonl", [good, raw(line), good])
    groups, report = load(path, fmt, mode="filter")
    assert len(groups) == 2 and (report.n_read, report.n_kept, report.n_filtered) == (3, 2, 1)
    assert report.filtered == {reason: 1}
    [(number, text)] = report.examples[reason]
    assert number == 2 and problem in text
    assert report.summary() == f"kept 2/3 records; filtered: {reason}=1"


def test_prompt_exactly_at_the_limit_is_kept(tmp_path):
    path = write_lines(tmp_path / "p.jsonl", [json.dumps({"prompt": "w " * MAX_PROMPT, "chosen": "a", "rejected": "b"})])
    assert len(load(path)[0]) == 1


def test_report_counts_several_reasons_and_caps_examples(tmp_path):
    good, same = json.dumps(GOOD["jsonl"]), raw(BAD["identical_pair"][1])
    lines = [good, same, "", same, raw(BAD["prompt_too_long"][1]), same, same, same, good]
    groups, report = load(write_lines(tmp_path / "p.jsonl", lines), mode="filter")
    assert len(groups) == 2 and report.n_read == 8  # the blank line is not a record
    assert report.filtered == {"identical_pair": 5, "prompt_too_long": 1}
    # Line numbers are physical lines, blank ones included.
    assert [n for n, _ in report.examples["identical_pair"]] == [2, 4, 6][:MAX_EXAMPLES]
    assert report.summary() == "kept 2/8 records; filtered: identical_pair=5, prompt_too_long=1"
    assert report.details()[0].startswith("identical_pair: 5 (e.g. 2: 'chosen' and 'rejected' are identical")


def test_summary_without_filtering():
    assert LoadReport(n_read=4, n_kept=4).summary() == "kept 4/4 records"


def test_empty_file_all_filtered_and_missing_file_are_errors(tmp_path):
    for mode in ("error", "filter"):
        with pytest.raises(DataError, match=r"e\.jsonl: no usable preference records \(kept 0/0 records\)"):
            load(write_lines(tmp_path / "e.jsonl", ["", "  "]), mode=mode)
    with pytest.raises(DataError, match="no usable.*identical_pair=2"):
        load(write_lines(tmp_path / "b.jsonl", [raw(BAD["identical_pair"][1])] * 2), mode="filter")
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load(tmp_path / "nope.jsonl")


def test_bad_arguments(tmp_path):
    path = write_lines(tmp_path / "p.jsonl", [json.dumps(GOOD["jsonl"])])
    with pytest.raises(ValueError, match="unknown preference format 'csv'"):
        load(path, fmt="csv")
    with pytest.raises(ValueError, match="on_bad_record"):
        load(path, mode="skip")


def test_byte_order_mark_and_crlf_are_fine(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD["jsonl"]).encode() + b"\r\n" + json.dumps(GOOD["jsonl"]).encode())
    assert len(load(path)[0]) == 2


def test_pairwise_and_kwise_records_mix(tmp_path):
    kwise = {"prompt": "p", "responses": ["a", "b", "c", "d"], "ranking": [2, 0, 3, 1], "scores": [1, 0, 3, 2]}
    pairwise = {**GOOD["jsonl"], "margin": 2}
    path = write_lines(tmp_path / "p.jsonl", [json.dumps(pairwise), json.dumps(kwise)])
    (pair, group), report = load(path)
    assert pair == PreferenceGroup("why is the sky blue", ("rayleigh scattering", "paint"), ((0, 1),), (2.0,), None)
    assert group.responses == ("a", "b", "c", "d") and group.gold == (1.0, 0.0, 3.0, 2.0) and group.margins is None
    assert group.pairs == ((2, 0), (2, 3), (2, 1), (0, 3), (0, 1), (3, 1))
    assert report.summary() == "kept 2/2 records"


@pytest.mark.parametrize("k", [2, 3, 4, 5, 7])
def test_kwise_pairs_are_all_c_k_2_and_follow_the_ranking(tmp_path, k):
    rng = random.Random(k)
    ranking = rng.sample(range(k), k)
    record = {"prompt": "p", "responses": [f"r{i}" for i in range(k)], "ranking": ranking}
    [group], _ = load(write_lines(tmp_path / "k.jsonl", [json.dumps(record)]))
    position = {idx: pos for pos, idx in enumerate(ranking)}
    assert len(group.pairs) == math.comb(k, 2) == len(set(group.pairs))
    assert all(position[w] < position[l] for w, l in group.pairs)
    assert {frozenset(p) for p in group.pairs} == {frozenset((a, b)) for a in range(k) for b in range(a + 1, k)}


def test_ranking_pairs_brute_force():
    for ranking in permutations(range(4)):
        better = {(a, b) for a in range(4) for b in range(4) if ranking.index(a) < ranking.index(b)}
        assert set(ranking_pairs(ranking)) == better and len(ranking_pairs(ranking)) == 6


# ----------------------------------------------------------------------------- datasets-library sources

EXPECTED = {
    "hh": ("\n\nHuman: hi there\n\nAssistant:", ("hello, how can I help?", "go away"), None),
    "ultrafeedback": ("name a colour", ("blue", "seven"), (4.5,)),
}


def save(tmp_path, source, records):
    """Write records as `source` under tmp_path; returns the path to load."""
    import datasets

    if source == "jsonl":
        return write_lines(tmp_path / "d.jsonl", [json.dumps(r) for r in records])
    if source == "json":  # one JSON array, read by datasets
        (tmp_path / "d.json").write_text(json.dumps(records))
        return tmp_path / "d.json"
    ds = datasets.Dataset.from_list(records)
    if source == "parquet":
        ds.to_parquet(str(tmp_path / "d.parquet"))
        return tmp_path / "d.parquet"
    # save_to_disk of a Dataset, or of a DatasetDict (whose "train" split load() asks for)
    (ds if source == "save_to_disk" else datasets.DatasetDict({"train": ds})).save_to_disk(str(tmp_path / "ds"))
    return tmp_path / "ds"


@pytest.mark.parametrize("fmt", ["hh", "ultrafeedback"])
@pytest.mark.parametrize("source", ["jsonl", "json", "parquet", "save_to_disk", "save_to_disk_dict"])
def test_hf_dataset_shapes(tmp_path, fmt, source):
    path = save(tmp_path, source, [GOOD[fmt]] * 3)
    groups, report = load(path, fmt)
    assert (report.n_read, report.n_kept) == (3, 3)
    prompt, responses, margins = EXPECTED[fmt]
    assert all((g.prompt, g.responses, g.pairs, g.margins, g.gold) == (prompt, responses, ((0, 1),), margins, None)
               for g in groups)


def test_datasetdict_split_is_chosen_and_a_missing_split_is_an_error(tmp_path):
    import datasets

    other = {**GOOD["ultrafeedback"], "prompt": "name a fruit"}
    datasets.DatasetDict({"train_prefs": datasets.Dataset.from_list([GOOD["ultrafeedback"]] * 2),
                          "test_prefs": datasets.Dataset.from_list([other])}).save_to_disk(str(tmp_path / "uf"))
    groups, _ = load(tmp_path / "uf", "ultrafeedback", split="test_prefs")
    assert [g.prompt for g in groups] == ["name a fruit"]
    with pytest.raises(DataError, match=r"uf: no split 'train'; it has \['test_prefs', 'train_prefs'\]"):
        load(tmp_path / "uf", "ultrafeedback")


def test_bad_rows_of_a_saved_dataset_are_numbered_by_record(tmp_path):
    # datasets fills the column a row lacks with None: still reported as a missing field.
    rows = [GOOD["hh"], {"chosen": hh("hi", "a"), "rejected": None}, {"chosen": hh("hi", "a"), "rejected": hh("x", "b")}]
    path = save(tmp_path, "save_to_disk", rows)
    with pytest.raises(DataError, match=r"ds:2: missing field 'rejected'$"):
        load(path, "hh")
    groups, report = load(path, "hh", mode="filter")
    assert len(groups) == 1 and report.filtered == {"missing_field": 1, "bad_transcript": 1}
    assert report.examples["bad_transcript"][0][0] == 3


def test_unreadable_local_file_and_unknown_hub_id_are_one_line_errors(tmp_path):
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"broken.parquet: cannot load: ") as err:
        load(tmp_path / "broken.parquet", "hh")
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match=r"no-such-org/no-such-data: cannot load \(not a local path; tried it as a hub"):
        load("no-such-org/no-such-data", "hh")


# ----------------------------------------------------------------------------- writing (records.write_groups)


def write_jsonl(groups, path):
    """The input shape that `task=jsonl` reads."""
    write_groups(groups, path, record=group_record)


ROUND_TRIP = [
    PreferenceGroup("p1", ("good", "bad"), ((0, 1),)),
    PreferenceGroup("p2", ("good", "bad"), ((0, 1),), margins=(1.5,), gold=(0.25, -1.0)),
    PreferenceGroup("p3", ("worse", "better"), ((1, 0),), margins=(0.5,)),  # K = 2 but not ((0, 1),): K-wise
    PreferenceGroup("p4 ünïcode\nline", ("a", "b", "c"), ranking_pairs([1, 2, 0]), margins=(1.0, 2.0, 3.0),
                    gold=(0.0, 2.0, 1.0)),
    PreferenceGroup("p5", tuple(f"r{i}" for i in range(5)), ranking_pairs([4, 0, 3, 1, 2])),
]


def test_write_jsonl_round_trips(tmp_path):
    path = tmp_path / "out.jsonl"
    write_jsonl(ROUND_TRIP, path)
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert set(lines[0]) == {"prompt", "chosen", "rejected"}  # pairwise shape
    assert set(lines[1]) == {"prompt", "chosen", "rejected", "margin", "scores"}
    assert lines[2]["ranking"] == [1, 0] and lines[4]["ranking"] == [4, 0, 3, 1, 2]  # K-wise shape
    groups, report = load(path)
    assert groups == ROUND_TRIP and report.summary() == "kept 5/5 records"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temp file left behind


def test_write_jsonl_reorders_margins_with_the_pairs(tmp_path):
    # Same pairs as ranking [2, 0, 1], listed in another order: margins must travel with their pairs.
    group = PreferenceGroup("p", ("a", "b", "c"), ((0, 1), (2, 0), (2, 1)), margins=(3.0, 1.0, 2.0))
    write_jsonl([group], tmp_path / "o.jsonl")
    [back], _ = load(tmp_path / "o.jsonl")
    assert dict(zip(back.pairs, back.margins)) == dict(zip(group.pairs, group.margins))


@pytest.mark.parametrize("group, problem", [
    (PreferenceGroup("p", ("a", "b", "c"), ((0, 1), (1, 2))), "not the C(K,2) pairs of one ranking"),  # incomplete
    (PreferenceGroup("p", ("a", "b", "c"), ((0, 1), (1, 2), (2, 0))), "not the C(K,2) pairs"),  # a cycle
    (PreferenceGroup("p", ("a", "b"), ((0, 5),)), "not the C(K,2) pairs"),
    (PreferenceGroup("p", ("a", "b"), ((0, 1),), margins=(float("nan"),)), "Out of range float"),
])
def test_write_jsonl_refuses_what_the_shape_cannot_hold_and_keeps_the_old_file(tmp_path, group, problem):
    path = tmp_path / "o.jsonl"
    path.write_text("old\n")
    with pytest.raises(ValueError, match=r"^group 1: .*" + re.escape(problem)):
        write_jsonl([ROUND_TRIP[0], group], path)
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["o.jsonl"]


def test_the_data_artifact_shape_holds_any_pairs_and_refuses_what_json_cannot(tmp_path):
    """The default record (group_to_json) keeps every field, pairs the input shape cannot hold
    included, and reads back unchanged; a non-finite number is refused and the old file kept."""
    path = tmp_path / "train.jsonl"
    odd = PreferenceGroup("p", ("a", "b", "c"), ((0, 1), (1, 2)), margins=(0.5, 1.0), gold=(2.0, 1.0, 0.0))
    write_groups([*ROUND_TRIP, odd], path)
    assert read_groups(path) == [*ROUND_TRIP, odd]
    with pytest.raises(ValueError, match=r"^group 1: Out of range float"):
        write_groups([odd, PreferenceGroup("p", ("a", "b"), ((0, 1),), gold=(float("inf"), 0.0))], path)
    assert read_groups(path) == [*ROUND_TRIP, odd] and [p.name for p in tmp_path.iterdir()] == ["train.jsonl"]
