"""Loading existing preference data: formats, and every kind of bad record in both modes."""

import json

import pytest

from rlhf_scaling.data.loaders import DataError, load_preferences

WORDS = lambda text: len(text.split())  # noqa: E731


def write_lines(path, lines):
    path.write_bytes(b"\n".join(line if isinstance(line, bytes) else line.encode() for line in lines) + b"\n")
    return path


def load(path, fmt="jsonl", mode="error", max_prompt=50):
    return load_preferences(str(path), fmt, count_tokens=WORDS, max_prompt_tokens=max_prompt, on_bad_record=mode)


GOOD = json.dumps({"prompt": "why is the sky blue", "chosen": "rayleigh scattering", "rejected": "paint"})

BAD = {
    "bad_json": '{"prompt": "a", "chosen": "b", "rej',
    "not_utf8": b'{"prompt": "\xff\xfe", "chosen": "b", "rejected": "c"}',
    "wrong_type": json.dumps({"prompt": "a", "chosen": 3, "rejected": "c"}),
    "missing_field": json.dumps({"prompt": "a", "chosen": "b"}),
    "empty_text": json.dumps({"prompt": "  ", "chosen": "b", "rejected": "c"}),
    "identical_pair": json.dumps({"prompt": "a", "chosen": "same", "rejected": "same"}),
    "duplicate_response": json.dumps({"prompt": "a", "responses": ["x", "y", "x"], "ranking": [0, 1, 2]}),
    "bad_ranking": json.dumps({"prompt": "a", "responses": ["x", "y", "z"], "ranking": [0, 0, 2]}),
    "too_few_responses": json.dumps({"prompt": "a", "responses": ["x"], "ranking": [0]}),
    "prompt_too_long": json.dumps({"prompt": "w " * 60, "chosen": "b", "rejected": "c"}),
    "bad_margin": '{"prompt": "a", "chosen": "b", "rejected": "c", "margin": NaN}',
}


@pytest.mark.parametrize("reason", sorted(BAD))
def test_bad_record_error_names_file_line_and_problem(tmp_path, reason):
    path = write_lines(tmp_path / "prefs.jsonl", [GOOD, GOOD, BAD[reason], GOOD])
    with pytest.raises(DataError) as err:
        load(path)
    message = str(err.value)
    assert message.startswith("prefs.jsonl:3: ") and "\n" not in message


@pytest.mark.parametrize("reason", sorted(BAD))
def test_bad_record_filter_counts_it(tmp_path, reason):
    path = write_lines(tmp_path / "prefs.jsonl", [GOOD, BAD[reason], GOOD])
    groups, report = load(path, mode="filter")
    assert len(groups) == 2 and report.n_read == 3 and report.n_kept == 2
    assert report.filtered == {reason: 1} and report.examples[reason] == [2]
    assert f"{reason}=1" in report.summary()


def test_pairwise_and_kwise_records(tmp_path):
    kwise = {"prompt": "p", "responses": ["a", "b", "c", "d"], "ranking": [2, 0, 3, 1], "scores": [1, 0, 3, 2]}
    path = write_lines(tmp_path / "p.jsonl", [json.dumps({**json.loads(GOOD), "margin": 2.0}), json.dumps(kwise)])
    (pair, group), _ = load(path)
    assert pair.responses == ("rayleigh scattering", "paint") and pair.pairs == ((0, 1),) and pair.margins == (2.0,)
    assert len(group.pairs) == 6  # C(4, 2)
    rank = {idx: pos for pos, idx in enumerate(kwise["ranking"])}
    assert all(rank[w] < rank[l] for w, l in group.pairs)


def test_empty_and_missing_files_are_errors(tmp_path):
    with pytest.raises(DataError, match="no usable"):
        load(write_lines(tmp_path / "e.jsonl", [""]))
    with pytest.raises(DataError, match="no usable"):
        load(write_lines(tmp_path / "b.jsonl", [BAD["identical_pair"]]), mode="filter")
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load(tmp_path / "nope.jsonl")


HH = {"chosen": "\n\nHuman: hi there\n\nAssistant: hello, how can I help?",
      "rejected": "\n\nHuman: hi there\n\nAssistant: go away"}
UF = {"prompt": "name a colour",
      "chosen": [{"role": "user", "content": "name a colour"}, {"role": "assistant", "content": "blue"}],
      "rejected": [{"role": "user", "content": "name a colour"}, {"role": "assistant", "content": "seven"}],
      "score_chosen": 8.0, "score_rejected": 3.5}


@pytest.mark.parametrize("fmt, record, expected", [
    ("hh", HH, ("\n\nHuman: hi there\n\nAssistant:", ("hello, how can I help?", "go away"), None)),
    ("ultrafeedback", UF, ("name a colour", ("blue", "seven"), (4.5,))),
])
@pytest.mark.parametrize("source", ["jsonl", "save_to_disk"])
def test_hf_dataset_shapes(tmp_path, fmt, record, expected, source):
    import datasets

    if source == "jsonl":
        path = write_lines(tmp_path / "d.jsonl", [json.dumps(record)] * 3)
    else:
        path = tmp_path / "ds"
        datasets.DatasetDict({"train": datasets.Dataset.from_list([record] * 3)}).save_to_disk(str(path))
    groups, report = load(path, fmt=fmt)
    assert report.n_kept == 3
    prompt, responses, margins = expected
    assert (groups[0].prompt, groups[0].responses, groups[0].margins) == (prompt, responses, margins)


def test_hh_transcripts_with_different_prompts_are_bad(tmp_path):
    bad = dict(HH, rejected="\n\nHuman: something else\n\nAssistant: go away")
    path = write_lines(tmp_path / "hh.jsonl", [json.dumps(HH), json.dumps(bad)])
    with pytest.raises(DataError, match="hh.jsonl:2: .*share the prompt"):
        load(path, fmt="hh")
