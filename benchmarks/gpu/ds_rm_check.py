"""DeepSpeed ZeRO-2 and ZeRO-3 RM training on ONE device against plain PyTorch, same seed and data.

    python benchmarks/gpu/ds_rm_check.py --device cuda --json ds_rm.json                 # bf16 (GPU)
    python benchmarks/gpu/ds_rm_check.py --device cpu --rm-model tiny-s --epochs 1 --json x.json  # smoke

The plain run is the `rm` stage in this process with rm_train.precision=bf16 (autocast, fp32 master
weights); each ZeRO run is the CLI (`python -m rlhf_scaling.cli ... deepspeed=zero2|zero3`), one process,
on a copy of the same upstream artifacts (SFT policy, preference data), so only the RM training differs.
bf16 under DeepSpeed keeps the weights in bf16 (fp32 master copy in the optimizer) while autocast keeps
them in fp32, so the curves agree to bf16 tolerance, not bitwise: TOL below. With --precision fp32 the
runs must agree to rounding (tests/test_distributed.py's tolerance). Writes the largest differences and
pass/fail per profile.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# As tests/test_distributed.py: 41 prompts x K=4, global micro-batch 8, 2 micro-batches per step, 3 epochs.
UPSTREAM = ["stage=rm", "progress=false", "model@policy=tiny-xs", "sft.steps=20", "sft.n_demos=200",
            "sft.batch_size=16", "data.responses_per_prompt=4", "data.comparison_budget=246",
            "data.n_eval_prompts=16"]
RM = [*UPSTREAM, "rm_train.epochs=3", "rm_train.batch_size=8", "rm_train.grad_accum=2",
      "rm_train.eval_every=3", "rm_train.checkpoint_every=1000"]
KEYS = ("rm/loss", "rm/grad_norm", "rm/val_loss", "rm/val_accuracy")
# Tolerances as (relative, absolute). FIRST: the first optimizer step (loss and gradient norm), where
# both runs hold the same weights and differ only by rounding: bf16 has an 8-bit mantissa (2^-8 = 0.4%
# per op). CURVE: every logged loss and held-out metric, after the bf16 weight copies (DeepSpeed) and the
# fp32 weights (autocast) have drifted apart for a few steps; measured on CPU (tiny-s, 9 steps): train
# loss within 7%, val loss within 2.4%, val accuracy within 0.016, gradient norm within 12% (reported
# only: it is the most rounding-sensitive figure). fp32: tests/test_distributed.py's.
TOL = {"bf16": {"first": (0.02, 1e-3), "curve": (0.1, 0.01), "rm/val_accuracy": (0.0, 0.05)},
       "fp32": {"first": (1e-4, 1e-6), "curve": (1e-4, 1e-6), "rm/val_accuracy": (1e-4, 1e-6)}}


def curve(run_dir: Path, key: str) -> list:
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r[key] for r in recs if key in r]


def within(a: float, b: float, tol) -> bool:
    rel, abs_ = tol
    return abs(a - b) <= abs_ + rel * abs(a)


def compare(plain: Path, ds: Path, precision: str) -> dict:
    """Largest absolute and relative difference per key, the first step's, and whether all are within TOL."""
    tol = TOL[precision]
    out = {"steps": len(curve(ds, "rm/step")), "plain_steps": len(curve(plain, "rm/step"))}
    ok = out["steps"] == out["plain_steps"] > 0
    for key in KEYS:
        a, b = curve(plain, key), curve(ds, key)
        if len(a) != len(b) or not a:
            out[key] = {"error": f"{len(b)} values vs {len(a)} in the plain run"}
            ok = False
            continue
        diffs = [abs(x - y) for x, y in zip(a, b)]
        out[key] = {"first_plain": a[0], "first_zero": b[0], "max_abs_diff": max(diffs),
                    "max_rel_diff": max(d / max(abs(x), 1e-12) for d, x in zip(diffs, a)),
                    "final_plain": a[-1], "final_zero": b[-1]}
        if key in ("rm/loss", "rm/grad_norm"):
            ok &= within(a[0], b[0], tol["first"])
        if key != "rm/grad_norm":
            ok &= all(within(x, y, tol.get(key, tol["curve"])) for x, y in zip(a, b))
    out["within_tolerance"] = bool(ok)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--rm-model", default="tiny-l")
    parser.add_argument("--epochs", type=int, default=3, help="RM epochs (3 optimizer steps each)")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()

    from rlhf_scaling.cli import compose
    from rlhf_scaling.stages import data, rm, sft
    from rlhf_scaling.stages.common import open_tracker

    root = Path(tempfile.mkdtemp(prefix="ds_rm_"))
    common = [*RM, f"rm_train.epochs={args.epochs}", f"model@rm={args.rm_model}", f"device={args.device}", f"rm_train.precision={args.precision}"]
    start = time.perf_counter()
    cfg = compose([*common, f"artifacts_dir={root / 'plain'}"])
    for name, module in (("sft", sft), ("data", data), ("rm", rm)):
        with open_tracker(cfg, root / f"plain_{name}", name) as tracker:
            module.run(cfg, tracker)
    res = {"device": args.device, "precision": args.precision, "rm_model": args.rm_model,
           "tolerance": TOL[args.precision], "plain_s": time.perf_counter() - start, "profiles": {}}
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SLURM_") and k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    # DeepSpeed's CPU comm op is JIT-built once per machine (the folder `make ds-ops` fills); unused on CUDA.
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "rlhf-scaling" / "torch_extensions"))
    for profile in ("zero2", "zero3"):
        store, run_dir = root / profile, root / f"{profile}_run"
        shutil.copytree(root / "plain", store, ignore=shutil.ignore_patterns("rm"))
        bf16 = [] if args.precision == "bf16" else ["deepspeed.bf16=false"]
        cmd = [sys.executable, "-m", "rlhf_scaling.cli", *common, f"deepspeed={profile}", *bf16,
               f"artifacts_dir={store}", f"hydra.run.dir={run_dir}"]
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if proc.returncode:
            print(proc.stdout[-3000:], proc.stderr[-5000:], file=sys.stderr)
            res["profiles"][profile] = {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-400:]}", "seconds": seconds}
            continue
        res["profiles"][profile] = {"seconds": seconds, **compare(root / "plain_rm", run_dir, args.precision)}
    args.json.write_text(json.dumps(res, indent=1))
    for profile, r in res["profiles"].items():
        print(profile, "ERROR" if "error" in r else f"within tolerance: {r['within_tolerance']}, "
              f"max |d loss| {r['rm/loss']['max_abs_diff']:.2e}, max |d val_acc| {r['rm/val_accuracy']['max_abs_diff']:.3f}")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
