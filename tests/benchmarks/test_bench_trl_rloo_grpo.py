"""benchmarks/bench_trl_rloo_grpo.py between its peer runs: the user's command with --no-peer on a tiny
batch runs our three sides (PPO with its critic, RLOO, GRPO) through the real stage, each in its own child
process, and reports them; nothing is timed against a target here (tests never time anything)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_no_peer_runs_our_three_methods_at_equal_rollouts(tmp_path):
    out = tmp_path / "summary.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_trl_rloo_grpo.py"), "--no-peer", "--prompts", "2",
         "--samples", "2", "--new-tokens", "4", "--iters", "1", "--warmup", "1", "--sft-steps", "5",
         "--comparisons", "96", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["peer"] == "NOT RUN (--no-peer)"
    assert "TRL (the peer) was NOT run: --no-peer" in proc.stdout
    sides = summary["sides"]
    assert set(sides) == {"ours_ppo", "ours_rloo", "ours_grpo"}  # no TRL side, no failed side
    for m in sides.values():
        assert m["n"] == 1 and m["wall"] > 0 and m["tokens"] > 0 and min(m["generate"], m["score"], m["train"]) > 0
        assert m["peak_rss_mb"] >= m["base_rss_mb"] > 0
    # The method axis is really applied: without a critic an iteration counts fewer FLOPs per rollout token.
    per_token = {role: m["flops"] / m["tokens"] for role, m in sides.items()}
    assert per_token["ours_rloo"] < per_token["ours_ppo"] and per_token["ours_grpo"] < per_token["ours_ppo"]
    assert set(summary["ratios_iterations_per_s"]) == {"ours_rloo_vs_ours_ppo", "ours_grpo_vs_ours_ppo"}
    assert "ours rloo vs ours ppo:" in proc.stdout and "x counted FLOPs per iteration" in proc.stdout
