"""Content-addressed artifacts: atomic build, build-once under concurrency, no path escapes."""

import multiprocessing as mp
import time

import pytest

from rlhf_scaling.artifacts import MissingArtifact, building, make_artifact


def test_same_recipe_same_folder_and_missing_names_the_command(tmp_path):
    a = make_artifact(tmp_path, "rm", "tiny-s", {"lr": 1e-3, "k": 4})
    b = make_artifact(tmp_path, "rm", "tiny-s", {"k": 4, "lr": 1e-3})
    c = make_artifact(tmp_path, "rm", "tiny-s", {"k": 4, "lr": 2e-3})
    assert a.path == b.path != c.path
    with pytest.raises(MissingArtifact, match="rlhf-scaling stage=rm"):
        a.require("rlhf-scaling stage=rm model@rm=tiny-s")


def test_crash_while_building_leaves_nothing_readable(tmp_path):
    art = make_artifact(tmp_path, "data", "x", {"a": 1})
    with pytest.raises(RuntimeError):
        with building(art) as out:
            (out / "train.jsonl").write_text("half")
            raise RuntimeError("killed")
    assert not art.exists() and not art.path.exists()
    with building(art) as out:  # the next builder resumes in the same partial folder
        assert (out / "train.jsonl").read_text() == "half"
        (out / "train.jsonl").write_text("full")
    assert art.exists() and (art.path / "train.jsonl").read_text() == "full"


def _build(root, log_path):
    art = make_artifact(root, "sft", "p", {"x": 1})
    with building(art) as out:
        if out is not None:
            with open(log_path, "a") as fh:
                fh.write("built\n")
            time.sleep(0.5)
            (out / "model").write_text("w")


def test_two_jobs_asking_at_once_build_it_once(tmp_path):
    log_path = tmp_path / "log"
    procs = [mp.get_context("fork").Process(target=_build, args=(tmp_path / "store", log_path)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert log_path.read_text() == "built\n"
    assert make_artifact(tmp_path / "store", "sft", "p", {"x": 1}).exists()


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ""])
def test_names_cannot_escape_the_store(tmp_path, name):
    with pytest.raises(ValueError):
        make_artifact(tmp_path, "rm", name, {})
