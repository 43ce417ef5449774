"""Ranks from torchrun/Slurm variables, joining a process group, DeepSpeed config arithmetic, the
per-rank loss weights, and (marker `distributed`) ZeRO-2/3 RM training on 2 CPU ranks (gloo) that
matches plain single-process PyTorch on the same seed, data and global batch, resume included."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rlhf_scaling import distributed
from rlhf_scaling.distributed import (DistEnv, deepspeed_config, dist_env_from_environ, first_host, free_port,
                                      init_distributed)

# ----------------------------------------------------------------------------- launcher environment


def test_env_from_torchrun_variables():
    env = dist_env_from_environ({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "MASTER_ADDR": "n1",
                                 "MASTER_PORT": "1234"})
    assert env == DistEnv(3, 1, 4, "n1", 1234)


def test_torchrun_variables_win_over_slurm_ones():
    """torchrun started inside a Slurm allocation: its ranks are the ones that exist."""
    env = dist_env_from_environ({"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                                 "MASTER_PORT": "29999", "SLURM_PROCID": "0", "SLURM_NTASKS": "1",
                                 "SLURM_JOB_NODELIST": "gpu01", "SLURM_JOB_ID": "7"})
    assert env == DistEnv(1, 1, 2, "127.0.0.1", 29999)


def test_env_from_slurm_variables():
    env = dist_env_from_environ({"SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NTASKS": "8",
                                 "SLURM_JOB_NODELIST": "gpu[03-06]", "SLURM_JOB_ID": "4242"})
    assert (env.rank, env.local_rank, env.world_size) == (5, 1, 8)
    assert env.master_addr == "gpu03" and env.master_port == 10000 + 4242 % 20000


def test_slurm_port_stays_in_range_and_nodelist_falls_back_to_slurm_nodelist():
    env = dist_env_from_environ({"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_NODELIST": "cn7",
                                 "SLURM_JOB_ID": "123456789"})
    assert env.master_addr == "cn7" and 10000 <= env.master_port < 30000
    assert env.master_port == 10000 + 123456789 % 20000


def test_single_process_without_launcher_variables():
    assert dist_env_from_environ({}) == DistEnv()
    assert dist_env_from_environ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) == DistEnv()


NODELISTS = [("node7", "node7"), ("a1,a2", "a1"), ("gpu[12,15-16]", "gpu12"), ("host[1-3,5]", "host1"),
             ("gpu[03-05,7],cpu1", "gpu03"), ("node[1-2]-ib,x3", "node1-ib"), ("c-[009-010]", "c-009")]


@pytest.mark.parametrize("nodelist, host", NODELISTS)
def test_first_host_of_a_nodelist(nodelist, host):
    assert first_host(nodelist) == host


@pytest.mark.parametrize("nodelist, host", NODELISTS)
def test_first_host_without_scontrol(monkeypatch, nodelist, host):
    """Our own parser, for machines without Slurm's client tools."""
    def no_scontrol(*args, **kwargs):
        raise FileNotFoundError("scontrol")

    monkeypatch.setattr(distributed.subprocess, "run", no_scontrol)
    assert first_host(nodelist) == host


# ----------------------------------------------------------------------------- process group


def test_init_distributed_is_a_no_op_for_one_process_without_deepspeed():
    assert init_distributed(DistEnv()) is False
    assert not torch.distributed.is_initialized()


def test_init_distributed_fails_with_a_message_instead_of_hanging(monkeypatch):
    """Rank 1 of 2 whose master never comes up (DESIGN §2b multi-node hangs): a clear error after
    the timeout, naming the address it tried."""
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(name, "")  # records the original, so what init_distributed exports is undone
        monkeypatch.delenv(name)  # (a leaked RANK=1 would silence every later tracker)
    port = free_port()
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=rf"rank 1/2 could not join .*127\.0\.0\.1:{port} within 2s"):
        init_distributed(DistEnv(1, 1, 2, "127.0.0.1", port), backend="gloo", timeout_s=2)
    assert time.monotonic() - start < 60
    assert not torch.distributed.is_initialized()


# ----------------------------------------------------------------------------- DeepSpeed config


def _profile(**kw):
    return {"zero_stage": 2, "offload_optimizer": False, "offload_param": False, "bf16": False, **kw}


@pytest.mark.parametrize("micro, accum, world", [(1, 1, 1), (4, 8, 16), (3, 2, 2), (8, 1, 64)])
def test_deepspeed_batch_arithmetic(micro, accum, world):
    cfg = deepspeed_config(**_profile(), micro_batch_per_gpu=micro, grad_accum=accum, world_size=world,
                           max_grad_norm=1.0, precision="fp32")
    assert cfg["train_batch_size"] == micro * accum * world
    assert cfg["train_micro_batch_size_per_gpu"] == micro and cfg["gradient_accumulation_steps"] == accum


def test_deepspeed_config_takes_its_numbers_from_the_stage():
    ds = _profile(zero_stage=3, offload_optimizer=True, offload_param=True)
    cfg = deepspeed_config(**ds, micro_batch_per_gpu=4, grad_accum=8, world_size=16, max_grad_norm=0.5, precision="bf16")
    assert cfg["gradient_clipping"] == 0.5 and cfg["bf16"]["enabled"]
    assert cfg["zero_optimization"]["stage"] == 3 and cfg["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert cfg["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert cfg["zero_force_ds_cpu_optimizer"] is False  # our torch AdamW is allowed with offload
    assert "optimizer" not in cfg and "scheduler" not in cfg
    assert "auto" not in json.dumps(cfg)


def test_deepspeed_precision_and_clipping_switches():
    plain = deepspeed_config(**_profile(), micro_batch_per_gpu=1, grad_accum=1, world_size=1, max_grad_norm=0.0,
                             precision="fp32")
    assert plain["gradient_clipping"] == 0.0 and not plain["bf16"]["enabled"]
    assert "offload_optimizer" not in plain["zero_optimization"]
    assert deepspeed_config(**_profile(bf16=True), micro_batch_per_gpu=1, grad_accum=1, world_size=1, max_grad_norm=1.0,
                            precision="fp32")["bf16"]["enabled"]
    # offload_param exists only in ZeRO-3
    z2 = deepspeed_config(**_profile(offload_param=True), micro_batch_per_gpu=1, grad_accum=1, world_size=1,
                          max_grad_norm=1.0, precision="fp32")
    assert "offload_param" not in z2["zero_optimization"]


# ----------------------------------------------------------------------------- per-rank loss weights


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_rank_shares_add_up_to_the_one_process_loss(world):
    """sum_r weight_r x mean(pair losses of rank r) / W == mean over all pairs of the micro-batch,
    with unequal pair counts per unit and more ranks than units (weight-0 stand-ins)."""
    from rlhf_scaling.data.rm_batches import EncodedGroup
    from rlhf_scaling.stages.rm import rank_share

    gen = torch.Generator().manual_seed(0)
    pair_counts = [1, 6, 3, 2]
    train = [EncodedGroup([[1]], [(0, 0)] * n, None, None) for n in pair_counts]
    losses = [torch.rand(n, generator=gen, dtype=torch.float64) for n in pair_counts]
    idx = [2, 0, 3, 1]
    one_process = torch.cat([losses[i] for i in idx]).mean()
    total, used = 0.0, []
    for rank in range(world):
        mine, weight = rank_share(train, idx, rank, world)
        assert mine, "every rank forwards something (ZeRO-3 collectives)"
        total += weight * torch.cat([losses[i] for i in mine]).mean() / world
        used += mine if weight else []
    assert sorted(used) == sorted(idx)  # each unit counted exactly once
    assert float(total) == pytest.approx(float(one_process), rel=1e-12)


# ----------------------------------------------------------------------------- 2 CPU ranks vs one process

# 41 prompts x K=4 (6 pairs each), global micro-batch 8, 2 micro-batches per step: the last
# micro-batch of each epoch holds ONE prompt, so rank 1 runs a weight-0 stand-in there and the
# other micro-batches split 4/4; 3 optimizer steps per epoch, 9 in all.
UPSTREAM = ["stage=rm", "progress=false", "model@policy=tiny-xs", "sft.steps=20", "sft.n_demos=200",
            "sft.batch_size=16", "data.responses_per_prompt=4", "data.comparison_budget=246",
            "data.n_eval_prompts=16"]
RM = [*UPSTREAM, "model@rm=tiny-s", "rm_train.epochs=3", "rm_train.batch_size=8", "rm_train.grad_accum=2",
      "rm_train.eval_every=3", "rm_train.checkpoint_every=1000"]
STOP_AT = 4

# An interrupted run (like a preemption after STOP_AT optimizer steps); the CLI then resumes it.
INTERRUPTED_WORKER = """
import sys
from pathlib import Path
from rlhf_scaling.cli import compose
from rlhf_scaling.distributed import dist_env_from_environ, init_distributed
from rlhf_scaling.stages import rm
from rlhf_scaling.stages.common import open_tracker

cfg = compose(sys.argv[3:])
init_distributed(dist_env_from_environ())
try:  # the InterruptedError passes through the tracker, which records the run as not completed
    with open_tracker(cfg, Path(sys.argv[1]), "rm", resume=True) as tracker:
        rm.run(cfg, tracker, stop_at_step=int(sys.argv[2]))
except InterruptedError:
    sys.exit(0)
sys.exit("the run was not interrupted")
"""


def _records(run_dir: Path):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _curve(run_dir: Path, key: str):
    return [r[key] for r in _records(run_dir) if key in r]


def _member(store: Path) -> Path:
    (member,) = (store / "rm").glob("*/member_0")
    return member


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """Tiny SFT policy, preference data, and the plain one-process RM run the ranks must match."""
    from rlhf_scaling.cli import compose
    from rlhf_scaling.stages import data, rm, sft
    from rlhf_scaling.stages.common import open_tracker

    root = tmp_path_factory.mktemp("ds")
    cfg = compose([*RM, f"artifacts_dir={root / 'single'}"])
    for name, module in (("sft", sft), ("data", data), ("rm", rm)):
        with open_tracker(cfg, root / f"single_{name}", name) as tracker:
            module.run(cfg, tracker)
    return root


def _torchrun(args, *, timeout=600):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SLURM_") and k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    # The JIT build of DeepSpeed's CPU comm op (~30 s) happens once per machine, not once per test run.
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "rlhf-scaling" / "torch_extensions"))
    env["OMP_NUM_THREADS"] = "1"  # 2 ranks on a 2-core machine
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           f"--master_port={free_port()}", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("profile, interrupt", [("zero2", False), ("zero3", True)])
def test_zero_on_two_cpu_ranks_matches_single_process(single, tmp_path, profile, interrupt):
    """Same seed, data and global batch: the loss curve, eval and saved RM of 2 ranks under
    ZeRO-2 / ZeRO-3 equal one process's within fp32 tolerance. The ZeRO-3 run is interrupted
    after STOP_AT steps and resumed from DeepSpeed's checkpoint by a fresh launch."""
    store, run_dir = tmp_path / "store", tmp_path / "run"
    shutil.copytree(single / "single", store, ignore=shutil.ignore_patterns("rm"))
    overrides = [*RM, f"deepspeed={profile}", "deepspeed.bf16=false", f"artifacts_dir={store}"]
    if interrupt:
        worker = tmp_path / "interrupted_worker.py"
        worker.write_text(INTERRUPTED_WORKER)
        _torchrun([str(worker), str(run_dir), str(STOP_AT), *overrides])
        assert _curve(run_dir, "rm/step") == list(range(1, STOP_AT + 1))
        assert list((store / "rm").glob(f"*.partial/member_0.ckpt/step{STOP_AT}"))  # DeepSpeed's checkpoint
    _torchrun(["-m", "rlhf_scaling.cli", *overrides, f"hydra.run.dir={run_dir}"])

    one, two = single / "single_rm", run_dir
    assert _curve(two, "rm/step") == _curve(one, "rm/step") == list(range(1, 10))
    for key in ("rm/loss", "rm/grad_norm", "rm/lr", "rm/val_loss", "rm/val_accuracy"):
        assert _curve(two, key) == pytest.approx(_curve(one, key), rel=1e-4, abs=1e-6), key
    assert len(set(_curve(one, "rm/loss"))) > 5  # the curve moves: a real comparison

    # The saved RM: one consolidated safetensors file, in the one-process format, scoring the same.
    from safetensors.torch import load_file

    from rlhf_scaling.models import REWARD_MODEL_FILE, load_reward_model

    a_dir, b_dir = _member(single / "single"), _member(store)
    wa, wb = load_file(str(a_dir / REWARD_MODEL_FILE)), load_file(str(b_dir / REWARD_MODEL_FILE))
    assert {k: (v.dtype, v.shape) for k, v in wb.items()} == {k: (v.dtype, v.shape) for k, v in wa.items()}
    assert sorted(p.name for p in b_dir.iterdir()) == sorted(p.name for p in a_dir.iterdir())
    assert not list(b_dir.parent.glob("member_0.ckpt"))  # DeepSpeed's checkpoint went with the finished member
    # Re-centred scores, not raw ones: a pairwise loss has zero gradient along a constant shift of
    # every reward (the head bias), so Adam turns rounding noise there into drift that differs with
    # the reduction order (measured: offsets -0.9818 vs -0.9839); the offset absorbs it exactly.
    a, b = load_reward_model(a_dir), load_reward_model(b_dir)
    ids = torch.tensor([[3, 13, 4, 21, 22, 25, 1], [5, 6, 7, 8, 9, 10, 11]])
    mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2])
    with torch.no_grad():
        torch.testing.assert_close(b(ids, mask), a(ids, mask), rtol=1e-4, atol=1e-5)
