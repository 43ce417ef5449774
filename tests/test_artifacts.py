"""Content-addressed artifacts: atomic build, build-once under concurrency, no path escapes."""

import multiprocessing as mp
import time

import pytest

from rlhf_scaling.artifacts import LockHeld, MissingArtifact, building, is_plain_name, locked, make_artifact


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


def test_a_build_that_fails_before_writing_leaves_nothing_behind(tmp_path):
    """A failed data load (nothing written yet) leaves neither an empty .partial/ folder nor a lock
    file; a failure after a checkpoint keeps the partial folder for the next builder, not the lock."""
    art = make_artifact(tmp_path, "data", "x", {"a": 1})
    with pytest.raises(ValueError):
        with building(art):
            raise ValueError("malformed JSON at line 3")
    assert list(tmp_path.iterdir()) == []  # not even the store's data/ folder this build created
    with pytest.raises(KeyboardInterrupt):
        with building(art) as out:
            (out / "member_0.ckpt").write_text("step 10")
            raise KeyboardInterrupt
    assert [p.name for p in (tmp_path / "data").iterdir()] == [art.key + ".partial"]
    with building(art) as out:
        pass
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [art.key]


def _count_under_lock(path, counter, n):
    for _ in range(n):
        with locked(path):
            value = int(counter.read_text())
            time.sleep(0.001)
            counter.write_text(str(value + 1))


def test_lock_files_are_removed_by_their_holder_without_breaking_exclusion(tmp_path):
    """Removing a lock file on release is safe only with the same-file check: four processes
    incrementing a counter under the lock never lose an increment, and no lock file remains."""
    counter = tmp_path / "counter"
    counter.write_text("0")
    procs = [mp.get_context("fork").Process(target=_count_under_lock, args=(tmp_path / "x.lock", counter, 40))
             for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert counter.read_text() == "160"
    assert not (tmp_path / "x.lock").exists()


def test_a_held_lock_refuses_when_asked_not_to_wait(tmp_path):
    with locked(tmp_path / "run.lock"):
        with pytest.raises(LockHeld):
            with locked(tmp_path / "run.lock", wait=False):
                pass
    with locked(tmp_path / "run.lock", wait=False):
        pass


def test_long_names_are_refused_before_the_file_system_refuses_them(tmp_path):
    assert is_plain_name("x" * 128) and not is_plain_name("x" * 129) and not is_plain_name("é" * 65)
    with pytest.raises(ValueError):
        make_artifact(tmp_path, "rm", "x" * 300, {})
