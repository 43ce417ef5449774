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
from transformers import AutoModel

from rlhf_scaling.artifacts import building
from rlhf_scaling.checkpoint import load_checkpoint, save_checkpoint
from rlhf_scaling.config import ConfigError
from rlhf_scaling.distributed import (DistEnv, barrier, deepspeed_config, dist_env_from_environ, from_rank0,
                                      full_fp32_state_dict, gathered, load_deepspeed_checkpoint, mean_over_ranks,
                                      save_deepspeed_checkpoint, wrap_with_deepspeed, zero3_construction)
from rlhf_scaling.data.rm_batches import EncodedGroup, collate, encode_groups, expand_pairs
from rlhf_scaling.losses import expected_calibration_error, kwise_loss, length_correlation, pair_accuracy
from rlhf_scaling.models import RewardModel, build_reward_model, count_parameters, save_reward_model
from rlhf_scaling.packing import require_exact_packing
from rlhf_scaling.preemption import Preemption
from rlhf_scaling.stages.common import rm_artifact, setup_task
from rlhf_scaling.stages.data import load_data
from rlhf_scaling.training import autocast, check_finite, optimizer_and_schedule, resolve_device, seed_everything

log = logging.getLogger(__name__)


def group_loss(model: RewardModel, batch, use_margin: bool, padding_free: bool) -> torch.Tensor:
    """Mean −log σ(r_w − r_l [− m]) over the batch's pairs, from one forward per response."""
    rewards = model(batch.input_ids, batch.attention_mask, padding_free)  # (N,)
    return kwise_loss(batch.reward_grid(rewards), batch.pairs, batch.pair_mask,
                      batch.margins if use_margin else None)


@torch.no_grad()
def evaluate(model: RewardModel, groups: List[EncodedGroup], pad_id: int, device, batch_size: int = 64,
             padding_free: bool = False) -> dict:
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
        r = model(batch.input_ids, batch.attention_mask, padding_free)
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
                 env: DistEnv = DistEnv(), ds_config: Optional[dict] = None) -> dict:
    """Train one RM; resumes from `ckpt_dir` if a checkpoint is there.

    With a `ds_config` (deepspeed.enabled) the model trains through a DeepSpeed engine over
    env.world_size data-parallel ranks with the SAME optimizer steps as one process:
      - rm_train.batch_size is the GLOBAL micro-batch (units: prompts for kwise, pairs for
        bt/margin), split across ranks (rank r takes units r, r + W, r + 2W, ... of it), and one
        optimizer step still consumes batch_size x grad_accum units in total, whatever W is;
      - each rank's loss is its share of the micro-batch's mean over pairs (its pairs' loss sum
        / the micro-batch's pair count x W), so DeepSpeed's average over ranks is exactly the
        one-process loss even when the ranks' shares differ (the last, partial micro-batch); a
        rank with no unit runs one with weight 0 (under ZeRO-3 every rank must forward);
      - engine.backward divides by grad_accum and engine.step steps the optimizer, clips (at
        rm_train.max_grad_norm) and steps the LR schedule at accumulation boundaries only, so
        the loss is NOT divided by grad_accum here (unlike the one-process branch);
      - checkpoints are DeepSpeed's own (sharded optimizer state, exact resume) in `ckpt_dir`,
        which every rank writes, so it must be on a filesystem shared by the nodes.
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
    if ds_config is not None:
        engine = wrap_with_deepspeed(model, optimizer, scheduler, ds_config, env)
        scheduler = engine.lr_scheduler
        resumed = load_deepspeed_checkpoint(engine, ckpt_dir, env)
        if resumed is not None:
            step = int(resumed[0]["step"])
    else:
        state = load_checkpoint(ckpt_dir, model)
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            step = int(state["step"])
    if step:
        log.info("member %d resumed at step %d/%d from %s", member, step, total_steps, ckpt_dir)
    if t.padding_free:  # under ZeRO-3 a collective forward: every rank runs it
        require_exact_packing((engine.module if engine is not None else model).backbone, "rm_train.padding_free", device)
    use_margin = t.loss == "margin"
    bar = tqdm(total=total_steps, initial=step, desc=f"rm {cfg.rm.name} m{member}",
               disable=not cfg.progress or not env.is_main, leave=False)
    model.train()

    def checkpoint(at: int) -> None:
        if engine is not None:
            save_deepspeed_checkpoint(engine, ckpt_dir, at, {}, env)
        else:
            save_checkpoint(ckpt_dir, model, {"optimizer": optimizer.state_dict(),
                                              "scheduler": scheduler.state_dict(), "step": at})

    with Preemption() as preemption:
        while step < total_steps:
            epoch = step // steps_per_epoch
            gen = torch.Generator().manual_seed(cfg.seed + t.seed + 1000 * member + epoch)
            order = torch.randperm(len(train), generator=gen).tolist()
            first = (step - epoch * steps_per_epoch) * t.grad_accum  # micro-batches already done this epoch
            for micro in range(first, steps_per_epoch * t.grad_accum):
                idx = order[micro * t.batch_size:(micro + 1) * t.batch_size]
                if engine is not None:
                    mine, weight = _rank_share(train, idx, env)
                    batch = collate([train[i] for i in mine], pad_id).to(device)
                    loss = group_loss(engine, batch, use_margin, t.padding_free) * weight
                    check_finite(loss, f"rm member {member}", step)
                    engine.backward(loss)  # divides by grad_accum itself; gradients averaged over ranks
                    engine.step()  # optimizer, clipping and LR schedule at accumulation boundaries only
                    loss = mean_over_ranks(loss.detach()) / t.grad_accum  # the one-process micro-batch loss / accum
                    if (micro + 1) % t.grad_accum:
                        continue
                    grad_norm = engine.get_global_grad_norm() or 0.0  # before clipping, like clip_grad_norm_
                    # The step is taken inside engine.step: stop before any checkpoint can hold its weights.
                    check_finite(grad_norm, f"rm member {member}", step + 1, "gradient norm")
                else:
                    batch = collate([train[i] for i in idx], pad_id).to(device)
                    with autocast(t.precision, device):
                        loss = group_loss(model, batch, use_margin, t.padding_free) / t.grad_accum
                    check_finite(loss, f"rm member {member}", step)
                    loss.backward()
                    if (micro + 1) % t.grad_accum:
                        continue
                    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.max_grad_norm or float("inf"))
                    check_finite(grad_norm, f"rm member {member}", step + 1, "gradient norm")  # before the weights move
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                step += 1
                bar.update(1)
                metrics = {"rm/step": step, "rm/member": member, "rm/loss": loss.item() * t.grad_accum,
                           "rm/lr": scheduler.get_last_lr()[0], "rm/grad_norm": float(grad_norm), "rm/epoch": epoch}
                if step % t.eval_every == 0 or step == total_steps:
                    metrics.update(evaluate(engine or model, eval_groups, pad_id, device, padding_free=t.padding_free))
                    bar.set_postfix(acc=f"{metrics['rm/val_accuracy']:.3f}")
                tracker.log(metrics)
                saved = step % t.checkpoint_every == 0 or step == stop_at_step
                if saved:
                    checkpoint(step)
                # Preempted (SIGUSR2 from Slurm / submitit): checkpoint here, then requeue and stop.
                preemption.checkpoint_if_signalled(lambda: saved or checkpoint(step))
                if step == stop_at_step or step == total_steps:
                    break
            if stop_at_step is not None and step >= stop_at_step and step < total_steps:
                bar.close()
                return {}
    bar.close()
    return evaluate(engine or model, eval_groups, pad_id, device, padding_free=t.padding_free)


# ----------------------------------------------------------------------------- data parallelism (DeepSpeed)
# Boilerplate around the algorithm: which units a rank trains on, checkpoints, and the ZeRO-3
# build/save rules. None of it runs without deepspeed.enabled.


def _rank_share(train: List[EncodedGroup], idx: List[int], env: DistEnv):
    """This rank's units of the global micro-batch `idx`, and the weight that turns the mean loss over
    its pairs into its share of the micro-batch's mean: (its pairs / all pairs) x world_size."""
    mine = idx[env.rank::env.world_size]
    total = sum(len(train[i].pairs) for i in idx)
    if not mine:  # fewer units than ranks (the last micro-batch): forward one unit that counts for nothing
        return idx[:1], 0.0
    return mine, sum(len(train[i].pairs) for i in mine) / total * env.world_size


def _deepspeed_settings(cfg: DictConfig, env: DistEnv) -> dict:
    """The DeepSpeed config of this RM run; rm_train.batch_size is the global micro-batch."""
    t = cfg.rm_train
    if t.batch_size % env.world_size:
        raise ConfigError(f"rm_train.batch_size={t.batch_size} (the global micro-batch) must be divisible by the "
                         f"{env.world_size} ranks")
    return deepspeed_config(cfg.deepspeed, micro_batch_per_gpu=t.batch_size // env.world_size,
                            grad_accum=t.grad_accum, world_size=env.world_size, max_grad_norm=t.max_grad_norm,
                            precision=t.precision)


def _build_member(cfg: DictConfig, tok, device, ds_config: Optional[dict]) -> RewardModel:
    """The RM to train, seeded by the caller.

    Under ZeRO-3 a pretrained backbone is loaded straight into shards (zero.Init) and the fresh
    head, created inside it too, is initialised again while gathered: RewardModel.__init__ wrote
    its init into empty shards (OpenRLHF #186). Random-init (tiny) specs are built whole, as in one
    process, and deepspeed.initialize shards them: under zero.Init transformers' weight init would
    also hit empty shards and training would start from PyTorch's default init instead (measured:
    19 of 30 tensors differ), breaking the equality with one process.
    """
    zero3 = ds_config is not None and ds_config["zero_optimization"]["stage"] == 3
    if not zero3 or cfg.rm.source == "tiny":
        return build_reward_model(cfg.rm, tok).to(device)
    try:
        with zero3_construction(ds_config, loads_pretrained=True):
            model = build_reward_model(cfg.rm, tok)
    except RuntimeError as err:  # transformers' ZeRO-3 loading needs accelerate
        log.warning("%s; building the RM whole on every rank and sharding it afterwards (more CPU memory)", err)
        return build_reward_model(cfg.rm, tok).to(device)
    hidden = model.backbone.config.hidden_size
    with gathered(model.head.parameters(), modifier_rank=0):
        torch.nn.init.normal_(model.head.weight, std=1.0 / (hidden + 1) ** 0.5)  # as RewardModel.__init__
        torch.nn.init.zeros_(model.head.bias)
    return model


def _save_member(model: RewardModel, member_dir: Path, final: dict, member: int, env: DistEnv) -> Optional[dict]:
    """Write a DeepSpeed-trained member as ONE consolidated fp32 safetensors file (the same keys,
    shapes and dtypes as a one-process run), from the fp32 master weights gathered onto rank 0.
    A collective; returns the metadata written (rank 0) or None."""
    state = full_fp32_state_dict(model)
    if not env.is_main:
        return None
    state["offset"] = torch.tensor(float(final["rm/val_reward_mean"]))  # re-centred, as model.offset.fill_ does
    with torch.device("meta"):  # a shell for the gathered tensors: no init, no RNG draw, no memory
        whole = RewardModel(AutoModel.from_config(model.backbone.config))
    whole.load_state_dict(state, strict=True, assign=True)
    meta = {**final, "rm/n_params": count_parameters(whole), "rm/member": member}
    save_reward_model(whole, member_dir, meta)
    return meta


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
        ds_config = _deepspeed_settings(cfg, env) if cfg.deepspeed.enabled else None
        # Rank 0 owns the artifact (lock, final rename) and decides whether it is built here; every
        # rank writes its DeepSpeed checkpoint shards into the same partial folder (fixed name).
        with (building(artifact) if env.is_main else _shared_partial(artifact)) as out:
            if bool(from_rank0(out is not None)):
                out = artifact.partial
                members = []
                for m in range(t.ensemble_size):
                    member_dir = out / f"member_{m}"
                    if (member_dir / "reward_model.json").is_file():
                        members.append(json.loads((member_dir / "reward_model.json").read_text()))
                        continue
                    seed_everything(cfg.seed + t.seed + 1000 * m)
                    model = _build_member(cfg, tok, device, ds_config)
                    final = train_member(model, train, evals, cfg=cfg, member=m, pad_id=tok.pad_token_id,
                                         device=device, ckpt_dir=out / f"member_{m}.ckpt", tracker=tracker,
                                         stop_at_step=stop_at_step, env=env, ds_config=ds_config)
                    if not final:
                        raise InterruptedError(f"rm training stopped at step {stop_at_step} (checkpoint kept)")
                    if ds_config is None:
                        # Re-centre: the init policy's samples (the eval responses) get mean reward 0 (Gao et al.).
                        model.offset.fill_(final["rm/val_reward_mean"])
                        meta = {**final, "rm/n_params": count_parameters(model), "rm/member": m}
                        save_reward_model(model, member_dir, meta)
                    else:
                        meta = _save_member(model, member_dir, final, m, env)
                        barrier()
                    if env.is_main:
                        shutil.rmtree(out / f"member_{m}.ckpt", ignore_errors=True)  # the member is final now
                    members.append(meta)
                if env.is_main:
                    summary = {k: sum(mm[k] for mm in members) / len(members) for k in members[0] if k != "rm/member"}
                    summary["rm/n_params"] = members[0]["rm/n_params"]
                    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
        barrier()  # followers read the artifact only after rank 0 renamed it into place
    summary = json.loads((artifact.path / "metrics.json").read_text())
    log.info("proxy RM %s: val accuracy %.3f, loss %.3f -> %s", cfg.rm.name, summary["rm/val_accuracy"],
             summary["rm/val_loss"], artifact.path)
    return {**summary, "rm/artifact": str(artifact.path)}


@contextlib.contextmanager
def _shared_partial(artifact):
    """A non-main rank's view of the artifact: rank 0 creates (or skips) the partial folder."""
    yield artifact.partial
