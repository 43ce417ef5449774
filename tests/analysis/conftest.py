"""A synthetic runs folder for the analysis tests, written file by file as the tracker would
(config.json, metrics.jsonl, summary.json, status.json, env.json), with curves generated from the
Gao et al. forms with known coefficients that are exactly log-linear in the RM size.

    <root>/study/        rm_<name>, bon_<name>, ppo_<name> for 3 RM sizes (Gao Fig. 1 and 3)
    <root>/data_size/    RM jobs over 3 comparison budgets x 2 RM sizes (RM accuracy)
    <root>/diversity/    BoN jobs over K at two fixed budgets (diversity lines and heatmap)
    <root>/samples_per_prompt/  PPO jobs over rollouts per prompt
Each group's folder is named after its W&B group (config experiment), so a W&B run's
"<group>/<name>" id equals the local run id.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from rlhf_scaling.curves import bon_form, rl_form

RM_SIZES = {"tiny-xs": 1e5, "tiny-s": 1e6, "tiny-m": 1e7}
# coefficient(N) = intercept + slope * ln N, exactly (so the Fig. 3 fit recovers slope and intercept)
LAWS = {("bon", "alpha"): (0.20, 0.030), ("bon", "beta"): (0.40, -0.015),
        ("ppo", "alpha"): (0.50, 0.040), ("ppo", "beta"): (0.60, -0.020)}
BON_GRID = [1, 2, 4, 8, 16, 32, 64, 128, 256]
# the diversity sweep's (K, comparison budget): K = 2, 3, 4, 6 at 4200 and K = 2, 4 at 2100 (two budgets: the heatmap)
DIVERSITY = [(2, 4200), (3, 4200), (4, 4200), (6, 4200), (2, 2100), (4, 2100)]
PPO_STEPS = 40
TRUNCATED_RUN = "study/ppo_tiny-m"  # its metrics.jsonl ends in a line cut by a kill


def coefficient(kind: str, name: str, n_params: float) -> float:
    intercept, slope = LAWS[(kind, name)]
    return intercept + slope * math.log(n_params)


def _config(experiment: str, stage: str, rm: str, *, k: int = 4, budget: int = 1536, spp: int = 2,
            n_max: int = 256, seed: int = 0) -> dict:
    return {"experiment": experiment, "seed": seed, "stage": {"name": stage},
            "policy": {"name": "tiny-xs", "source": "tiny"},
            "rm": {"name": rm, "source": "tiny", "n_params": RM_SIZES[rm] if rm != "tiny-m" else None},
            "data": {"responses_per_prompt": k, "comparison_budget": budget},
            "bon": {"n_max": n_max, "n_grid": []}, "ppo": {"samples_per_prompt": spp, "steps": PPO_STEPS, "prompts_per_step": 16},
            "tracking": {"mode": "disabled", "group": None, "tags": ["synthetic"]}}


def write_run(folder: Path, config: dict, records: list, summary: dict, wandb_id: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    with open(folder / "metrics.jsonl", "w") as fh:
        for step, record in enumerate(records):
            fh.write(json.dumps({"_step": step, "_time": 1.7e9 + step, **record}) + "\n")
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    (folder / "status.json").write_text(json.dumps({"status": "completed", "stage": config["stage"]["name"],
                                                    "error": None, "wandb_run_id": wandb_id}))
    (folder / "env.json").write_text(json.dumps({"git_sha": "0" * 40, "python": "3.x"}))


def rm_records(accuracy: float) -> list:
    return [{"rm/step": s, "rm/loss": 0.7 - 0.01 * s, **({"rm/val_accuracy": accuracy, "rm/val_loss": 0.6}
                                                          if s == 3 else {})} for s in range(1, 4)]


def bon_records(n_params: float) -> list:
    a, b = coefficient("bon", "alpha", n_params), coefficient("bon", "beta", n_params)
    out = []
    for n in BON_GRID:
        kl = math.log(n) - (n - 1) / n
        d = math.sqrt(kl)
        gain = float(bon_form(d, a, b))
        out.append({"bon/n": n, "bon/kl": kl, "bon/sqrt_kl": d, "bon/gold": 1.0 + gain, "bon/gold_gain": gain,
                    "bon/proxy": 0.5 + 0.8 * d, "bon/proxy_gain": 0.8 * d})
    return out


def ppo_records(n_params: float, scale: float = 1.0) -> list:
    a, b = coefficient("ppo", "alpha", n_params), coefficient("ppo", "beta", n_params)
    out = []
    for step in range(PPO_STEPS):
        d = 0.1 * step
        out.append({"ppo/step": step, "ppo/sqrt_kl": d, "ppo/kl": d * d, "ppo/proxy": 0.2 + scale * d,
                    "ppo/gold": 2.0 + scale * float(rl_form(d, a, b)), "ppo/entropy": 1.0 - 0.01 * step})
    return out


def build(root: Path) -> Path:
    ids = iter(f"wb{i:04d}" for i in range(1000))
    for rm, n_params in RM_SIZES.items():
        accuracy = 0.55 + 0.02 * math.log10(n_params)
        write_run(root / "study" / f"rm_{rm}", _config("study", "rm", rm), rm_records(accuracy),
                  {"rm/val_accuracy": accuracy, "rm/n_params": n_params, "rm/artifact": f"/artifacts/rm/{rm}"},
                  next(ids))
        bon = bon_records(n_params)
        write_run(root / "study" / f"bon_{rm}", _config("study", "bon", rm), bon,
                  {"bon/best_gold": max(r["bon/gold"] for r in bon), "bon/n_max": 256}, next(ids))
        ppo = ppo_records(n_params)
        write_run(root / "study" / f"ppo_{rm}", _config("study", "ppo", rm), ppo,
                  {"ppo/final_gold": ppo[-1]["ppo/gold"], "ppo/peak_gold": max(r["ppo/gold"] for r in ppo)},
                  next(ids))
    for i, (rm, budget) in enumerate((rm, b) for rm in ("tiny-xs", "tiny-s") for b in (768, 1536, 3072)):
        accuracy = 0.5 + 0.03 * math.log2(budget / 384) + 0.02 * math.log10(RM_SIZES[rm])
        write_run(root / "data_size" / f"{i}_budget={budget},rm={rm}", _config("data_size", "rm", rm, budget=budget),
                  rm_records(accuracy), {"rm/val_accuracy": accuracy, "rm/n_params": RM_SIZES[rm],
                                         "rm/artifact": f"/artifacts/rm/{rm}-{budget}"}, next(ids))
    for i, (k, budget) in enumerate(DIVERSITY):
        bon = bon_records(RM_SIZES["tiny-s"] * k * budget / 4200)
        write_run(root / "diversity" / f"{i}_K={k},budget={budget}", _config("diversity", "bon", "tiny-s", k=k,
                                                                             budget=budget), bon,
                  {"bon/best_gold": max(r["bon/gold"] for r in bon)}, next(ids))
    for i, spp in enumerate((1, 2, 4)):
        ppo = ppo_records(RM_SIZES["tiny-s"], scale=1 + 0.1 * spp)
        write_run(root / "samples_per_prompt" / f"{i}_spp={spp}", _config("samples_per_prompt", "ppo", "tiny-s", spp=spp),
                  ppo, {"ppo/final_gold": ppo[-1]["ppo/gold"], "ppo/peak_gold": max(r["ppo/gold"] for r in ppo)},
                  next(ids))
    with open(root / TRUNCATED_RUN / "metrics.jsonl", "a") as fh:
        fh.write('{"_step": 40, "_time": 1.7e9, "ppo/st')  # a line cut by a kill
    return root


N_RUNS = 9 + 6 + len(DIVERSITY) + 3


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory) -> Path:
    """The synthetic runs folder (read-only for the tests)."""
    return build(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="session")
def runs_df(runs_root):
    """Its runs table, loaded once."""
    import warnings

    from rlhf_scaling.analysis.runs import load_local_runs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the truncated line; test_runs checks the warning itself
        return load_local_runs(runs_root)


@pytest.fixture(scope="session")
def synthetic():
    """This module (RM_SIZES, LAWS, coefficient, N_RUNS, ...), for the tests' expected values."""
    import sys

    return sys.modules[__name__]


# ----------------------------------------------------------------------------- real runs

# Tiny settings for real jobs run through the CLI: a few seconds each on one CPU core.
REAL_SMALL = ["progress=false", "device=cpu", "stage.build_upstream=true", "model@policy=tiny-xs", "sft.steps=30",
              "sft.n_demos=200", "data.comparison_budget=96", "data.n_eval_prompts=16", "rm_train.epochs=1",
              "rm_train.batch_size=8", "experiment=real"]
# The sweeps behind the real runs folder: (folder, overrides); each a `rlhf-scaling -m` command.
REAL_SWEEPS = [
    # RM size x comparisons x RM seed, K = 4 with the K-wise loss: 8 RM jobs
    ("sizes", ["stage=rm", "model@rm=tiny-xs,tiny-s", "data.comparison_budget=96,192", "rm_train.seed=0,1"]),
    # K = 2 with each loss, at the same budget: 2 RM jobs (different losses must never share a point)
    ("losses", ["stage=rm", "model@rm=tiny-xs", "data.responses_per_prompt=2", "rm_train.loss=bt,kwise"]),
    # the first RM again (an RM job that reuses the artifact, logging no training) and best-of-n on it
    ("reuse", ["stage=rm,bon", "model@rm=tiny-xs", "experiment=reuse", "bon.n_max=4", "bon.n_eval_prompts=4"]),
]


@pytest.fixture(scope="session")
def real_runs_root(tmp_path_factory) -> Path:
    """A runs folder written by real `rlhf-scaling -m` jobs (the tracker's own records): see REAL_SWEEPS.
    The first two sweeps start together (they share the SFT policy, built once under its artifact
    lock); the third reuses the first's RM, so it starts after them. Built once per test run, also
    under pytest-xdist (tests/built_once.py)."""
    import os
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    from built_once import built_once

    cli = Path(sys.executable).parent / "rlhf-scaling"

    def build(root: Path) -> None:
        def sweep(folder_overrides) -> None:
            folder, overrides = folder_overrides
            proc = subprocess.run([str(cli), "-m", *REAL_SMALL, f"artifacts_dir={root / 'artifacts'}",
                                   f"hydra.sweep.dir={root / 'runs' / folder}", *overrides],
                                  cwd=root, capture_output=True, text=True, timeout=600, env=os.environ.copy())
            assert proc.returncode == 0, proc.stderr[-3000:]

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(sweep, REAL_SWEEPS[:2]))
        sweep(REAL_SWEEPS[2])

    return built_once(tmp_path_factory, "real", build) / "runs"
