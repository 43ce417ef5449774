"""The GPU benchmark (benchmarks/gpu/) between the rare runs on a GPU: its CPU smoke mode runs every
section's code path through the entry script, exactly as a GPU run would but on tiny shapes, and
writes a report and a JSON with every section's figures; sections fail soft; the wheel list is exact."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SECTIONS = ["1_tests", "1_deepspeed_rm", "2_rm_mfu", "3_ppo", "4_bon", "5_study"]


def _driver():
    """benchmarks/gpu/run.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("gpu_bench_run", REPO / "benchmarks" / "gpu" / "run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _trl_importable() -> bool:
    try:
        from trl.experimental.ppo import PPOTrainer  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """`bash benchmarks/gpu/run.sh --smoke --out DIR`, the user's command, once for this module."""
    out = tmp_path_factory.mktemp("gpu_bench")
    env = {**os.environ, "PYTHON": sys.executable}
    # DeepSpeed's CPU comm op is JIT-built once per machine (`make ds-ops`), as for the other DeepSpeed tests.
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "rlhf-scaling" / "torch_extensions"))
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu" / "run.sh"), "--smoke", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = json.loads((out / "gpu_figures.json").read_text())
    return figures, (out / "gpu_report.md").read_text(), (out / "gpu_log.txt").read_text()


def check_tests(f: dict) -> None:
    assert f["failed"] == f["errors"] == 0
    assert f["skipped"] >= 1 and "test_zero3_bf16_ppo_on_gpu" in " ".join(f["tests"])  # CUDA-only: skipped on CPU


def check_deepspeed_rm(f: dict) -> None:
    assert set(f["profiles"]) == {"zero2", "zero3"}
    for profile in f["profiles"].values():
        assert profile["within_tolerance"] is True and profile["steps"] == profile["plain_steps"] == 3
        assert profile["rm/loss"]["first_plain"] > 0


def check_rm_mfu(f: dict) -> None:
    (shape,) = f["shapes"]
    assert shape["flops_6NT"] == 6 * shape["n_params_non_embedding"] * shape["tokens_per_step"]
    assert shape["flops_6NT_attn"] > shape["flops_6NT"]
    assert [s["side"] for s in shape["sides"]] == ["ours", "ours_padded", "hf_loop"]
    for side in shape["sides"]:
        assert side["step_s"] > 0 and side["mfu_measured"] > 0
        assert side["tokens_per_s"] == pytest.approx(shape["tokens_per_step"] / side["step_s"])


def check_ppo(f: dict) -> None:
    for side in ("ours", "ours_shared"):
        m = f["sides"][side]
        assert m["wall"] > 0 and m["tokens"] > 0 and min(m["generate"], m["score"], m["train"]) > 0
    if _trl_importable():
        assert f["peer"].startswith("trl ") and f["sides"]["trl"]["wall"] > 0
    else:  # the peer cannot run here: the report must say so, not leave it out silently
        assert f["peer"].startswith("NOT RUN") and "trl" not in f["sides"]


def check_bon(f: dict) -> None:
    assert f["estimator_numpy_s"] > 0 and f["estimator_device_max_abs_diff"] < 1e-9
    assert f["sampling"]["ours_tokens_per_s"] > 0 and f["sampling"]["plain_tokens_per_s"] > 0


def check_study(f: dict) -> None:
    assert f["completed"] and f["wall_s"] > 0 and f["metrics_files"] >= 1 and f["figures"] >= 1


CHECKS = {"1_tests": check_tests, "1_deepspeed_rm": check_deepspeed_rm, "2_rm_mfu": check_rm_mfu, "3_ppo": check_ppo,
          "4_bon": check_bon, "5_study": check_study}


@pytest.mark.slow
@pytest.mark.distributed
def test_smoke_runs_every_section_to_numbers(smoke):
    figures, _, log = smoke
    sections = figures["sections"]
    assert list(sections) == SECTIONS
    for name, section in sections.items():
        assert section["status"] == "ok", f"{name}: {json.dumps(section)[:2000]}\n--- log tail\n{log[-4000:]}"
        for run in section["runs"].values():
            CHECKS[name](run["figures"])


@pytest.mark.slow
@pytest.mark.distributed
def test_smoke_report_has_the_environment_and_every_section(smoke):
    figures, report, _ = smoke
    env = figures["environment"]
    assert env["torch"] and env["python"] and "cuda" in env and "driver" in env and env["device"]
    assert f"torch {env['torch']}" in report and "CUDA" in report and "driver" in report
    for name in SECTIONS:
        assert f"## {name}:" in report
    assert "ERROR" not in report and "could not render" not in report
    assert "6*N*T" in report  # the FLOPs formula is stated
    if not _trl_importable():
        assert "peer: NOT RUN" in report


def test_a_failing_or_hanging_run_is_recorded_and_the_next_one_runs(tmp_path):
    run = _driver()
    fails = run.Run("fails", [sys.executable, "-c", "import sys; sys.exit(3)"], tmp_path / "none.json")
    hangs = run.Run("hangs", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "none.json")
    (tmp_path / "ok.json").write_text('{"x": 1}')
    works = run.Run("works", [sys.executable, "-c", "pass"], tmp_path / "ok.json")
    section = run.Section("s", "a section", 3.0, [fails, works, hangs])
    with open(tmp_path / "log.txt", "w") as log:
        res = run.run_section(section, deadline=float("inf"), log=log)
    runs = res["runs"]
    assert runs["fails"]["status"] == "error" and "exit code 3" in runs["fails"]["error"]
    assert runs["works"]["status"] == "ok" and runs["works"]["figures"] == {"x": 1}  # ran after the failure
    assert runs["hangs"]["status"] == "timeout" and runs["hangs"]["seconds"] < 10  # stopped at the budget
    assert res["status"] == "error"


def test_without_a_gpu_the_full_run_refuses_and_says_what_to_do(tmp_path):
    if subprocess.run([sys.executable, "-c", "import torch; assert not torch.cuda.is_available()"]).returncode:
        pytest.skip("a CUDA device is visible")
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu" / "run.sh"), "--out", str(tmp_path)],
                          cwd=REPO, env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0 and "no CUDA device visible" in proc.stderr and "--smoke" in proc.stderr


def test_wheel_list_pins_every_package_exactly_once():
    lines = [line.split("#")[0].strip() for line in (REPO / "benchmarks" / "gpu" / "wheels.txt").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    names = [re.fullmatch(r"([A-Za-z0-9_.-]+)==[0-9][A-Za-z0-9.]*", line).group(1).lower() for line in lines]
    assert len(names) == len(set(names))  # two versions of one package would stop the offline install
    assert {"hydra-core", "omegaconf", "antlr4-python3-runtime", "deepspeed", "trl", "datasets"} <= set(names)
    peer = (REPO / "benchmarks" / "requirements-peer-ppo.txt").read_text()
    trl_pin = next(line for line in lines if line.startswith("trl=="))
    assert trl_pin in peer  # the TRL the PPO benchmark is pinned to
