"""Every GPU figure of issue 17 in one run: one markdown report and one JSON of every figure.

    bash benchmarks/gpu/run.sh --out DIR          # one H100/H200-class GPU, under 8 minutes
    bash benchmarks/gpu/run.sh --smoke --out DIR  # CPU, tiny shapes, two steps each (CI: tests/benchmarks)

Sections (each a subprocess of an existing benchmark with a time budget, one after another; in smoke mode
two at a time; one that fails, times out or finds something missing is recorded with its error, and the
next one runs):
  1_tests         the suite's CUDA-only tests (`pytest -m gpu` over the files that carry the marker)
  1_deepspeed_rm  bf16 DeepSpeed ZeRO-2 / ZeRO-3 RM training on one device vs plain PyTorch (ds_rm_check.py)
  2_rm_mfu        RM training step throughput and MFU, Pythia-410M / 1.4B shapes, ours vs a plain HF loop (bench_rm.py --mfu)
  3_ppo           PPO iteration time, Pythia-160M / 410M shapes, ours (separate and shared critic) vs TRL (bench_trl_ppo.py)
  4_bon           best-of-n pool sampling throughput and the estimator on a 12,600 x 1,000 grid (bench_bon.py)
  5_study         the embedded default study (`rlhf-scaling device=cuda`), wall time
Outputs in --out: gpu_report.md, gpu_figures.json, gpu_log.txt (every section's stdout and stderr).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable, List, Optional

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
PY = sys.executable
VERSIONS = ("torch", "transformers", "accelerate", "deepspeed", "trl", "datasets", "pyarrow", "hydra-core", "omegaconf",
            "pydantic", "typing_extensions", "numpy", "pandas")


@dataclass
class Run:
    """One subprocess of a section: `cmd`, whose figures are the JSON it writes to `json_path`,
    or what `read` makes of its outputs (given the run's record so far: status, seconds)."""

    label: str
    cmd: List[str]
    json_path: Optional[Path] = None
    read: Optional[Callable[[dict], dict]] = None
    ok_codes: tuple = (0,)


@dataclass
class Section:
    name: str
    title: str
    budget_s: float  # the most this section may take (0: what is left before the deadline)
    runs: List[Run] = field(default_factory=list)


# ----------------------------------------------------------------------------- the sections


def gpu_test_files() -> List[str]:
    """Test files that carry a `pytest.mark.gpu` test (found, not listed, so a new one is picked up)."""
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")
                  if "mark.gpu" in p.read_text())


def read_junit(path: Path) -> dict:
    """passed / failed / errors / skipped counts and each test's outcome from pytest's JUnit XML."""
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    cases = {}
    for case in suite.iter("testcase"):
        outcome = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
        cases[f"{case.get('classname')}::{case.get('name')}"] = outcome
    counts = {k: sum(v == k for v in cases.values()) for k in ("passed", "failure", "error", "skipped")}
    return {"passed": counts["passed"], "failed": counts["failure"], "errors": counts["error"],
            "skipped": counts["skipped"], "seconds": float(suite.get("time", 0)), "tests": cases}


def study_figures(run_dir: Path) -> Callable[[dict], dict]:
    """The study's wall time (the subprocess's, imports included) and what it wrote."""
    def read(record: dict) -> dict:
        return {"wall_s": record["seconds"], "completed": record["status"] == "ok",
                "metrics_files": len(list(run_dir.rglob("metrics.jsonl"))), "figures": len(list(run_dir.rglob("*.png")))}
    return read


# Seconds per section: on the GPU (sum 375 of the 450 before the deadline, so the study gets >= 75 s
# even if every section takes its whole budget), and in the CPU smoke run (2 busy cores).
BUDGETS = {"1_tests": (60, 120), "1_deepspeed_rm": (60, 240), "2_rm_mfu": (75, 90), "3_ppo": (140, 240),
           "4_bon": (40, 90), "5_study": (0, 0)}


def build_sections(smoke: bool, work: Path) -> List[Section]:
    device = "cpu" if smoke else "cuda"
    budget = {name: b[smoke] for name, b in BUDGETS.items()}
    j = lambda name: work / f"{name}.json"  # noqa: E731
    junit = work / "junit.xml"
    tests = Section("1_tests", "CUDA-only tests (pytest -m gpu)", budget["1_tests"], [Run(
        "pytest", [PY, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", f"--junitxml={junit}",
                   *gpu_test_files()], read=lambda record: read_junit(junit), ok_codes=(0, 1))])
    ds = Section("1_deepspeed_rm", "bf16 DeepSpeed ZeRO-2 / ZeRO-3 RM training vs plain PyTorch, one device", budget["1_deepspeed_rm"], [Run(
        "zero2+zero3", [PY, str(BENCH / "gpu" / "ds_rm_check.py"), "--device", device, "--json", str(j("ds_rm")),
                        *(["--rm-model", "tiny-s", "--epochs", "1"] if smoke else ["--rm-model", "tiny-l"])],
        j("ds_rm"))])
    rm_args = (["--mfu", "tiny-m", "--seq-len", "32", "--prompts-per-step", "4", "--steps", "2", "--warmup", "1",
                "--vocab", "512", "--matmul-n", "256"] if smoke else
               ["--mfu", "pythia-410m,pythia-1.4b", "--seq-len", "1024", "--prompts-per-step", "16", "--steps", "5",
                "--warmup", "2"])
    rm = Section("2_rm_mfu", "RM training step: throughput and MFU, ours vs a plain Hugging Face loop", budget["2_rm_mfu"], [Run(
        "mfu", [PY, str(BENCH / "bench_rm.py"), *rm_args, "--device", device, "--dtype", "bf16", "--json", str(j("rm"))],
        j("rm"))])
    ppo_common = ["--device", device, "--compare-shared", "--warmup", "1", "--threads", "1" if smoke else "2"]
    shapes = ([("tiny-m", ["--iters", "1", "--sft-steps", "2", "--comparisons", "48", "--prompts", "8",
                           "--new-tokens", "8"])] if smoke else
              [("pythia-160m", ["--iters", "3", "--sft-steps", "50", "--comparisons", "192", "--prompts", "64",
                                "--new-tokens", "48"]),
               ("pythia-410m", ["--iters", "2", "--sft-steps", "50", "--comparisons", "192", "--prompts", "64",
                                "--new-tokens", "48"])])
    ppo = Section("3_ppo", "PPO iteration: ours (separate and shared critic) vs TRL's PPOTrainer", budget["3_ppo"], [
        Run(shape, [PY, str(BENCH / "bench_trl_ppo.py"), "--shape", shape, *extra, *ppo_common, "--json",
                    str(j(f"ppo_{shape}"))], j(f"ppo_{shape}")) for shape, extra in shapes])
    bon_args = (["--prompts", "20", "--pool", "300", "--sample", "tiny-m", "--sample-prompts", "2", "--sample-n", "4",
                 "--sample-tokens", "8", "--sample-batch", "8", "--sample-vocab", "512"] if smoke else
                ["--prompts", "1000", "--pool", "12600", "--sample", "pythia-410m", "--sample-prompts", "8",
                 "--sample-n", "256", "--sample-tokens", "64", "--sample-batch", "512"])
    bon = Section("4_bon", "Best-of-n: pool sampling throughput and the estimator on the full grid", budget["4_bon"], [Run(
        "bon", [PY, str(BENCH / "bench_bon.py"), *bon_args, "--device", device, "--no-baselines", "--json",
                str(j("bon"))], j("bon"))])
    study_dir = work / "study"
    tiny = (["sft.steps=2", "sft.n_demos=64", "data.comparison_budget=96", "data.n_eval_prompts=8",
             "rm_train.epochs=1", "bon.n_max=4", "bon.n_eval_prompts=4", "ppo.steps=2", "ppo.prompts_per_step=4",
             "ppo.minibatch_size=4", "~study.rm_models.s", "~study.rm_models.m"] if smoke else [])
    study = Section("5_study", "The embedded default study" + (" (smoke: tiny budgets, one RM size)" if smoke else ""), budget["5_study"], [Run(
        "study", [PY, "-m", "rlhf_scaling.cli", f"device={device}", "progress=false", f"hydra.run.dir={study_dir / 'run'}",
                  f"artifacts_dir={study_dir / 'artifacts'}", *tiny], read=study_figures(study_dir / "run"))])
    return [tests, ds, rm, ppo, bon, study]


# ----------------------------------------------------------------------------- running


def run_one(run: Run, timeout: float, log) -> dict:
    """Run one subprocess (its own session, so a timeout ends its children too); record its figures."""
    log.write(f"\n===== {run.label}: {' '.join(run.cmd)}\n")
    log.flush()
    start = time.perf_counter()
    proc = subprocess.Popen(run.cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        rc = proc.wait(timeout=max(timeout, 1))
        status = "ok" if rc == 0 else ("failed" if rc in run.ok_codes else "error")
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        rc, status = None, "timeout"
    out = {"status": status, "seconds": time.perf_counter() - start, "returncode": rc}
    if status == "timeout":
        out["error"] = f"stopped at its budget of {timeout:.0f} s"
    elif status == "error":
        out["error"] = f"exit code {rc} (see gpu_log.txt)"
    try:
        if run.read is not None:
            out["figures"] = run.read(out)
        elif run.json_path is not None and run.json_path.is_file():
            out["figures"] = json.loads(run.json_path.read_text())
        elif status == "ok":
            out.update(status="error", error=f"exit 0 but no figures at {run.json_path}")
    except Exception as err:  # noqa: BLE001 -- a section's output that cannot be read is its error
        out.update(status="error", error=f"reading figures: {type(err).__name__}: {err}")
    log.write(f"===== {run.label}: {out['status']} in {out['seconds']:.1f} s\n")
    log.flush()
    return out


def run_section(section: Section, deadline: float, log) -> dict:
    start = time.perf_counter()
    results = {}
    for i, run in enumerate(section.runs):
        left = deadline - time.perf_counter()
        if section.budget_s:  # runs of a section share its budget, each at most what is left of it
            left = min(left, section.budget_s - (time.perf_counter() - start))
        results[run.label] = run_one(run, left, log) if left > 1 else {
            "status": "timeout", "seconds": 0.0, "error": "no time left in the run's budget"}
    statuses = [r["status"] for r in results.values()]
    status = next((s for s in ("error", "timeout", "failed") if s in statuses), "ok")
    return {"title": section.title, "status": status, "seconds": time.perf_counter() - start, "budget_s": section.budget_s,
            "runs": results}


def environment(smoke: bool) -> dict:
    import torch

    env = {"date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "mode": "smoke (CPU, tiny shapes)" if smoke else "gpu", "host": platform.node(),
           "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cuda_available": torch.cuda.is_available(), "device": "cpu", "driver": None, "gpu_memory_gib": None}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(device=props.name, gpu_memory_gib=props.total_memory / 2**30, sm_count=props.multi_processor_count)
        try:
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=20).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            pass
    else:
        env["device"] = platform.processor() or platform.machine()
    env["cpus"] = os.cpu_count()
    versions = {}
    for name in VERSIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    env["versions"] = versions
    try:
        env["git_sha"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                        timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["git_sha"] = None
    return env


# ----------------------------------------------------------------------------- the report


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _num(x, fmt=".3f") -> str:
    return "n/a" if x is None else format(x, fmt)


def render_tests(f: dict) -> List[str]:
    lines = [f"passed {f['passed']}, failed {f['failed']}, errors {f['errors']}, skipped {f['skipped']} "
             f"({f['seconds']:.1f} s)", "", "| test | outcome |", "|---|---|"]
    return lines + [f"| `{name}` | {outcome} |" for name, outcome in f["tests"].items()]


def render_ds(f: dict) -> List[str]:
    lines = [f"{f['rm_model']} RM, {f['precision']}, {f['device']}; tolerance {json.dumps(f['tolerance'])} "
             "(relative, absolute)", "",
             "| profile | within tolerance | first-step loss plain / ZeRO | max abs diff loss | val loss | val accuracy | grad norm (max rel) | s |",
             "|---|---|---|---|---|---|---|---|"]
    for profile, r in f["profiles"].items():
        if "error" in r:
            lines.append(f"| {profile} | ERROR: {r['error'][:200]} |")
            continue
        lines.append(f"| {profile} | {r['within_tolerance']} | {r['rm/loss']['first_plain']:.4f} / "
                     f"{r['rm/loss']['first_zero']:.4f} | {r['rm/loss']['max_abs_diff']:.2e} | "
                     f"{r['rm/val_loss']['max_abs_diff']:.2e} | {r['rm/val_accuracy']['max_abs_diff']:.3f} | "
                     f"{r['rm/grad_norm']['max_rel_diff']:.2e} | {r['seconds']:.0f} |")
    return lines


def render_rm(f: dict) -> List[str]:
    peaks = f["peak_flops"]
    lines = [f"{f['device']}, {f['dtype']} autocast, AdamW (fp32 master weights); median of {f['steps']} steps after "
             f"{f['warmup']} warm-up. FLOPs: {f['flops_formula']}. Peaks: datasheet "
             f"{_num(peaks['datasheet'] and peaks['datasheet'] / 1e12, '.1f')} TFLOP/s, measured bf16 matmul "
             f"{peaks['measured'] / 1e12:.1f} TFLOP/s.", "",
             "| shape | N (non-emb.) | tokens/step | side | s/step | tokens/s | model TFLOP/s | MFU (datasheet) | MFU (measured) | MFU incl. attn (datasheet) | peak GiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for shape in f["shapes"]:
        for s in shape["sides"]:
            head = f"| {shape['shape']} | {shape['n_params_non_embedding'] / 1e6:.0f}M | {shape['tokens_per_step']:.0f} | {s['side']} |"
            if "error" in s:
                lines.append(f"{head} ERROR: {s['error'][:200]} |")
                continue
            lines.append(f"{head} {s['step_s']:.4f} | {s['tokens_per_s']:.0f} | {s['model_tflops']:.1f} | "
                         f"{_pct(s['mfu_datasheet'])} | {_pct(s['mfu_measured'])} | {_pct(s['mfu_attn_datasheet'])} | "
                         f"{_num(s.get('peak_memory_gib'), '.1f')} |")
    return lines


def render_ppo(runs: dict) -> List[str]:
    lines = ["| shape | side | s/iteration | rollout tokens/s | generate s | score s | experience forwards s | train s |",
             "|---|---|---|---|---|---|---|---|"]
    notes = []
    for label, r in runs.items():
        f = r.get("figures")
        if not f:
            lines.append(f"| {label} | ERROR: {r.get('error', '')} |")
            continue
        notes.append(f"{f['shape']}: {f['rollouts']} rollouts x <= {f['new_tokens']} tokens, {f['ppo_epochs']} epochs x "
                     f"{f['minibatches']} minibatches, fp32, {f['device']}; peer: {f['peer']}"
                     + (f"; ours vs TRL {f['ours_vs_trl_iterations_per_s']:.2f}x iterations/s"
                        if "ours_vs_trl_iterations_per_s" in f else ""))
        for side, m in f["sides"].items():
            if "error" in m:
                lines.append(f"| {f['shape']} | {side} | ERROR: {m['error'][:200]} |")
                continue
            lines.append(f"| {f['shape']} | {side} | {m['wall']:.3f} | {m['tokens_per_s']:.0f} | {m['generate']:.3f} | "
                         f"{m['score']:.3f} | {m['forward']:.3f} | {m['train']:.3f} |")
    return notes + [""] + lines


def render_bon(f: dict) -> List[str]:
    lines = [f"Estimator, full grid n = {f['grid']}, {f['prompts']} prompts: numpy (host) {f['estimator_numpy_s']:.2f} s"]
    if "estimator_device_s" in f:
        lines[0] += (f"; on the device (estimator_torch) {f['estimator_device_s']:.2f} s, max |diff| "
                     f"{f['estimator_device_max_abs_diff']:.1e}")
    s = f.get("sampling")
    if s:
        lines.append(f"Pool sampling, {s['shape']} shape, {s['sequences']} samples x <= {s['max_new_tokens']} tokens, "
                     f"batch {s['batch_size']}: ours (rlhf_scaling.sampling.sample, vocab {s['ours_vocab']}) "
                     f"{s['ours_tokens_per_s']:.0f} generated tokens/s; plain generate at vocab {s['plain_vocab']:,} "
                     f"{s['plain_tokens_per_s']:.0f} tokens/s")
    return lines


def render_study(f: dict) -> List[str]:
    return [f"wall {f['wall_s']:.1f} s ({'completed' if f['completed'] else 'NOT completed'}); "
            f"{f['metrics_files']} run records, {f['figures']} figures written"]


RENDER = {"1_tests": render_tests, "1_deepspeed_rm": render_ds, "2_rm_mfu": render_rm, "4_bon": render_bon,
          "5_study": render_study}


def report(env: dict, sections: dict, command: str, wall: float) -> str:
    lines = [f"# GPU benchmark report ({env['mode']})", "",
             f"- date: {env['date_utc']}; command: `{command}`; total wall {wall:.0f} s",
             f"- device: {env['device']}; driver: {env['driver']}; torch {env['torch']}; CUDA {env['cuda']}; "
             f"Python {env['python']}; CPUs {env['cpus']}; git {env['git_sha']}",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()), "",
             "| section | status | seconds (budget) |", "|---|---|---|"]
    lines += [f"| {name} {s['title']} | {s['status']} | {s['seconds']:.0f} ({s['budget_s'] or 'rest'}) |"
              for name, s in sections.items()]
    for name, s in sections.items():
        lines += ["", f"## {name}: {s['title']}", ""]
        for label, r in s["runs"].items():
            if r["status"] != "ok":
                lines.append(f"**{label}: {r['status']}**: {r.get('error', '')}")
        try:
            if name == "3_ppo":
                lines += render_ppo(s["runs"])
            else:
                for r in s["runs"].values():
                    if r.get("figures"):
                        lines += RENDER[name](r["figures"])
        except Exception as err:  # noqa: BLE001 -- the JSON still holds every figure
            lines.append(f"(could not render: {type(err).__name__}: {err}; see gpu_figures.json)")
    return "\n".join(lines) + "\n"


def run_two_at_a_time(sections, deadline: float, work: Path, log_path: Path, results: dict, write, started: float):
    """The smoke run's sections, two at a time (its figures check code paths, they are not timings, and
    each section's processes run one thread: two keep both CI cores busy); each section's output goes to
    its own log, appended to `log_path` when it ends. On a GPU the sections run one after another."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Lock

    lock = Lock()
    log_path.write_text("")

    def one(section: Section) -> None:
        print(f"[{time.perf_counter() - started:5.0f} s] {section.name}: {section.title}", flush=True)
        own_log = work / f"{section.name}.log"
        with open(own_log, "w") as log:
            result = run_section(section, deadline, log)
        with lock:
            results[section.name] = result
            with open(log_path, "a") as log:
                log.write(own_log.read_text())
            print(f"          {section.name}: {result['status']} in {result['seconds']:.0f} s", flush=True)
            write()

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(one, sections))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny shapes, two steps each")
    parser.add_argument("--out", type=Path, default=Path("gpu-bench-out"))
    parser.add_argument("--deadline-s", type=float, default=None,
                        help="total budget of the sections (default 450 on a GPU, 900 in smoke mode)")
    parser.add_argument("--only", default=None, help="comma-separated section names (e.g. 2_rm_mfu,3_ppo)")
    args = parser.parse_args()
    started = time.perf_counter()
    deadline = started + (args.deadline_s or (900 if args.smoke else 450))
    args.out.mkdir(parents=True, exist_ok=True)
    env = environment(args.smoke)
    if not args.smoke and not env["cuda_available"]:
        sys.exit("no CUDA device visible: run on a GPU machine, or pass --smoke for the CPU smoke run")
    if args.smoke:  # one thread per process: the few CPU cores are shared, and busy OpenMP threads then made
        os.environ.setdefault("OMP_NUM_THREADS", "1")  # a tiny-m PPO iteration 8.6 s instead of 0.22 s here
    work = Path(tempfile.mkdtemp(prefix="gpu_bench_"))
    sections = build_sections(args.smoke, work)
    if args.only:
        sections = [s for s in sections if s.name in args.only.split(",")]
    results = {}
    command = "bash benchmarks/gpu/run.sh " + " ".join(sys.argv[1:])

    def write() -> float:
        """Report and JSON of the sections so far (in section order): rewritten after each one, so a run
        stopped from outside (the device call's own time limit) still leaves what it measured."""
        wall = time.perf_counter() - started
        done = {s.name: results[s.name] for s in sections if s.name in results}
        (args.out / "gpu_figures.json").write_text(json.dumps(
            {"environment": env, "command": command, "wall_s": wall, "sections": done}, indent=1, default=str))
        (args.out / "gpu_report.md").write_text(report(env, done, command, wall))
        return wall

    if args.smoke:
        run_two_at_a_time(sections, deadline, work, args.out / "gpu_log.txt", results, write, started)
    else:
        with open(args.out / "gpu_log.txt", "w") as log:
            for section in sections:
                print(f"[{time.perf_counter() - started:5.0f} s] {section.name}: {section.title}", flush=True)
                results[section.name] = run_section(section, deadline, log)
                print(f"          {results[section.name]['status']} in {results[section.name]['seconds']:.0f} s",
                      flush=True)
                write()
    wall = write()
    print(f"report: {args.out / 'gpu_report.md'}; figures: {args.out / 'gpu_figures.json'}; wall {wall:.0f} s")


if __name__ == "__main__":
    main()
