"""Build a session fixture's folder once per test run, also when pytest-xdist runs the suite on
several workers (each worker is its own session, so a plain session fixture would build it once per
worker: the same minutes of CPU twice, on a 2-core machine).

The pattern of pytest-xdist's docs ("Making session-scoped fixtures execute only once"): the first
worker to ask builds the folder under a file lock in the run's shared temporary folder; the others
wait on the lock and then read what it built. A plain module with a unique name, so conftest.py files
in any test folder import it unambiguously (see tests/ppo_job.py).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

from filelock import FileLock


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """The folder `<shared tmp>/<name>`, filled by `build(folder)` exactly once per test run.

    Under xdist the shared tmp is the parent of the worker's basetemp (one per `pytest` run, common to
    all its workers); without xdist it is the session's own basetemp. A build that raised leaves no
    `.built` mark, so the next worker to ask rebuilds from an empty folder and raises the same error.
    """
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder, done = shared / name, shared / f"{name}.built"
    with FileLock(str(shared / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            build(folder)
            done.touch()
    return folder
