"""Analysis at sweep scale: read 1,000 run records into the runs table and fit them, timed.

    .venv/bin/python benchmarks/bench_analysis_load.py [--runs 1000] [--repeats 3] [--figures]

Writes N synthetic run records into a temp folder, file by file as the tracker writes them
(config.json: the full resolved config of the stage as `rlhf-scaling` composes it, env.json,
metrics.jsonl with {"_step", "_time", ...} lines carrying the keys each stage logs, summary.json,
status.json), laid out like Hydra sweep folders: <root>/sweep<g>/<i>_stage=..,rm=..,seed=../.
Runs cycle through rm / bon / ppo jobs over 4 proxy-RM sizes and seeds, 120 runs per sweep group:
  rm   --rm-steps logged optimizer steps (default 256, the default RM's 4 epochs x 64 steps) plus the
       data-stats record, held-out metrics every 50 steps; summary with rm/n_params (as RM jobs report)
  bon  --bon-points records (default 9: n = 1, 2, 4, ..., 256), the stage's keys, Gao BoN-form curve
  ppo  --ppo-steps logged iterations (default 150, the default ppo.steps), the stage's 16 keys,
       Gao RL-form curve with noise
Then times, in one process (files already in the page cache, as right after a sweep):
  load  rlhf_scaling.analysis.runs.load_local_runs(root)            -> the tidy table (rows x columns)
  fit   figures.fitted_coefficients(df) + figures.coefficient_scaling(coef)   (Gao Fig. 1 / Fig. 3 fits)
  --figures: figures.write_figures(df, out) separately (PNG + PDF of every figure).
Target: load + fit under 10 s for 1,000 runs. --profile FILE writes a cProfile of one load + fit.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

SIZES = {"tiny-xs": 3.3e3, "tiny-s": 2.6e4, "tiny-m": 1.0e5, "tiny-l": 4.0e5}  # rm/n_params the RM jobs report
LAWS = {("bon", "alpha"): (0.20, 0.030), ("bon", "beta"): (0.40, -0.015),  # coefficient = a + b ln N
        ("ppo", "alpha"): (0.50, 0.040), ("ppo", "beta"): (0.60, -0.020)}
STAGES = ("rm", "bon", "ppo")
RUNS_PER_GROUP = 120


def coefficient(kind: str, name: str, n: float) -> float:
    a, b = LAWS[(kind, name)]
    return a + b * math.log(n)


def base_configs() -> dict:
    """(stage, rm name) -> the resolved config dict the tracker would write for that job."""
    from omegaconf import OmegaConf

    from rlhf_scaling.cli import compose

    out = {}
    for stage in STAGES:
        for rm in SIZES:
            cfg = compose([f"stage={stage}", f"model@rm={rm}", "stage.build_upstream=true"])
            out[(stage, rm)] = OmegaConf.to_container(cfg, resolve=True)
    return out


def _write_json(path: Path, obj) -> None:  # the tracker's format: indented, sorted keys
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str), encoding="utf-8")


def records_for(stage: str, n_params: float, rng, args) -> tuple:
    """(metric records, reported summary) shaped like what the stage logs."""
    from rlhf_scaling.curves import bon_form, rl_form

    if stage == "rm":
        acc = 0.55 + 0.02 * math.log10(n_params) + rng.normal(0, 0.005)
        recs = [{"rm/train_units": 100, "rm/train_comparisons": 600, "rm/truncated_responses": 0}]
        for step in range(1, args.rm_steps + 1):
            r = {"rm/step": step, "rm/member": 0, "rm/loss": 0.69 * math.exp(-step / 200) + rng.normal(0, 0.02),
                 "rm/lr": 3e-3 * (1 - step / args.rm_steps), "rm/grad_norm": abs(rng.normal(1, 0.3)),
                 "rm/epoch": (step - 1) * 4 // args.rm_steps}
            if step % 50 == 0 or step == args.rm_steps:
                r.update({"rm/val_loss": 0.6, "rm/val_accuracy": acc, "rm/val_ece": 0.03,
                          "rm/val_length_corr": 0.1, "rm/val_gold_corr": 0.5})
            recs.append(r)
        summary = {"rm/val_loss": 0.6, "rm/val_accuracy": acc, "rm/val_ece": 0.03, "rm/val_length_corr": 0.1,
                   "rm/val_gold_corr": 0.5, "rm/n_params": n_params, "rm/artifact": f"/artifacts/rm/{n_params:.0f}"}
        return recs, summary
    if stage == "bon":
        a, b = coefficient("bon", "alpha", n_params), coefficient("bon", "beta", n_params)
        recs = []
        for n in [2 ** i for i in range(args.bon_points)]:
            kl = math.log(n) - (n - 1) / n
            d = math.sqrt(kl)
            gain = float(bon_form(d, a, b)) + rng.normal(0, 0.003)
            recs.append({"bon/n": n, "bon/kl": kl, "bon/sqrt_kl": d, "bon/proxy": 0.5 + 0.8 * d, "bon/gold": 1 + gain,
                         "bon/proxy_gain": 0.8 * d, "bon/gold_gain": gain, "bon/gold_gain_low": gain - 0.02,
                         "bon/gold_gain_high": gain + 0.02})
        best = max(recs, key=lambda r: r["bon/gold"])
        summary = {"bon/alpha_gold": a, "bon/beta_gold": b, "bon/alpha_proxy": 0.8, "bon/beta_proxy": 0.0,
                   "bon/peak_sqrt_kl_fit": a / (2 * b), "bon/peak_gold_gain_fit": a * a / (4 * b),
                   "bon/best_n": best["bon/n"], "bon/best_gold": best["bon/gold"], "bon/n_max": recs[-1]["bon/n"],
                   "bon/gold_at_n_max": recs[-1]["bon/gold"]}
        return recs, summary
    a, b = coefficient("ppo", "alpha", n_params), coefficient("ppo", "beta", n_params)
    recs = []
    for step in range(args.ppo_steps):
        d = 2.5 * step / args.ppo_steps
        gold = 2.0 + float(rl_form(d, a, b)) + rng.normal(0, 0.02)
        recs.append({"ppo/step": step, "ppo/proxy": 0.2 + d + rng.normal(0, 0.02), "ppo/gold": gold, "ppo/kl": d * d,
                     "ppo/sqrt_kl": d, "ppo/kl_k1": d * d, "ppo/kl_coef": 0.01, "ppo/response_length": 9.5,
                     "ppo/ended_fraction": 0.9, "ppo/entropy": 1.0 - 0.003 * step, "ppo/policy_loss": -0.01,
                     "ppo/value_loss": 0.1, "ppo/clip_frac": 0.05, "ppo/value_clip_frac": 0.02, "ppo/approx_kl": 0.003,
                     "ppo/rollouts": (step + 1) * 64})
    summary = {"ppo/final_gold": recs[-1]["ppo/gold"], "ppo/final_proxy": recs[-1]["ppo/proxy"],
               "ppo/final_kl": recs[-1]["ppo/kl"], "ppo/peak_gold": max(r["ppo/gold"] for r in recs),
               "ppo/init_gold": recs[0]["ppo/gold"], "ppo/alpha_gold": a, "ppo/beta_gold": b,
               "ppo/alpha_proxy": 1.0, "ppo/beta_proxy": 0.0, "ppo/peak_sqrt_kl_fit": 1.2, "ppo/peak_gold_gain_fit": 0.3}
    return recs, summary


def write_runs(root: Path, args) -> dict:
    """N run folders as the tracker writes them; returns counts per stage."""
    configs = base_configs()
    rng = np.random.default_rng(0)
    names = list(SIZES)
    counts = {s: 0 for s in STAGES}
    for i in range(args.runs):
        stage, rm = STAGES[i % 3], names[(i // 3) % len(names)]
        seed, group = i // 12, f"sweep{i // RUNS_PER_GROUP:02d}"
        config = json.loads(json.dumps(configs[(stage, rm)]))
        config.update(experiment=group, seed=seed)
        run = root / group / f"{i % RUNS_PER_GROUP}_model@rm={rm},seed={seed},stage={stage}"
        run.mkdir(parents=True)
        records, summary = records_for(stage, SIZES[rm], rng, args)
        _write_json(run / "config.json", config)
        _write_json(run / "env.json", {"git_sha": "0" * 40, "git_dirty": False, "python": "3.11.7",
                                       "versions": {"torch": "2.13.0", "pandas": "3.1.1"}, "hostname": "node1",
                                       "slurm": {"SLURM_JOB_ID": str(1000 + i)}, "started_utc": "2026-11-24T00:00:00Z",
                                       "argv": ["rlhf-scaling", f"stage={stage}"]})
        t = 1.79e9 + i * 100
        with open(run / "metrics.jsonl", "w", encoding="utf-8") as fh:
            for step, rec in enumerate(records):
                fh.write(json.dumps({"_step": step, "_time": t + step, **rec}) + "\n")
        _write_json(run / "summary.json", summary)
        _write_json(run / "status.json", {"status": "completed", "stage": stage, "error": None, "wandb_run_id": None,
                                          "updated_utc": "2026-11-24T00:00:00Z"})
        counts[stage] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--rm-steps", type=int, default=256, help="logged optimizer steps per RM run")
    parser.add_argument("--bon-points", type=int, default=9, help="n grid points per BoN run (n = 1 .. 2^(k-1))")
    parser.add_argument("--ppo-steps", type=int, default=150, help="logged iterations per PPO run")
    parser.add_argument("--repeats", type=int, default=3, help="load + fit repeats; the median is reported")
    parser.add_argument("--target", type=float, default=10.0, help="seconds for load + fit")
    parser.add_argument("--figures", action="store_true", help="also time write_figures (once)")
    parser.add_argument("--profile", default=None, help="cProfile one load + fit into this file")
    parser.add_argument("--keep", default=None, help="write the runs here and keep them (default: a temp folder)")
    args = parser.parse_args()

    from rlhf_scaling.analysis.figures import coefficient_scaling, fitted_coefficients, write_figures
    from rlhf_scaling.analysis.runs import load_local_runs

    print("load average:", open("/proc/loadavg").read().split()[:3])
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_analysis_"))
    try:
        start = time.perf_counter()
        counts = write_runs(root, args)
        size_mb = sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6
        print(f"wrote {args.runs} runs ({counts}) in {time.perf_counter() - start:.1f} s, {size_mb:.0f} MB on disk")

        def load_and_fit():
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                df = load_local_runs(root)
            t1 = time.perf_counter()
            coef = fitted_coefficients(df)
            scaling = coefficient_scaling(coef)
            t2 = time.perf_counter()
            return df, coef, scaling, t1 - t0, t2 - t1

        times = []
        for i in range(args.repeats):
            df, coef, scaling, t_load, t_fit = load_and_fit()
            times.append((t_load, t_fit))
            print(f"repeat {i + 1}: load {t_load:.2f} s, fit {t_fit:.2f} s, total {t_load + t_fit:.2f} s")
        print(f"table: {len(df):,} rows x {df.shape[1]} columns, {df['run_id'].nunique()} runs, "
              f"{df.memory_usage(deep=True).sum() / 1e6:.0f} MB in memory")
        print(f"fits: {len(coef)} per-run (kind, run) fits, {len(scaling)} log-linear rows "
              f"({scaling[['group', 'kind']].drop_duplicates().shape[0]} (group, kind) pairs)")
        check = scaling[(scaling["kind"] == "bon") & (scaling["coefficient"] == "alpha")]["slope"]
        print(f"check: BoN alpha slope per ln N, median over groups {check.median():.4f} (true 0.0300)")
        load = statistics.median(t for t, _ in times)
        fit = statistics.median(t for _, t in times)
        total = statistics.median(a + b for a, b in times)
        print(f"\nmedian of {len(times)}: load {load:.2f} s, fit {fit:.2f} s, load + fit {total:.2f} s "
              f"(target < {args.target:g} s: {'met' if total < args.target else 'MISSED'})")
        if args.figures:
            out = root.parent / (root.name + "_figures")
            t0 = time.perf_counter()
            written = write_figures(df, out, str(root))
            print(f"write_figures: {len(written)} figures (PNG + PDF) in {time.perf_counter() - t0:.2f} s")
            shutil.rmtree(out, ignore_errors=True)
        if args.profile:
            import cProfile

            cProfile.runctx("load_and_fit()", globals(), {"load_and_fit": load_and_fit}, args.profile)
            print(f"profile of one load + fit: {args.profile} (python -m pstats {args.profile})")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
