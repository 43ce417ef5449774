"""Content identity of external inputs (data files, local model and data directories), for artifact keys.

An artifact built from a user's file must be rebuilt when the file's content changes, whatever its
path, and reused when only the path changes. So inputs are keyed by content: a file by the SHA-256
of its bytes, a directory by the hashes of its files (hub models by their commit: models.py).

Hashing a multi-GB checkpoint takes a while, so each file's hash is computed once and cached in
$XDG_CACHE_HOME/rlhf-scaling/content-hashes/ (default ~/.cache), one small JSON per file, valid
while the file's (size, mtime_ns, ctime_ns, inode) stay the same: an edit in place, a truncation or
a replacement changes them and the file is hashed again. The cache is best effort: where it cannot
be written, the hash is recomputed on every use.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterator

CHUNK = 1 << 20  # bytes read per hashing step


def cache_dir() -> Path:
    """Where file hashes are cached (per user and machine, outside any run or artifact folder)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rlhf-scaling" / "content-hashes"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def file_digest(path) -> str:
    """SHA-256 (hex) of a file's bytes, cached by (absolute path, size, mtime_ns, ctime_ns, inode).

    A missing path is FileNotFoundError naming it (a one-line error at the CLI)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"input file not found (was it moved or deleted?): {path}")
    resolved = path.resolve()
    st = resolved.stat()  # taken before hashing: an edit during hashing leaves a stale stamp, not a wrong hash
    stamp = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    entry = cache_dir() / (hashlib.sha256(str(resolved).encode()).hexdigest()[:32] + ".json")
    try:
        cached = json.loads(entry.read_text())
        if cached["path"] == str(resolved) and cached["stamp"] == stamp:
            return cached["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest = _sha256(resolved)
    try:  # write-then-rename, so a concurrent reader never sees half an entry
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_name(f".{entry.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"path": str(resolved), "stamp": stamp, "sha256": digest}))
        os.replace(tmp, entry)
    except OSError:
        pass
    return digest


def _files(directory: Path, recursive: bool) -> Iterator[Path]:
    """Regular files of `directory` (or its whole tree), skipping hidden files and folders
    (.git, .cache, editor droppings) and markdown (model cards), which no loader reads."""
    entries = directory.rglob("*") if recursive else directory.iterdir()
    for p in entries:
        rel = p.relative_to(directory)
        if any(part.startswith(".") for part in rel.parts) or p.suffix.lower() == ".md":
            continue
        if p.is_file():
            yield p


def directory_digest(directory, recursive: bool = False, select=None) -> str:
    """SHA-256 over the sorted (relative path, file digest) of a directory's files.

    recursive=False: the top-level files only, which is what from_pretrained reads from a model
    folder (config, tokenizer, weights, remote code); recursive=True for data folders (a
    save_to_disk DatasetDict keeps each split in a subfolder). select: file name -> keep it (None: all)."""
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise FileNotFoundError(f"input directory not found: {directory}")
    files = [p for p in _files(directory, recursive) if select is None or select(p.name)]
    listing = sorted((p.relative_to(directory).as_posix(), file_digest(p)) for p in files)
    if not listing:
        raise FileNotFoundError(f"input directory is empty: {directory}")
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def path_digest(path, recursive: bool = True) -> str:
    """file_digest of a file or directory_digest of a folder (FileNotFoundError naming it if neither)."""
    p = Path(path).expanduser()
    return directory_digest(p, recursive) if p.is_dir() else file_digest(p)


# Config keys that may name a local file or folder the run reads: its content, not its path, is
# part of the run's identity (tracking.run_id), so an edited data file or re-saved model is a new run.
INPUT_KEYS = {"task.path": True, "task.prompts_path": True,  # key -> hash sub-folders too
              "policy.name_or_path": False, "rm.name_or_path": False, "gold.name_or_path": False}


def input_digests(config) -> dict:
    """{config key: content digest} for each INPUT_KEYS value of a resolved config (nested dicts)
    that is an existing local file or folder; hub ids and unset keys are left out (artifact keys
    resolve hub revisions), and a missing path is left to the stage, which names it."""
    digests = {}
    for key, recursive in INPUT_KEYS.items():
        value = config
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, str) and value and Path(value).expanduser().exists():
            digests[key] = path_digest(value, recursive=recursive)
    return digests
