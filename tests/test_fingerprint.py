"""Content hashes of input files and folders: cached by stat, recomputed on any change."""

import os

import pytest

from rlhf_scaling import fingerprint
from rlhf_scaling.fingerprint import directory_digest, file_digest


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_file_digest_is_cached_and_follows_every_edit(tmp_path, monkeypatch):
    f = tmp_path / "a.jsonl"
    f.write_text("abc\n")
    first = file_digest(f)
    calls = []
    real = fingerprint._sha256
    monkeypatch.setattr(fingerprint, "_sha256", lambda p: calls.append(p) or real(p))
    assert file_digest(f) == first and calls == []  # cached: not read again
    # Same size, mtime set back: the ctime still moves, so the edit is seen.
    st = f.stat()
    f.write_text("abd\n")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert file_digest(f) != first and len(calls) == 1
    f.write_text("")  # emptied
    assert file_digest(f) != first
    f.unlink()
    with pytest.raises(FileNotFoundError, match="a.jsonl"):
        file_digest(f)


def test_an_unwritable_cache_only_costs_time(tmp_path, monkeypatch):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    f = tmp_path / "a.txt"
    f.write_text("x")
    assert file_digest(f) == file_digest(f)


def test_directory_digest_covers_the_files_loaders_read(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "model.safetensors").write_bytes(b"weights")
    base = directory_digest(d)
    (d / "README.md").write_text("a model card")
    (d / ".hidden").write_text("editor state")
    assert directory_digest(d) == base  # nothing a loader reads
    (d / "model.safetensors").write_bytes(b"weightz")
    assert directory_digest(d) != base
    (d / "sub").mkdir()
    (d / "sub" / "x").write_text("1")
    changed = directory_digest(d)
    assert directory_digest(d, recursive=True) != changed  # data folders keep splits in subfolders
