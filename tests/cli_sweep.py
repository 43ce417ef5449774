"""A `rlhf-scaling -m` sweep run as the user runs it, for the tests that check a whole sweep's output.

A plain module with a unique name (as tests/ppo_job.py), so test files in any folder import it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Optional


def run_sweep(tmp_path: Path, *overrides: str, timeout: int = 600, env: Optional[dict] = None) -> Path:
    """Run `rlhf-scaling -m <overrides>` from `tmp_path` (in `env`, default this process's), its runs in
    `tmp_path/sweep` and its artifacts in `tmp_path/artifacts`; assert that it exits 0 (else show the end
    of its output); the sweep folder."""
    sweep_dir = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "rlhf_scaling.cli", "-m", *overrides, f"hydra.sweep.dir={sweep_dir}",
           f"artifacts_dir={tmp_path / 'artifacts'}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return sweep_dir
