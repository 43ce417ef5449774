"""Ranks from torchrun/Slurm variables, DeepSpeed config arithmetic, and ZeRO-2/3 RM training on
2 CPU ranks (gloo) matching plain single-process PyTorch on the same seed, data and global batch."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rlhf_scaling.distributed import DistEnv, deepspeed_config, dist_env_from_environ, first_host


def test_env_from_torchrun_variables():
    env = dist_env_from_environ({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "MASTER_ADDR": "n1",
                                 "MASTER_PORT": "1234"})
    assert env == DistEnv(3, 1, 4, "n1", 1234)


def test_env_from_slurm_variables():
    env = dist_env_from_environ({"SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NTASKS": "8",
                                 "SLURM_JOB_NODELIST": "gpu[03-06]", "SLURM_JOB_ID": "4242"})
    assert (env.rank, env.local_rank, env.world_size) == (5, 1, 8)
    assert env.master_addr == "gpu03" and env.master_port == 10000 + 4242 % 20000


def test_single_process_without_launcher_variables():
    assert dist_env_from_environ({}) == DistEnv()
    assert dist_env_from_environ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) == DistEnv()


@pytest.mark.parametrize("nodelist, host", [("node7", "node7"), ("a1,a2", "a1"), ("gpu[12,15-16]", "gpu12")])
def test_first_host_of_a_nodelist(nodelist, host):
    assert first_host(nodelist) == host


def test_deepspeed_config_takes_its_numbers_from_the_stage():
    ds = OmegaConf.create({"zero_stage": 3, "offload_optimizer": True, "offload_param": True, "bf16": False})
    cfg = deepspeed_config(ds, micro_batch_per_gpu=4, grad_accum=8, world_size=16, max_grad_norm=0.5, precision="bf16")
    assert cfg["train_batch_size"] == 4 * 8 * 16 and cfg["gradient_accumulation_steps"] == 8
    assert cfg["gradient_clipping"] == 0.5 and cfg["bf16"]["enabled"]
    assert cfg["zero_optimization"]["stage"] == 3 and cfg["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert "optimizer" not in cfg and "scheduler" not in cfg
    assert "auto" not in json.dumps(cfg)


RM = ["stage=rm", "progress=false", "sft.steps=100", "sft.n_demos=500", "data.comparison_budget=384",
      "data.n_eval_prompts=32", "rm_train.epochs=1", "rm_train.batch_size=8", "rm_train.eval_every=8"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses(run_dir: Path):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["rm/loss"] for r in rows if "rm/loss" in r], [r for r in rows if "rm/val_accuracy" in r][-1]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """SFT policy and preference data, and the single-process RM run they are compared with."""
    root = tmp_path_factory.mktemp("ds")
    subprocess.run([sys.executable, "-m", "rlhf_scaling.cli", *RM, "stage.build_upstream=true",
                    f"artifacts_dir={root / 'single'}", f"hydra.run.dir={root / 'single_run'}"], check=True,
                   capture_output=True, timeout=600)
    return root


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("profile", ["zero2", "zero3"])
def test_zero_on_two_cpu_ranks_matches_single_process(upstream, profile):
    store = upstream / profile
    shutil.copytree(upstream / "single", store, ignore=shutil.ignore_patterns("rm"))
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(Path.home() / ".cache" / "rlhf-scaling" / "torch_extensions"),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", f"--master_port={_free_port()}",
         "-m", "rlhf_scaling.cli", *RM, f"deepspeed={profile}", "deepspeed.bf16=false", f"artifacts_dir={store}",
         f"hydra.run.dir={upstream / (profile + '_run')}"], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    single, single_eval = _losses(upstream / "single_run")
    sharded, sharded_eval = _losses(upstream / f"{profile}_run")
    assert len(single) == len(sharded) > 5
    assert sharded == pytest.approx(single, rel=1e-4, abs=1e-5)
    assert sharded_eval["rm/val_loss"] == pytest.approx(single_eval["rm/val_loss"], rel=1e-4)
    # The saved RM is one consolidated safetensors file that loads and scores like the single-process one.
    import torch

    from rlhf_scaling.models import load_reward_model

    a = load_reward_model(next((upstream / "single" / "rm").glob("*/member_0")))
    b = load_reward_model(next((store / "rm").glob("*/member_0")))
    ids = torch.tensor([[3, 13, 4, 21, 22, 25, 1]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        torch.testing.assert_close(b(ids, mask), a(ids, mask), rtol=1e-4, atol=1e-5)
