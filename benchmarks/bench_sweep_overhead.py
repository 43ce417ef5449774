"""Sweep submission overhead: wall time from typing a 100-job multirun command to Slurm having
accepted the job array, through the real entry point and the real submitit Slurm launcher.

    bash slurm/local_cluster.sh start     # the local single-node cluster (root; or already up)
    .venv/bin/python benchmarks/bench_sweep_overhead.py [--sweep rm_size] [--seeds 25] [--repeats 3]

What runs: `rlhf-scaling -m +sweep=rm_size seed=range(25) hydra/launcher=slurm slurm=local ...`
(4 RM sizes x 25 seeds = 100 jobs, tiny stage settings) in a fresh Python process, i.e. exactly
`rlhf_scaling.cli.main()` with that command line. The child process wraps a few library methods
with timers only (nothing is replaced): Hydra's primary composition (`load_configuration`), the
sweeper's composition of every job's config (`load_sweep_config`, BasicSweeper composes each job
in the submitting process to fail early), submitit's pickling of every job (`DelayedSubmission.dump`)
and the `sbatch` call (`SlurmExecutor._submit_command`). As soon as submitit's array submission
returns (sbatch accepted the array and the 100 job pickles are in place), the child records the
time, checks with squeue that the array's tasks are queued, scancels the array and stops.
The array is submitted with `#SBATCH --hold` (hydra.launcher.additional_parameters.hold=true), so
not a single task can start between sbatch and scancel; holding costs nothing at submission.

The headline number ("command -> array accepted") runs from just before the parent spawns the
child interpreter to the return of submitit's array submission, so it includes interpreter start,
imports, Hydra start-up and plugin discovery, composition of the primary config and of all 100
job configs, launcher set-up, pickling 100 jobs, writing the sbatch script and sbatch itself.

Our validation (`rlhf_scaling.config.validate`) is not on that path today: a multirun job is
validated inside the job (`run_stage`), on the cluster. Its per-job cost is measured separately,
on the 100 configs the sweeper composed (after the timed window), to show what validating every
job before submission would add.

    --profile FILE   cProfile the first repeat's child (view: python -m pstats FILE)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Tiny stage settings: the jobs are never run, but the command should be one that could be.
TINY = ["sft.n_demos=256", "sft.steps=20", "data.comparison_budget=600", "data.n_eval_prompts=32",
        "rm_train.epochs=1", "bon.n_max=16", "bon.n_eval_prompts=8", "ppo.steps=5", "progress=false"]


class _Submitted(BaseException):
    """Raised in the child once the array is accepted; BaseException so Hydra's error reporting
    (which catches Exception) lets it through to us."""


# ----------------------------------------------------------------------------- child: the real command, timed


def _child(result_path: Path, overrides: list, profile: str | None) -> None:
    t_child = time.time()
    import submitit  # the launcher imports it anyway; imported here so the wrappers can be installed
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from submitit.core.utils import DelayedSubmission
    from submitit.slurm.slurm import SlurmExecutor

    rec = {"t_child": t_child, "primary_compose_s": 0.0, "job_compose_s": [], "pickle_s": 0.0, "pickle_bytes": 0}
    composed = []

    def timed_method(cls, name, after):
        original = getattr(cls, name)

        def wrapper(self, *args, **kwargs):
            start = time.perf_counter()
            out = original(self, *args, **kwargs)
            after(time.perf_counter() - start, out, args, kwargs)
            return out

        setattr(cls, name, wrapper)

    in_job = []  # load_sweep_config calls load_configuration itself: count that as job composition

    def on_primary(dt, out, args, kwargs):
        if not in_job:
            rec["primary_compose_s"] += dt

    def on_job(dt, out, args, kwargs):
        in_job.pop()
        rec["job_compose_s"].append(dt)
        composed.append(out)

    def on_dump(dt, out, args, kwargs):
        rec["pickle_s"] += dt
        rec["pickle_bytes"] += os.path.getsize(args[0] if args else kwargs["filepath"])

    def on_sbatch(dt, out, args, kwargs):
        rec["sbatch_s"] = dt
        rec["job_id"] = str(out.job_id)
        result_path.with_suffix(".jobid").write_text(rec["job_id"])  # for the parent's safety scancel

    timed_method(ConfigLoaderImpl, "load_configuration", on_primary)
    timed_method(ConfigLoaderImpl, "load_sweep_config", on_job)
    original_sweep_config = ConfigLoaderImpl.load_sweep_config

    def mark_job(self, *args, **kwargs):
        in_job.append(True)
        return original_sweep_config(self, *args, **kwargs)

    ConfigLoaderImpl.load_sweep_config = mark_job
    timed_method(DelayedSubmission, "dump", on_dump)
    timed_method(SlurmExecutor, "_submit_command", on_sbatch)

    original_submit = SlurmExecutor._internal_process_submissions

    def submit_array(self, delayed):
        rec["t_submit_start"] = time.time()
        rec["n_jobs"] = len(delayed)
        jobs = original_submit(self, delayed)
        rec["t_submitted"] = time.time()
        raise _Submitted(jobs)

    SlurmExecutor._internal_process_submissions = submit_array

    sys.argv = ["rlhf-scaling", *overrides]
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        from rlhf_scaling import cli

        rec["t_imported"] = time.time()
        cli.main()
        raise SystemExit("the multirun returned without submitting an array")
    except _Submitted:
        pass
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)
        if "job_id" in rec:  # what squeue shows, then cancel everything of the array
            q = subprocess.run(["squeue", "-h", "-r", "-j", rec["job_id"], "-o", "%T %r"],
                               capture_output=True, text=True)
            lines = q.stdout.split("\n")
            rec["queued_tasks"] = sum(1 for line in lines if line.strip())
            rec["queue_states"] = sorted(set(line.strip() for line in lines if line.strip()))
            subprocess.run(["scancel", rec["job_id"]], check=False)

    # Our validation of every composed job config (outside the timed window).
    from rlhf_scaling.config import validate

    per_job = []
    for cfg in composed:
        start = time.perf_counter()
        validate(cfg)
        per_job.append(time.perf_counter() - start)
    rec["validate_s"] = per_job
    result_path.write_text(json.dumps(rec))


# ----------------------------------------------------------------------------- parent


def command(args, tmp: Path) -> list:
    return ["-m", f"+sweep={args.sweep}", f"seed=range({args.seeds})", "hydra/launcher=slurm", "slurm=local",
            "+hydra.launcher.additional_parameters.hold=true",
            f"hydra.sweep.dir={tmp}/multirun", f"artifacts_dir={tmp}/artifacts", *TINY, *args.extra]


def run_once(args, profile: str | None) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    result = tmp / "result.json"
    child = [sys.executable, str(Path(__file__).resolve()), "--child", str(result)]
    if profile:
        child += ["--profile", profile]
    child += ["--", *command(args, tmp)]
    try:
        t0 = time.time()
        proc = subprocess.run(child, cwd=tmp, capture_output=True, text=True)
        t_exit = time.time()
        if proc.returncode != 0 or not result.is_file():
            sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-5000:])
            raise SystemExit(f"child failed (rc={proc.returncode})")
        rec = json.loads(result.read_text())
    finally:
        jobid = result.with_suffix(".jobid")
        if jobid.is_file():  # cancelled by the child already; again in case it died in between
            subprocess.run(["scancel", jobid.read_text().strip()], check=False)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    jc, val = rec["job_compose_s"], rec["validate_s"]
    return {
        "job_id": rec["job_id"], "n_jobs": rec["n_jobs"], "queued_tasks": rec.get("queued_tasks"),
        "queue_states": rec.get("queue_states"),
        "total_s": rec["t_submitted"] - t0,
        "start_and_import_s": rec["t_imported"] - t0,
        "primary_compose_s": rec["primary_compose_s"],
        "hydra_other_s": (rec["t_submit_start"] - rec["t_imported"]) - rec["primary_compose_s"] - sum(jc),
        "job_compose_total_s": sum(jc), "job_compose_per_job_ms": 1e3 * statistics.mean(jc),
        "n_composed": len(jc),
        "submit_total_s": rec["t_submitted"] - rec["t_submit_start"],
        "pickle_s": rec["pickle_s"], "pickle_mb": rec["pickle_bytes"] / 1e6, "sbatch_s": rec["sbatch_s"],
        "validate_total_s": sum(val), "validate_per_job_ms": 1e3 * statistics.mean(val),
        "child_exit_s": t_exit - t0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sweep", default="rm_size", help="sweep config (sweeps/*.yaml); rm_size has 4 RM sizes")
    parser.add_argument("--seeds", type=int, default=25, help="seed=range(N): jobs = sweep points x N")
    parser.add_argument("--repeats", type=int, default=3, help="full submissions; the median is reported")
    parser.add_argument("--target", type=float, default=20.0, help="seconds, command -> array accepted")
    parser.add_argument("--profile", default=None, help="cProfile the first repeat's child into this file")
    parser.add_argument("--keep", action="store_true", help="keep the temp sweep folders")
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for the multirun")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(Path(args.child), args.overrides, args.profile)
        return
    if shutil.which("sbatch") is None or subprocess.run(["sinfo", "-h"], capture_output=True).returncode:
        raise SystemExit("no Slurm cluster: bash slurm/local_cluster.sh start")
    print("load average:", open("/proc/loadavg").read().split()[:3])
    print("command: rlhf-scaling " + " ".join(command(args, Path("$TMP"))))
    runs = []
    for i in range(args.repeats):
        r = run_once(args, args.profile if i == 0 else None)
        runs.append(r)
        print(f"repeat {i + 1}: {r['n_jobs']} jobs, array {r['job_id']} ({r['queued_tasks']} tasks queued "
              f"{r['queue_states']}, cancelled): command -> array accepted {r['total_s']:.2f} s | "
              f"start+imports {r['start_and_import_s']:.2f} s, primary compose {r['primary_compose_s']:.2f} s, "
              f"other Hydra start-up {r['hydra_other_s']:.2f} s, {r['n_composed']} job configs composed "
              f"{r['job_compose_total_s']:.2f} s ({r['job_compose_per_job_ms']:.1f} ms/job), submission "
              f"{r['submit_total_s']:.2f} s (pickling {r['pickle_s']:.2f} s, {r['pickle_mb']:.1f} MB; sbatch "
              f"{r['sbatch_s']:.2f} s) | validate(): {r['validate_per_job_ms']:.2f} ms/job "
              f"({r['validate_total_s']:.2f} s for all, not on the submit path)")
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0] if isinstance(runs[0][k], float)}
    print(f"\nmedian of {len(runs)}: command -> array accepted {med['total_s']:.2f} s "
          f"(target < {args.target:g} s: {'met' if med['total_s'] < args.target else 'MISSED'})")
    for key in ("start_and_import_s", "primary_compose_s", "hydra_other_s", "job_compose_total_s",
                "job_compose_per_job_ms", "submit_total_s", "pickle_s", "pickle_mb", "sbatch_s",
                "validate_per_job_ms", "validate_total_s"):
        print(f"  {key:24s} {med[key]:8.3f}")
    left = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    mine = [j for j in left if any(j.split("_")[0] == r["job_id"] for r in runs)]
    print("squeue after: " + ("nothing of ours left" if not mine else f"STILL QUEUED {mine}"))


if __name__ == "__main__":
    main()
