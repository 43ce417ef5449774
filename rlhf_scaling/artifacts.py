"""Content-addressed artifacts shared across jobs and sweeps: SFT policies, preference data, RMs.

An artifact's key is a hash of the config that produced it (its "recipe"), so two jobs that ask
for the same thing get the same folder and build it once:

    <root>/<kind>/<name>-<hash12>/          complete artifact (has COMPLETE, recipe.json)
    <root>/<kind>/<name>-<hash12>.partial/  being built; holds resumable checkpoints
    <root>/<kind>/<name>-<hash12>.lock      flock held by the one builder

Readers only ever see a folder renamed into place after its builder finished (atomic rename),
so a crash mid-write never leaves a readable partial artifact.
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


def is_plain_name(name: str) -> bool:
    """A name usable as ONE folder name: no path separators, NUL, '..', a lone '.' or a leading '~',
    so a name from a config can never point outside the folder it is joined to."""
    return bool(name) and name != "." and ".." not in name and not name.startswith("~") \
        and not any(c in name for c in "/\\\0")


def make_artifact(root: str | Path, kind: str, name: str, recipe: dict) -> Artifact:
    """An Artifact under `root`; `name` must be a plain folder name (no escaping the root)."""
    if not is_plain_name(name):
        raise ValueError(f"artifact name {name!r} must be a plain folder name")
    return Artifact(Path(root).resolve(), kind, name, recipe)


@contextlib.contextmanager
def building(artifact: Artifact) -> Iterator[Path]:
    """Hold the artifact's lock and yield its `.partial` folder; on success rename it into place.

    If another job built it while we waited for the lock, yields None: the caller just reads it.
    The partial folder survives a crash so the next builder resumes from its checkpoints.
    """
    artifact.path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = artifact.path.with_name(artifact.key + ".lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if artifact.exists():
                yield None
                return
            artifact.partial.mkdir(parents=True, exist_ok=True)
            yield artifact.partial
            (artifact.partial / "recipe.json").write_text(json.dumps(artifact.recipe, indent=2, sort_keys=True, default=str))
            (artifact.partial / COMPLETE).write_text("ok")
            if artifact.path.exists():  # a stale incomplete folder from an older layout
                shutil.rmtree(artifact.path)
            os.replace(artifact.partial, artifact.path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
