"""Stage `rm`: train a proxy reward model (or an ensemble of M) on gold-labelled comparisons.

Recipe: data artifact -> (margin loss: each pair's margin x rm_train.margin_scale) -> encode every
response once -> per member: seed, build RM, AdamW + schedule, a trainer (rlhf_scaling/training.py:
one process, or data-parallel ranks) -> loop over micro-batches (bt/margin: one pair each; kwise: one
prompt's K responses with all its C(K,2) pairs, ONE forward per response) -> periodic held-out eval
(with rm_train.early_stop_patience: stop when the loss on the validation split, data.n_val_prompts,
or without one the held-out loss, stops improving; keep the best weights) and resumable checkpoints
-> re-centre so the init policy's mean reward is 0 -> save the RM artifact.

Exact resume: batch order comes from a generator seeded by (seed, member, epoch), the loop skips
the micro-batches of optimizer steps already done, and the optimizer/scheduler state is restored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import shutil
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence

import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm
from transformers import AutoModel

from rlhf_scaling.artifacts import building
from rlhf_scaling.compute import FlopCounter, non_embedding_params
from rlhf_scaling.config import ConfigError
from rlhf_scaling.data.records import PreferenceGroup
from rlhf_scaling.data.rm_batches import EncodedGroup, collate, encode_groups, expand_pairs
from rlhf_scaling.distributed import DistEnv, barrier, from_rank0
from rlhf_scaling.losses import expected_calibration_error, kwise_loss, length_correlation, pair_accuracy
from rlhf_scaling.models import RewardModel, build_reward_model, count_parameters, save_reward_model
from rlhf_scaling.packing import require_exact_packing
from rlhf_scaling.preemption import Preemption
from rlhf_scaling.stages.common import rm_artifact, setup_task
from rlhf_scaling.stages.data import load_data, load_validation
from rlhf_scaling.training import (build_for_training, engine_config, make_trainer, optimizer_and_schedule, rank_env,
                                   resolve_device, seed_everything)
from rlhf_scaling.tracking import strict_json

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


def run(cfg: DictConfig, tracker, stop_at_step: Optional[int] = None) -> dict:
    """Build (or reuse) the RM artifact for (data, rm spec, rm_train); returns eval metrics.
    stop_at_step: stop each member after that many optimizer steps (with a checkpoint), as a
    preemption would (InterruptedError); used by the resume tests."""
    artifact = rm_artifact(cfg)
    if not artifact.exists():
        t = cfg.rm_train
        env = rank_env(cfg.deepspeed.enabled)
        if t.batch_size % env.world_size:
            raise ConfigError(f"rm_train.batch_size={t.batch_size} (the global micro-batch) must be divisible by "
                              f"the {env.world_size} ranks")
        engine_cfg = engine_config(**cfg.deepspeed, micro_batch_per_gpu=t.batch_size // env.world_size,
                                   grad_accum=t.grad_accum, world_size=env.world_size, max_grad_norm=t.max_grad_norm,
                                   precision=t.precision)
        setup = setup_task(cfg)
        train, evals, val = encoded_data(cfg, setup.tokenizer, tracker)
        # Rank 0 owns the artifact (lock, final rename) and decides whether it is built here; every
        # rank writes its checkpoint shards into the same partial folder (fixed name).
        with (building(artifact) if env.is_main else _shared_partial(artifact)) as out:
            if bool(from_rank0(out is not None)):
                members = [train_and_save_member(cfg, m, train, evals, val, setup.tokenizer, artifact.partial,
                                                 tracker, engine_cfg, env, stop_at_step) for m in range(t.ensemble_size)]
                if env.is_main:
                    summary = {k: sum(mm[k] for mm in members) / len(members) for k in members[0] if k != "rm/member"}
                    summary["rm/n_params"] = members[0]["rm/n_params"]
                    summary["rm/flops"] = sum(mm.get("rm/flops", 0.0) for mm in members)  # the ensemble's total
                    (artifact.partial / "metrics.json").write_text(strict_json(summary, indent=2))
        barrier()  # followers read the artifact only after rank 0 renamed it into place
    summary = json.loads((artifact.path / "metrics.json").read_text())
    log.info("proxy RM %s: val accuracy %.3f, loss %.3f -> %s", cfg.rm.name, summary["rm/val_accuracy"],
             summary["rm/val_loss"], artifact.path)
    return {**summary, "rm/artifact": str(artifact.path)}


def encoded_data(cfg: DictConfig, tok, tracker) -> tuple[List[EncodedGroup], List[EncodedGroup], List[EncodedGroup]]:
    """(train, eval, validation) groups of the data artifact, encoded once (validation [] without
    data.n_val_prompts); pairwise losses get one K=2 group per training comparison, and the margin
    loss each pair's margin x rm_train.margin_scale."""
    t = cfg.rm_train
    train_groups, eval_groups = load_data(cfg)
    val_groups = load_validation(cfg)
    if t.loss in ("bt", "margin"):
        train_groups = expand_pairs(train_groups)  # pairwise layout: 2 forwards per comparison
    if t.loss == "margin":
        train_groups = scaled_margins(train_groups, t.margin_scale)
    train, cut_train = encode_groups(train_groups, tok, cfg.task.max_response_tokens)
    evals, cut_eval = encode_groups(eval_groups, tok, cfg.task.max_response_tokens)
    val, cut_val = encode_groups(val_groups, tok, cfg.task.max_response_tokens)
    if t.early_stop_patience and not val:
        log.warning("early stopping keeps the weights of the lowest loss on the held-out set that rm/val_accuracy "
                    "is reported on, so that accuracy is optimistic by the selection: the data has no validation "
                    "split (data.n_val_prompts=%d; a loaded file's is at most a fifth of its training prompts)",
                    cfg.data.n_val_prompts)
    cut = cut_train + cut_eval + cut_val
    tracker.define_step("rm/", "rm/step", series=("rm/member",))
    tracker.log({"rm/train_units": len(train), "rm/train_comparisons": sum(len(g.pairs) for g in train),
                 "rm/truncated_responses": cut})
    if cut:
        log.warning("%d responses longer than task.max_response_tokens=%d were truncated", cut, cfg.task.max_response_tokens)
    return train, evals, val


def scaled_margins(groups: Sequence[PreferenceGroup], scale: float) -> List[PreferenceGroup]:
    """The margin loss's m per pair: `scale` x the data's margin, or x |gold_w − gold_l| where the
    data has no margins but gold scores. Data with neither is an error: a margin loss without
    margins would silently be plain Bradley–Terry."""
    out = []
    for g in groups:
        if g.margins is not None:
            margins = g.margins
        elif g.gold is not None:
            margins = tuple(abs(g.gold[w] - g.gold[l]) for w, l in g.pairs)
        else:
            raise ConfigError("rm_train.loss=margin needs a margin or gold scores on every comparison; "
                              f"this data has neither (prompt {g.prompt[:60]!r}); use rm_train.loss=bt")
        out.append(dataclasses.replace(g, margins=tuple(scale * m for m in margins)))
    return out


def train_and_save_member(cfg: DictConfig, m: int, train, evals, val, tok, out: Path, tracker, engine_cfg,
                          env: DistEnv, stop_at_step: Optional[int]) -> dict:
    """Member m of the ensemble, trained (or resumed) and written to out/member_<m>; its metadata."""
    t, member_dir = cfg.rm_train, out / f"member_{m}"
    if (member_dir / "reward_model.json").is_file():
        return json.loads((member_dir / "reward_model.json").read_text())
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed + t.seed + 1000 * m)
    model = build_for_training(lambda: build_reward_model(cfg.rm, tok), device, engine_cfg,
                               pretrained=cfg.rm.source != "tiny", reinit=RewardModel.init_head,
                               reinit_params=lambda model: model.head.parameters())
    steps_per_epoch = max(1, math.ceil(len(train) / t.batch_size) // t.grad_accum)
    optimizer, scheduler = optimizer_and_schedule(
        model.parameters(), lr=t.lr, weight_decay=t.weight_decay, schedule=t.lr_schedule,
        warmup_ratio=t.warmup_ratio, total_steps=steps_per_epoch * t.epochs)
    trainer = make_trainer(model, optimizer, scheduler, engine_cfg=engine_cfg, where=f"rm member {m}",
                           max_grad_norm=t.max_grad_norm, grad_accum=t.grad_accum, precision=t.precision,
                           device=device, env=env)
    final = train_member(trainer, train, evals, val_groups=val, member=m, epochs=t.epochs,
                         steps_per_epoch=steps_per_epoch, batch_size=t.batch_size,
                         seed=cfg.seed + t.seed + 1000 * m, use_margin=t.loss == "margin",
                         padding_free=t.padding_free, eval_every=t.eval_every, checkpoint_every=t.checkpoint_every,
                         pad_id=tok.pad_token_id, device=device, ckpt_dir=out / f"member_{m}.ckpt", tracker=tracker,
                         progress=f"rm {cfg.rm.name} m{m}" if cfg.progress and env.is_main else None,
                         stop_at_step=stop_at_step, env=env, patience=t.early_stop_patience,
                         min_steps=t.early_stop_min_steps, lr_cuts=t.plateau_lr_decays, lr_factor=t.plateau_lr_factor)
    if not final:
        raise InterruptedError(f"rm training stopped at step {stop_at_step} (checkpoint kept)")
    meta = export_member(trainer, member_dir, final, m, env)
    if env.is_main:  # the member is final now
        shutil.rmtree(out / f"member_{m}.ckpt", ignore_errors=True)
        shutil.rmtree(best_checkpoint(out / f"member_{m}.ckpt"), ignore_errors=True)
    return meta


def train_member(trainer, train: List[EncodedGroup], eval_groups: List[EncodedGroup], *, member: int, epochs: int,
                 steps_per_epoch: int, batch_size: int, seed: int, use_margin: bool, padding_free: bool,
                 eval_every: int, checkpoint_every: int, pad_id: int, device, ckpt_dir: Path, tracker,
                 progress: Optional[str] = None, stop_at_step: Optional[int] = None, env: DistEnv = DistEnv(),
                 patience: int = 0, min_steps: int = 0, val_groups: Sequence[EncodedGroup] = (), lr_cuts: int = 0,
                 lr_factor: float = 0.3) -> dict:
    """Train one RM through `trainer` (rlhf_scaling/training.py); resumes from `ckpt_dir` if a checkpoint
    is there. batch_size is the GLOBAL micro-batch (prompts for kwise, pairs for bt/margin; see rank_share),
    trainer.grad_accum micro-batches make one optimizer step, epochs x steps_per_epoch steps are run.
    stop_at_step: return {} after that many steps (with a checkpoint), as a preemption would. patience > 0:
    early stopping (EarlyStopping and `watch`, with `lr_cuts` cuts of the lr by `lr_factor`; the best weights
    go to `<ckpt_dir>.best`) on the validation groups' loss, else the held-out one. Returns final_metrics."""
    total_steps = steps_per_epoch * epochs
    state = trainer.resume(ckpt_dir)
    step = int(state["step"]) if state is not None else 0
    stopper = EarlyStopping(patience, (state or {}).get("early_stop"), min_steps,
                            watched="rm/selection_loss" if val_groups else "rm/val_loss", lr_cuts=lr_cuts)
    compute = MemberCompute(non_embedding_params(trainer.module), sum(len(s) for g in eval_groups for s in g.seqs),
                            (state or {}).get("compute"), val_tokens=sum(len(s) for g in val_groups for s in g.seqs))
    if step:
        log.info("member %d resumed at step %d/%d from %s", member, step, total_steps, ckpt_dir)
    if padding_free:  # with sharded parameters a collective forward: every rank runs it
        require_exact_packing(trainer.module.backbone, "rm_train.padding_free", device)
    bar = tqdm(total=total_steps, initial=step, desc=progress, disable=progress is None, leave=False)

    def state_now() -> dict:  # the recipe's part of a checkpoint
        return {"compute": compute.state_dict(), "early_stop": stopper.state_dict()}
    trainer.module.train()
    with Preemption() as preemption:
        for epoch, idx in micro_batches(len(train), batch_size, trainer.grad_accum, seed, step, steps_per_epoch, epochs):
            if step == stop_at_step or stopper.stop:  # checked first: a checkpoint of the stopping step resumes to none
                break
            mine, weight = rank_share(train, idx, env.rank, env.world_size)
            batch = collate([train[i] for i in mine], pad_id).to(device)
            compute.trained(sum(len(s) for i in idx for s in train[i].seqs))  # the global micro-batch's tokens
            with trainer.autocast():
                loss = trainer.backward(group_loss(trainer.forward_module, batch, use_margin, padding_free) * weight, step)
            grad_norm = trainer.step(step + 1)
            if grad_norm is None:  # between accumulation boundaries
                continue
            step += 1
            bar.update(1)
            metrics = {"rm/step": step, "rm/member": member, "rm/loss": loss.item() * trainer.grad_accum,
                       "rm/lr": trainer.lr(), "rm/grad_norm": grad_norm, "rm/epoch": epoch}
            if step % eval_every == 0 or step == total_steps:
                compute.evaluated()
                metrics.update(held_out_metrics(trainer.forward_module, eval_groups, val_groups, pad_id, device, padding_free))
                bar.set_postfix(acc=f"{metrics['rm/val_accuracy']:.3f}")
                watch(stopper, trainer, metrics, step, member, lr_factor,
                      save_best=lambda: trainer.save(best_checkpoint(ckpt_dir), step, state_now()))
            tracker.log({**metrics, **compute.metrics()})
            saved = step % checkpoint_every == 0 or step == stop_at_step
            if saved:
                trainer.save(ckpt_dir, step, state_now())
            # Preempted (SIGUSR2 from Slurm / submitit): checkpoint here, then requeue and stop.
            preemption.checkpoint_if_signalled(lambda: saved or trainer.save(ckpt_dir, step, state_now()))
    bar.close()
    if step < total_steps and not stopper.stop:
        return {}
    return final_metrics(trainer, compute, stopper, ckpt_dir, step, eval_groups, pad_id, device, padding_free)


def watch(stopper: "EarlyStopping", trainer, metrics: dict, step: int, member: int, lr_factor: float,
          save_best: Callable[[], None]) -> None:
    """Early stopping's part of an evaluation: feed it the watched loss (rank 0's, so ranks whose eval
    losses differ in the last bit still stop together), keep a new best's weights (`save_best`, a
    collective: every rank saves) and at a plateau with a cut left multiply the learning rate by
    `lr_factor` from the next step on (the checkpoints keep the cut schedule)."""
    if not stopper.active:
        return
    if stopper.update(float(from_rank0(metrics[stopper.watched])), step):
        save_best()
    if stopper.cut_lr():
        trainer.scale_lr(lr_factor)
        log.info("member %d: plateau at step %d, learning rate x %g (cut %d of %d)", member, step, lr_factor,
                 stopper.cuts_done, stopper.lr_cuts)


def held_out_metrics(model: RewardModel, eval_groups: List[EncodedGroup], val_groups: Sequence[EncodedGroup],
                     pad_id: int, device, padding_free: bool) -> dict:
    """evaluate()'s held-out metrics, and with a validation split its rm/selection_loss (what early stopping
    then watches) and rm/selection_accuracy (pair accuracy against its labels)."""
    metrics = evaluate(model, eval_groups, pad_id, device, padding_free=padding_free)
    if val_groups:
        val = evaluate(model, list(val_groups), pad_id, device, padding_free=padding_free)
        metrics.update({"rm/selection_loss": val["rm/val_loss"], "rm/selection_accuracy": val["rm/val_accuracy"]})
    return metrics


def best_checkpoint(ckpt_dir: Path) -> Path:
    """Where early stopping keeps the best evaluation's weights: beside the resumable checkpoint."""
    return ckpt_dir.with_name(ckpt_dir.name + ".best")


def final_metrics(trainer, compute: "MemberCompute", stopper: "EarlyStopping", ckpt_dir: Path, step: int,
                  eval_groups, pad_id: int, device, padding_free: bool) -> dict:
    """The trained member's held-out metrics and rm/flops; with early stopping, of the best
    evaluation's weights (loaded back into the trainer first), with rm/stopped_step, rm/best_step
    and the best value of the watched loss (rm/best_selection_loss on a validation split, else
    rm/best_val_loss)."""
    converged = {}
    if stopper.active:
        trainer.resume(best_checkpoint(ckpt_dir))  # the weights of the lowest watched (validation or held-out) loss
        log.info("RM stopped at step %d, best %s %.4f at step %d", step, stopper.watched, stopper.best, stopper.best_step)
        converged = {"rm/stopped_step": step, "rm/best_step": stopper.best_step,
                     f"rm/best_{stopper.watched.removeprefix('rm/')}": stopper.best}
        if stopper.lr_cuts:
            converged["rm/lr_cuts"] = stopper.cuts_done
    compute.evaluated(validation=False)
    return {**evaluate(trainer.forward_module, eval_groups, pad_id, device, padding_free=padding_free),
            "rm/flops": compute.flops.flops, **converged}


class EarlyStopping:
    """Early stopping on a loss (rm_train.early_stop_patience): a plateau is `patience` evaluations in
    a row that brought no loss below the best so far, once `min_steps` optimizer steps are done. At each
    of the first `lr_cuts` plateaus `cut_lr` says to cut the learning rate (and the count starts again);
    `stop` at the plateau after them. patience 0: never stops (inactive). `watched` names the logged loss
    it is fed (rm/selection_loss on a validation split, else rm/val_loss). Its state goes into the
    checkpoints, so a resumed member cuts and stops where an uninterrupted one would."""

    def __init__(self, patience: int, state: Optional[dict] = None, min_steps: int = 0, watched: str = "rm/val_loss",
                 lr_cuts: int = 0):
        self.patience, self.min_steps, self.watched, self.lr_cuts = patience, min_steps, watched, lr_cuts
        state = state or {"best": math.inf, "best_step": 0, "bad": 0, "step": 0}
        self.best, self.best_step, self.bad = float(state["best"]), int(state["best_step"]), int(state["bad"])
        self.step, self.cuts_done = int(state.get("step", 0)), int(state.get("cuts_done", 0))

    @property
    def active(self) -> bool:
        return self.patience > 0

    @property
    def plateau(self) -> bool:
        return self.active and self.bad >= self.patience and self.step >= self.min_steps

    @property
    def stop(self) -> bool:
        return self.plateau and self.cuts_done >= self.lr_cuts

    def cut_lr(self) -> bool:
        """True at a plateau with a cut of the learning rate left (counted; the plateau count starts again)."""
        if not self.plateau or self.cuts_done >= self.lr_cuts:
            return False
        self.cuts_done, self.bad = self.cuts_done + 1, 0
        return True

    def update(self, loss: float, step: int) -> bool:
        """Record an evaluation's loss; True when it is a new best (its weights are the ones to keep)."""
        self.step = step
        if loss < self.best:
            self.best, self.best_step, self.bad = loss, step, 0
            return True
        self.bad += 1
        return False

    def state_dict(self) -> dict:
        return {"best": self.best, "best_step": self.best_step, "bad": self.bad, "step": self.step,
                "cuts_done": self.cuts_done}


class MemberCompute:
    """FLOPs of one member's training (rlhf_scaling/compute.py): 6·N per trained token, 2·N per
    evaluated token, counting the real tokens of the GLOBAL micro-batch (every rank's share); its
    state goes into the checkpoints, so a resumed member continues its count."""

    def __init__(self, n_params: int, eval_tokens: int, state: Optional[dict] = None, val_tokens: int = 0):
        state = state or {"flops": 0.0, "train_tokens": 0, "eval_tokens": 0}
        self.n_params, self.eval_tokens, self.val_tokens = n_params, eval_tokens, val_tokens
        self.flops = FlopCounter(state["flops"])
        self.tokens = {"train": int(state["train_tokens"]), "eval": int(state["eval_tokens"])}

    def trained(self, tokens: int) -> None:
        self.tokens["train"] += tokens
        self.flops.train(self.n_params, tokens)

    def evaluated(self, validation: bool = True) -> None:
        """One pass of the held-out set, and (validation) of the validation split if there is one."""
        tokens = self.eval_tokens + (self.val_tokens if validation else 0)
        self.tokens["eval"] += tokens
        self.flops.forward(self.n_params, tokens)

    def state_dict(self) -> dict:
        return {"flops": self.flops.flops, "train_tokens": self.tokens["train"], "eval_tokens": self.tokens["eval"]}

    def metrics(self) -> dict:
        """The cumulative rm/flops and the token counts they come from."""
        return {"rm/train_tokens": self.tokens["train"], "rm/eval_tokens": self.tokens["eval"],
                "rm/flops": self.flops.flops}


def micro_batches(n_train: int, batch_size: int, grad_accum: int, seed: int, step: int, steps_per_epoch: int,
                  epochs: int) -> Iterator[tuple[int, List[int]]]:
    """(epoch, unit indices) of every micro-batch from optimizer step `step` on (exact resume): batch
    order from a generator seeded by (seed, epoch); an epoch's trailing micro-batches that do not
    fill an optimizer step are skipped."""
    for epoch in range(step // steps_per_epoch, epochs):
        gen = torch.Generator().manual_seed(seed + epoch)
        order = torch.randperm(n_train, generator=gen).tolist()
        first = max(0, step - epoch * steps_per_epoch) * grad_accum  # micro-batches already done this epoch
        for micro in range(first, steps_per_epoch * grad_accum):
            yield epoch, order[micro * batch_size:(micro + 1) * batch_size]


def rank_share(train: List[EncodedGroup], idx: List[int], rank: int, world_size: int) -> tuple[List[int], float]:
    """This rank's units of the global micro-batch `idx` (units rank, rank + W, ...), and the weight
    that turns the mean loss over its pairs into its share of the micro-batch's mean:
    (its pairs / all pairs) x world_size, so the mean over ranks is exactly the one-process loss,
    even when the shares differ (the last, partial micro-batch). In one process: (idx, 1.0)."""
    mine = idx[rank::world_size]
    total = sum(len(train[i].pairs) for i in idx)
    if not mine:  # fewer units than ranks (the last micro-batch): forward one unit that counts for nothing
        return idx[:1], 0.0  # (with sharded parameters every rank must forward)
    return mine, sum(len(train[i].pairs) for i in mine) / total * world_size


def export_member(trainer, member_dir: Path, final: dict, member: int, env: DistEnv) -> Optional[dict]:
    """Write the trained member as ONE consolidated fp32 safetensors file, re-centred so the init
    policy's samples (the eval responses) get mean reward 0 (Gao et al.). A collective (every rank
    calls it); returns the metadata written (rank 0) or None."""
    whole = trainer.export(shell=lambda live: RewardModel(AutoModel.from_config(live.backbone.config)))
    meta = None
    if env.is_main:
        whole.offset.fill_(final["rm/val_reward_mean"])
        meta = {**final, "rm/n_params": count_parameters(whole), "rm/member": member}
        save_reward_model(whole, member_dir, meta)
    barrier()
    return meta


@contextlib.contextmanager
def _shared_partial(artifact):
    """A non-main rank's view of the artifact: rank 0 creates (or skips) the partial folder."""
    yield artifact.partial
