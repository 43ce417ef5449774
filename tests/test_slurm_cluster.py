"""Hydra sweeps on a real Slurm (the single-node cluster of slurm/local_cluster.sh).

Each test writes a tiny standalone Hydra app into tmp_path and runs it with this interpreter in a
subprocess, as a user would: `python app.py -m hydra/launcher=... <sweep>`. Every job records its
Slurm environment (as the job sees it, no sacct needed) into its Hydra output folder; the tests
read those records and the launcher's submitit folder. The last test needs no cluster: it checks
that rlhf_scaling/conf/hydra/launcher/slurm.yaml resolves each conf/slurm profile within the project's config.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(240)]

JOB_TIMEOUT_S = 120  # one sweep, submission to collected results; they take ~3-8 s here

APP = textwrap.dedent(
    '''
    import datetime, json, os
    from pathlib import Path

    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf


    def allreduce():
        """Form a gloo group from Slurm's variables and sum (rank + 1) over the ranks."""
        import submitit
        import torch
        import torch.distributed as dist

        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
        t = torch.tensor([float(dist.get_rank() + 1), 1.0])
        dist.all_reduce(t)
        out = {"rank": dist.get_rank(), "world_size": dist.get_world_size(),
               "local_rank": int(os.environ["LOCAL_RANK"]), "sum": t.tolist()}
        dist.destroy_process_group()
        return out


    @hydra.main(version_base=None, config_path=".", config_name="app")
    def main(cfg):
        out_dir = Path(HydraConfig.get().runtime.output_dir)
        rank = int(os.environ.get("SLURM_PROCID", "0"))
        record = {
            "x": cfg.x,
            "cfg": OmegaConf.to_container(cfg, resolve=True),
            "env": {k: v for k, v in os.environ.items()
                    if k.startswith("SLURM_") or k == "CUDA_VISIBLE_DEVICES"},
        }
        if cfg.mode == "allreduce":
            record["dist"] = allreduce()
        (out_dir / f"result_rank{rank}.json").write_text(json.dumps(record))
        return cfg.x


    if __name__ == "__main__":
        main()
    '''
)


def _write_app(tmp_path: Path) -> Path:
    app = tmp_path / "app.py"
    app.write_text(APP)
    (tmp_path / "app.yaml").write_text("x: 0\nmode: echo\n")
    return app


def _submitit_logs(sweep: Path) -> str:
    parts = []
    for f in sorted((sweep / ".submitit").glob("*/*_log.*")):
        parts.append(f"--- {f.relative_to(sweep)}\n{f.read_text(errors='replace')[-3000:]}")
    return "\n".join(parts)


def _cancel_jobs(sweep: Path, env: dict) -> None:
    """scancel whatever this sweep submitted (after a timeout: don't leave jobs on the cluster)."""
    ids = {d.name.split("_")[0] for d in (sweep / ".submitit").glob("*") if d.is_dir() and d.name[0].isdigit()}
    if ids:
        subprocess.run(["scancel", *sorted(ids)], env=env, capture_output=True, timeout=30)


def run_sweep(cluster, tmp_path: Path, *overrides: str) -> Path:
    """`python app.py -m <overrides>` with the sweep folder in tmp_path; returns the sweep folder."""
    app = _write_app(tmp_path)
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, str(app), "-m", f"hydra.sweep.dir={sweep}", *overrides]
    env = cluster.env(HYDRA_FULL_ERROR="1")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=JOB_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        _cancel_jobs(sweep, env)
        squeue = subprocess.run(["squeue"], env=env, capture_output=True, text=True).stdout
        pytest.fail(f"sweep did not finish in {JOB_TIMEOUT_S}s\n{output[-4000:]}\nsqueue:\n{squeue}\n{_submitit_logs(sweep)}")
    assert proc.returncode == 0, f"{' '.join(cmd)}\nexit {proc.returncode}\n{output[-6000:]}\n{_submitit_logs(sweep)}"
    return sweep


def load_records(job_dir: Path) -> dict[int, dict]:
    """{rank: record} written by the app into one job's Hydra output folder."""
    found = {int(re.search(r"rank(\d+)", f.name).group(1)): json.loads(f.read_text())
             for f in job_dir.glob("result_rank*.json")}
    assert found, f"no result in {job_dir}: {sorted(p.name for p in job_dir.iterdir())}"
    return found


def submission_scripts(sweep: Path) -> list[Path]:
    """The sbatch scripts submitit kept: one per sbatch call, in .submitit/<array id>/."""
    return sorted((sweep / ".submitit").glob("*/*_submission.sh"))


# ----------------------------------------------------------------------------------------- tests


def test_multirun_of_three_jobs_is_one_array(slurm_cluster, tmp_path):
    sweep = run_sweep(
        slurm_cluster, tmp_path,
        "hydra/launcher=submitit_slurm",
        f"hydra.launcher.partition={slurm_cluster.partition}",
        "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=5",
        "x=1,2,3",
    )
    # All three outputs, in Hydra's job folders 0..2, each with its own sweep value.
    records = {n: load_records(sweep / str(n))[0] for n in range(3)}
    assert {n: r["x"] for n, r in records.items()} == {0: 1, 1: 2, 2: 3}

    # Evidence from inside the jobs: one array id shared by all three, task ids 0..2, 3 tasks.
    envs = [r["env"] for r in records.values()]
    array_ids = {e["SLURM_ARRAY_JOB_ID"] for e in envs}
    assert len(array_ids) == 1, f"jobs came from several submissions: {envs}"
    (array_id,) = array_ids
    assert sorted(int(e["SLURM_ARRAY_TASK_ID"]) for e in envs) == [0, 1, 2]
    assert {e["SLURM_ARRAY_TASK_COUNT"] for e in envs} == {"3"}
    assert len({e["SLURM_JOB_ID"] for e in envs}) == 3  # three jobs, not one job run three times
    assert {e["SLURM_JOB_PARTITION"] for e in envs} == {slurm_cluster.partition}

    # Evidence from the submitter: one sbatch script, an --array over the three, and submitit's
    # per-job folders named <array id>_<index>.
    scripts = submission_scripts(sweep)
    assert [s.parent.name for s in scripts] == [array_id], scripts
    assert re.search(r"^#SBATCH --array=0-2(%\d+)?$", scripts[0].read_text(), re.M), scripts[0].read_text()
    job_dirs = sorted(d.name for d in (sweep / ".submitit").iterdir() if d.is_dir() and "_" in d.name
                      and not d.name.startswith("."))
    assert job_dirs == [f"{array_id}_{i}" for i in range(3)]


@pytest.mark.parametrize(
    "request_override, sbatch_line",
    [("hydra.launcher.gpus_per_node=1", "--gpus-per-node=1"), ("hydra.launcher.gres=gpu:1", "--gres=gpu:1")],
    ids=["gpus_per_node", "gres"],
)
def test_gpu_request_gets_cuda_visible_devices(slurm_cluster, tmp_path, request_override, sbatch_line):
    sweep = run_sweep(
        slurm_cluster, tmp_path,
        "hydra/launcher=submitit_slurm",
        f"hydra.launcher.partition={slurm_cluster.partition}",
        "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=5",
        request_override,
    )
    (script,) = submission_scripts(sweep)
    assert f"#SBATCH {sbatch_line}\n" in script.read_text()
    env = load_records(sweep / "0")[0]["env"]
    # The fake devices carry no CUDA; Slurm's gres plugin still hands one out.
    assert env.get("CUDA_VISIBLE_DEVICES") in {"0", "1"}, env
    assert env.get("SLURM_GPUS_ON_NODE") == "1", env


def test_project_launcher_reads_cluster_profile(slurm_cluster, tmp_path, repo_root):
    """rlhf_scaling/conf/hydra/launcher/slurm.yaml + conf/slurm/local.yaml: the profile's values reach sbatch."""
    sweep = run_sweep(
        slurm_cluster, tmp_path,
        f"hydra.searchpath=[file://{repo_root / 'rlhf_scaling' / 'conf'}]",
        "hydra/launcher=slurm", "+slurm=local",
        "slurm.gpus_per_node=2",  # changed on the command line, read by the launcher by interpolation
        "x=7,8",
    )
    scripts = submission_scripts(sweep)
    assert len(scripts) == 1
    text = scripts[0].read_text()
    for line in ("--array=0-1%2",  # submitit caps %N at the array size
                 "--partition=debug", "--cpus-per-task=1", "--mem=2GB",
                 "--time=30", "--gpus-per-node=2", "--ntasks-per-node=1", "--nodes=1"):
        assert f"#SBATCH {line}\n" in text, f"{line} missing from\n{text}"
    for n, x in ((0, 7), (1, 8)):
        rec = load_records(sweep / str(n))[0]
        assert rec["x"] == x
        assert rec["cfg"]["slurm"]["partition"] == "debug"  # the job sees the profile in its config
        assert rec["env"]["SLURM_JOB_PARTITION"] == "debug"
        assert rec["env"]["SLURM_CPUS_PER_TASK"] == "1"
        assert rec["env"]["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_two_tasks_form_a_gloo_group(slurm_cluster, tmp_path):
    sweep = run_sweep(
        slurm_cluster, tmp_path,
        "hydra/launcher=submitit_slurm",
        f"hydra.launcher.partition={slurm_cluster.partition}",
        "hydra.launcher.tasks_per_node=2", "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=5",
        "mode=allreduce",
    )
    records = load_records(sweep / "0")
    assert sorted(records) == [0, 1], "both ranks of the one job should have written a record"
    for rank, rec in records.items():
        assert rec["dist"]["rank"] == rank
        assert rec["dist"]["local_rank"] == rank
        assert rec["dist"]["world_size"] == 2
        assert rec["dist"]["sum"] == [1.0 + 2.0, 2.0]  # sum of (rank + 1), and the group size
        assert rec["env"]["SLURM_NTASKS"] == "2"
    assert records[0]["env"]["SLURM_JOB_ID"] == records[1]["env"]["SLURM_JOB_ID"]


@pytest.mark.parametrize("profile", ["local", "gpu_node"])
def test_launcher_reads_profile_in_project_config(profile, repo_root):
    """No cluster needed: with the project's typed config, `hydra/launcher=slurm slurm=<profile>`
    resolves every interpolated launcher key to the profile's value (and a CLI change of one)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import rlhf_scaling.cli  # noqa: F401  (registers the schema)

    keys = ["partition", "account", "qos", "constraint", "nodes", "tasks_per_node", "gpus_per_node",
            "cpus_per_task", "mem_gb", "timeout_min", "array_parallelism", "max_num_timeout", "setup"]
    with initialize_config_dir(config_dir=str(repo_root / "rlhf_scaling" / "conf"), version_base=None):
        cfg = compose("config", overrides=["hydra/launcher=slurm", f"slurm={profile}", "slurm.timeout_min=17"],
                      return_hydra_config=True)
    expected = OmegaConf.to_container(OmegaConf.load(repo_root / "rlhf_scaling" / "conf" / "slurm" / f"{profile}.yaml"))
    expected["timeout_min"] = 17
    launcher = cfg.hydra.launcher
    assert {k: OmegaConf.to_container(launcher[k]) if k == "setup" else launcher[k] for k in keys} == {
        k: expected[k] for k in keys}
    assert launcher.submitit_folder.endswith("/.submitit/%j")
    assert launcher._target_.endswith("SlurmLauncher")
