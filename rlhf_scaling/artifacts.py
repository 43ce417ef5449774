"""Content-addressed artifacts shared across jobs and sweeps: SFT policies, preference data, RMs.

An artifact's key is a hash of the config that produced it (its "recipe"), so two jobs that ask
for the same thing get the same folder and build it once:

    <root>/<kind>/<name>-<hash12>/          complete artifact (has COMPLETE, recipe.json)
    <root>/<kind>/<name>-<hash12>.partial/  being built; holds resumable checkpoints
    <root>/<kind>/<name>-<hash12>.lock      flock held by the one builder (while it builds)

Readers only ever see a folder renamed into place after its builder finished (atomic rename),
so a crash mid-write never leaves a readable partial artifact. A build that fails before it
wrote anything leaves nothing behind: its empty `.partial/` folder is removed, and every lock
file is removed by its holder on release (`locked`: waiters check they locked the file that is
still at the path, so removing it is race-free).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from rlhf_scaling.tracking import strict_json

COMPLETE = "COMPLETE"


class MissingArtifact(FileNotFoundError):
    """An upstream artifact is not built; the message names the command that builds it."""


def recipe_hash(recipe: dict) -> str:
    """12 hex chars of SHA-256 over the canonical JSON of the recipe."""
    blob = json.dumps(recipe, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Artifact:
    """One artifact's location; `path` exists (with COMPLETE) only once built."""

    root: Path
    kind: str  # "sft" | "data" | "rm"
    name: str  # human-readable part, e.g. the model name
    recipe: dict

    @property
    def key(self) -> str:
        return f"{self.name}-{recipe_hash(self.recipe)}"

    @property
    def path(self) -> Path:
        return self.root / self.kind / self.key

    @property
    def partial(self) -> Path:
        return self.path.with_name(self.key + ".partial")

    def exists(self) -> bool:
        return (self.path / COMPLETE).is_file()

    def require(self, build_command: str) -> Path:
        """The complete artifact's folder, or MissingArtifact naming how to build it."""
        if not self.exists():
            raise MissingArtifact(
                f"missing {self.kind} artifact {self.key} under {self.root}; build it with: {build_command}"
            )
        return self.path


# Longest name (in UTF-8 bytes) joined into a path: file systems allow 255 bytes per component,
# and artifact folders add "-<hash12>.partial" (21) to it.
MAX_NAME_BYTES = 128


def is_plain_name(name: str) -> bool:
    """A name usable as ONE folder name: no path separators, NUL, '..', a lone '.' or a leading '~',
    at most MAX_NAME_BYTES long, so a name from a config can never point outside the folder it is
    joined to, nor fail as too long for the file system."""
    return bool(name) and name != "." and ".." not in name and not name.startswith("~") \
        and not any(c in name for c in "/\\\0") and len(name.encode("utf-8", "surrogatepass")) <= MAX_NAME_BYTES


def make_artifact(root: str | Path, kind: str, name: str, recipe: dict) -> Artifact:
    """An Artifact under `root`; `name` must be a plain folder name (no escaping the root)."""
    if not is_plain_name(name):
        raise ValueError(f"artifact name {name!r} must be a plain folder name")
    return Artifact(Path(root).resolve(), kind, name, recipe)


class LockHeld(RuntimeError):
    """`locked(..., wait=False)` found the lock held by another process."""


@contextlib.contextmanager
def locked(path: Path, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive flock on the file `path` (created if absent); remove the file on release.

    Removing a lock file is safe only because every taker checks, once it holds the lock, that
    the file it locked is still the one at `path` (same inode); a taker that locked a file its
    previous holder has since removed tries again. wait=False raises LockHeld instead of waiting."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # its folder was removed by a failed build that found it empty
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            raise LockHeld(str(path)) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # its holder removed it while we waited: lock the current file
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        try:
            os.unlink(path)  # while still holding the lock: no other taker can hold this inode
        except FileNotFoundError:
            pass
        os.close(fd)  # releases the flock


@contextlib.contextmanager
def building(artifact: Artifact) -> Iterator[Path]:
    """Hold the artifact's lock and yield its `.partial` folder; on success rename it into place.

    If another job built it while we waited for the lock, yields None: the caller just reads it.
    The partial folder survives a crash so the next builder resumes from its checkpoints; a
    failure before anything was written there removes it (nothing to resume, nothing left behind),
    and so the store's folders this build created, when they are empty.
    """
    created = [d for d in (artifact.path.parent, artifact.root) if not d.exists()]
    artifact.path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with locked(artifact.path.with_name(artifact.key + ".lock")):
            if artifact.exists():
                yield None
                return
            artifact.partial.mkdir(parents=True, exist_ok=True)
            try:
                yield artifact.partial
            except BaseException:
                with contextlib.suppress(OSError):
                    artifact.partial.rmdir()  # only if empty: checkpoints stay for the next attempt
                raise
            (artifact.partial / "recipe.json").write_text(strict_json(artifact.recipe, indent=2, sort_keys=True))
            (artifact.partial / COMPLETE).write_text("ok")
            if artifact.path.exists():  # a stale incomplete folder from an older layout
                shutil.rmtree(artifact.path)
            os.replace(artifact.partial, artifact.path)
    except BaseException:
        for folder in created:  # rmdir: only if empty (another job's lock or artifact keeps it)
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
