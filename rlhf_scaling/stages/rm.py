"""Stage `rm`: train a proxy reward model (or an ensemble of M) on gold-labelled comparisons.

Recipe: data artifact -> encode every response once -> per member: seed, build RM, AdamW +
schedule -> loop over micro-batches (bt/margin: one pair each; kwise: one prompt's K responses
with all its C(K,2) pairs, ONE forward per response) -> periodic held-out eval and resumable
checkpoints -> re-centre so the init policy's mean reward is 0 -> save the RM artifact.

Exact resume: batch order comes from a generator seeded by (seed, member, epoch), the loop skips
the micro-batches of optimizer steps already done, and the optimizer/scheduler state is restored.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
from pathlib import Path
from typing import List, Optional

import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from rlhf_scaling.artifacts import building
from rlhf_scaling.checkpoint import load_checkpoint, save_checkpoint
from rlhf_scaling.distributed import DistEnv, deepspeed_config, dist_env_from_environ
from rlhf_scaling.data.rm_batches import EncodedGroup, collate, encode_groups, expand_pairs
from rlhf_scaling.losses import expected_calibration_error, kwise_loss, length_correlation, pair_accuracy
from rlhf_scaling.models import RewardModel, build_reward_model, count_parameters, save_reward_model
from rlhf_scaling.stages.common import rm_artifact, setup_task
from rlhf_scaling.stages.data import load_data
from rlhf_scaling.training import autocast, check_finite, optimizer_and_schedule, resolve_device, seed_everything

log = logging.getLogger(__name__)


def group_loss(model: RewardModel, batch, use_margin: bool) -> torch.Tensor:
    """Mean −log σ(r_w − r_l [− m]) over the batch's pairs, from one forward per response."""
    rewards = model(batch.input_ids, batch.attention_mask)  # (N,)
    return kwise_loss(batch.reward_grid(rewards), batch.pairs, batch.pair_mask,
                      batch.margins if use_margin else None)


@torch.no_grad()
def evaluate(model: RewardModel, groups: List[EncodedGroup], pad_id: int, device, batch_size: int = 64) -> dict:
    """Held-out metrics over every labelled pair of the eval groups.

    rm/val_loss, rm/val_accuracy (ties 0.5), rm/val_ece, rm/val_length_corr (reward vs tokens),
    rm/val_gold_corr (Pearson of reward with gold over responses, where gold is known),
    rm/val_reward_mean (mean reward over the eval responses = the init policy's samples).
    """
    was_training = model.training
    model.eval()
    chosen, rejected, rewards, lengths, gold = [], [], [], [], []
    for start in range(0, len(groups), batch_size):
        part = groups[start:start + batch_size]
        batch = collate(part, pad_id).to(device)
        r = model(batch.input_ids, batch.attention_mask)
        grid = batch.reward_grid(r)
        w, l = batch.pairs[..., 0], batch.pairs[..., 1]
        chosen.append(grid.gather(1, w)[batch.pair_mask].cpu())
        rejected.append(grid.gather(1, l)[batch.pair_mask].cpu())
        rewards.append(r.cpu())
        lengths.append(batch.attention_mask.sum(1).cpu())
        gold.extend(x for g in part for x in (g.gold or [float("nan")] * len(g.seqs)))
    model.train(was_training)
    chosen, rejected, rewards, lengths = map(torch.cat, (chosen, rejected, rewards, lengths))
    gold_t = torch.tensor(gold)
    known = ~torch.isnan(gold_t)
    gold_corr = float(torch.corrcoef(torch.stack([rewards[known], gold_t[known]]))[0, 1]) if known.sum() > 2 else float("nan")
    return {
        "rm/val_loss": float(torch.nn.functional.softplus(rejected - chosen).mean()),
        "rm/val_accuracy": pair_accuracy(chosen, rejected),
        "rm/val_ece": expected_calibration_error(chosen, rejected),
        "rm/val_length_corr": length_correlation(rewards, lengths.float()),
        "rm/val_gold_corr": gold_corr,
        "rm/val_reward_mean": float(rewards.mean()),
    }


def train_member(model: RewardModel, train: List[EncodedGroup], eval_groups: List[EncodedGroup], *, cfg: DictConfig,
                 member: int, pad_id: int, device, ckpt_dir: Path, tracker, stop_at_step: Optional[int] = None,
                 env: DistEnv = DistEnv()) -> dict:
    """Train one RM; resumes from `ckpt_dir` if a checkpoint is there.

    With deepspeed.enabled the model trains through a DeepSpeed engine over env.world_size ranks:
    rm_train.batch_size stays the GLOBAL micro-batch (each rank takes every world_size-th unit of
    it), so the optimizer sees the same batches as one process; DeepSpeed does the accumulation,
    the clipping (from rm_train.max_grad_norm) and its own sharded checkpoints.
    stop_at_step: return after that many optimizer steps (with a checkpoint), as a preemption
    would; used by the resume tests. Returns the final eval metrics.
    """
    t = cfg.rm_train
    micro_per_epoch = math.ceil(len(train) / t.batch_size)
    steps_per_epoch = max(1, micro_per_epoch // t.grad_accum)
    total_steps = steps_per_epoch * t.epochs
    optimizer, scheduler = optimizer_and_schedule(
        model.parameters(), lr=t.lr, weight_decay=t.weight_decay, schedule=t.lr_schedule,
        warmup_ratio=t.warmup_ratio, total_steps=total_steps)
    engine, step = None, 0
    if cfg.deepspeed.enabled:
        import deepspeed

        if t.batch_size % env.world_size:
            raise ValueError(f"rm_train.batch_size={t.batch_size} must be divisible by the {env.world_size} ranks")
        ds_config = deepspeed_config(cfg.deepspeed, micro_batch_per_gpu=t.batch_size // env.world_size,
                                     grad_accum=t.grad_accum, world_size=env.world_size,
                                     max_grad_norm=t.max_grad_norm, precision=t.precision)
        engine, optimizer, _, scheduler = deepspeed.initialize(model=model, optimizer=optimizer,
                                                               lr_scheduler=scheduler, config=ds_config)
        if (ckpt_dir / "latest").is_file():
            _, client = engine.load_checkpoint(str(ckpt_dir))
            step = int(client["step"])
    else:
        state = load_checkpoint(ckpt_dir, model)
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            step = int(state["step"])
    if step:
        log.info("member %d resumed at step %d/%d from %s", member, step, total_steps, ckpt_dir)
    use_margin = t.loss == "margin"
    bar = tqdm(total=total_steps, initial=step, desc=f"rm {cfg.rm.name} m{member}",
               disable=not cfg.progress or not env.is_main, leave=False)
    model.train()
    while step < total_steps:
        epoch = step // steps_per_epoch
        gen = torch.Generator().manual_seed(cfg.seed + t.seed + 1000 * member + epoch)
        order = torch.randperm(len(train), generator=gen).tolist()
        first = (step - epoch * steps_per_epoch) * t.grad_accum  # micro-batches already done this epoch
        for micro in range(first, steps_per_epoch * t.grad_accum):
            idx = order[micro * t.batch_size:(micro + 1) * t.batch_size][env.rank::env.world_size]
            batch = collate([train[i] for i in idx], pad_id).to(device)
            if engine is not None:
                loss = group_loss(engine, batch, use_margin)
                check_finite(loss, f"rm member {member}", step)
                engine.backward(loss)  # scales by 1/grad_accum itself
                engine.step()  # optimizer, clipping and LR schedule at accumulation boundaries only
                loss = _mean_over_ranks(loss.detach()) / t.grad_accum
                if (micro + 1) % t.grad_accum:
                    continue
                grad_norm = engine.get_global_grad_norm() or 0.0
            else:
                with autocast(t.precision, device):
                    loss = group_loss(model, batch, use_margin) / t.grad_accum
                check_finite(loss, f"rm member {member}", step)
                loss.backward()
                if (micro + 1) % t.grad_accum:
                    continue
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.max_grad_norm or float("inf"))
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            step += 1
            bar.update(1)
            metrics = {"rm/step": step, "rm/member": member, "rm/loss": loss.item() * t.grad_accum,
                       "rm/lr": scheduler.get_last_lr()[0], "rm/grad_norm": float(grad_norm), "rm/epoch": epoch}
            if step % t.eval_every == 0 or step == total_steps:
                metrics.update(evaluate(engine or model, eval_groups, pad_id, device))
                bar.set_postfix(acc=f"{metrics['rm/val_accuracy']:.3f}")
            tracker.log(metrics)
            if step % t.checkpoint_every == 0 or step == stop_at_step:
                if engine is not None:
                    engine.save_checkpoint(str(ckpt_dir), client_state={"step": step})
                else:
                    save_checkpoint(ckpt_dir, model, {"optimizer": optimizer.state_dict(),
                                                      "scheduler": scheduler.state_dict(), "step": step})
            if step == stop_at_step or step == total_steps:
                break
        if stop_at_step is not None and step >= stop_at_step and step < total_steps:
            bar.close()
            return {}
    bar.close()
    return evaluate(engine or model, eval_groups, pad_id, device)


def _mean_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """The global mean of a per-rank scalar (what one process would have computed), for logging."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        x = x.clone()
        dist.all_reduce(x)
        x /= dist.get_world_size()
    return x


def run(cfg: DictConfig, tracker, stop_at_step: Optional[int] = None) -> dict:
    """Build (or reuse) the RM artifact for (data, rm spec, rm_train); returns eval metrics."""
    artifact = rm_artifact(cfg)
    if not artifact.exists():
        t = cfg.rm_train
        device = resolve_device(cfg.device)
        setup = setup_task(cfg)
        tok = setup.tokenizer
        train_groups, eval_groups = load_data(cfg)
        if t.loss in ("bt", "margin"):
            train_groups = expand_pairs(train_groups)  # pairwise layout: 2 forwards per comparison
        train, cut_train = encode_groups(train_groups, tok, cfg.task.max_response_tokens)
        evals, cut_eval = encode_groups(eval_groups, tok, cfg.task.max_response_tokens)
        tracker.define_step("rm/", "rm/step")
        tracker.log({"rm/train_units": len(train), "rm/train_comparisons": sum(len(g.pairs) for g in train),
                     "rm/truncated_responses": cut_train + cut_eval})
        if cut_train + cut_eval:
            log.warning("%d responses longer than task.max_response_tokens=%d were truncated",
                        cut_train + cut_eval, cfg.task.max_response_tokens)
        env = dist_env_from_environ() if cfg.deepspeed.enabled else DistEnv()
        # Rank 0 owns the artifact (lock, final rename); every rank writes its DeepSpeed shards into
        # the same partial folder, which is why it has a fixed name.
        with (building(artifact) if env.is_main else _shared_partial(artifact)) as out:
            if out is not None:
                members = []
                for m in range(t.ensemble_size):
                    member_dir = out / f"member_{m}"
                    if (member_dir / "reward_model.json").is_file():
                        members.append(json.loads((member_dir / "reward_model.json").read_text()))
                        continue
                    seed_everything(cfg.seed + t.seed + 1000 * m)
                    model = build_reward_model(cfg.rm, tok).to(device)
                    final = train_member(model, train, evals, cfg=cfg, member=m, pad_id=tok.pad_token_id,
                                         device=device, ckpt_dir=out / f"member_{m}.ckpt", tracker=tracker,
                                         stop_at_step=stop_at_step, env=env)
                    if not final:
                        raise InterruptedError(f"rm training stopped at step {stop_at_step} (checkpoint kept)")
                    with _full_weights(model, cfg):
                        # Re-centre: the init policy's samples (the eval responses) get mean reward 0 (Gao et al.).
                        model.offset.fill_(final["rm/val_reward_mean"])
                        meta = {**final, "rm/n_params": count_parameters(model), "rm/member": m}
                        if env.is_main:
                            save_reward_model(model, member_dir, meta)
                    _barrier()
                    if env.is_main:
                        shutil.rmtree(out / f"member_{m}.ckpt", ignore_errors=True)  # the member is final now
                    members.append(meta)
                summary = {k: sum(mm[k] for mm in members) / len(members) for k in members[0] if k != "rm/member"}
                summary["rm/n_params"] = members[0]["rm/n_params"]
                if env.is_main:
                    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
        _barrier()  # followers read the artifact only after rank 0 renamed it into place
    summary = json.loads((artifact.path / "metrics.json").read_text())
    log.info("proxy RM %s: val accuracy %.3f, loss %.3f -> %s", cfg.rm.name, summary["rm/val_accuracy"],
             summary["rm/val_loss"], artifact.path)
    return {**summary, "rm/artifact": str(artifact.path)}


@contextlib.contextmanager
def _shared_partial(artifact):
    """A non-main rank's view of the artifact being built by rank 0."""
    artifact.partial.mkdir(parents=True, exist_ok=True)
    yield artifact.partial


def _full_weights(model, cfg):
    """Under ZeRO-3, gather the sharded parameters on every rank (to save or count them)."""
    if cfg.deepspeed.enabled and cfg.deepspeed.zero_stage == 3:
        import deepspeed

        return deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=0)
    return contextlib.nullcontext()


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
