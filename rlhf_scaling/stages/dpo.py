"""Stage `dpo`: direct alignment (DPO, Rafailov et al. 2023; IPO, Azar et al. 2023) on the
preference data the proxy RMs train on; no reward model. Maths in rlhf_scaling/dpo_math.py.

Recipe: the data artifact (stages/data.py; the same train.jsonl the RMs see) -> every response
encoded once, [prompt | response + EOS] -> policy and frozen reference both loaded from the SFT
policy -> per optimizer step, dpo.batch_size prompts with ALL their labelled pairs (C(K,2) for
K-wise data, ordered by the gold label as the RM's): ONE policy forward (with grad) and one
reference forward per response, summed response log-ratios ρ = Σ_t (log π − log π_ref), the DPO or
IPO loss averaged over the pairs -> one trainer step (rlhf_scaling/training.py).
Ties: the data stage coin-flips a pair whose responses have equal gold (and flips data.label_noise
of all labels); DPO trains on those labels exactly as the RM does, so both see the same
comparisons; dpo/tied_pairs reports how many there are.

Results are the held-out evaluations, with PPO's keys (eval/*): at step 0 (the SFT policy), every
dpo.eval_every steps and at the end, one response per prompt of PPO's fixed held-out prompt set
(stages/ppo.held_out_prompts), sampled from its own seed inside fork_rng (training is untouched),
scored by gold; eval/proxy is the implicit reward β·ρ of the samples, eval/kl the k1 KL to the
reference in nats per sequence, the estimator and units of PPO's eval/kl. Note that the mean
implicit reward of the policy's own samples is β × that KL estimate: DPO's "proxy" is its KL.
eval/pref_accuracy and eval/pref_loss are the implicit reward's accuracy and the loss on the
data's held-out comparisons (eval.jsonl, noise-free gold labels). Training diagnostics: dpo/*.
The summary fits both Gao forms to the eval points (summaries.dpo_fit_summary).

Checkpoints (policy, optimizer, schedule, FLOPs, RNG, step) go to <run dir>/checkpoint every
dpo.checkpoint_every steps and at a preemption signal; the batch order is a function of (seed,
epoch), so a job started again in the same run folder resumes to the same curve (tested). The
trained policy is written as one consolidated safetensors model to <run dir>/policy.

Data-parallel over W ranks (deepspeed.enabled): each step's prompts are split over the ranks
(rm.rank_share: weights that make the mean over ranks the one-process loss), the reference is
replicated, and every rank evaluates the whole held-out set (sampling inside trainer.whole()).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

import torch
from omegaconf import DictConfig

from rlhf_scaling import dpo_math as D
from rlhf_scaling import ppo_math as P
from rlhf_scaling.actor_critic import ResponseBatch, check_plain_lm_head, policy_forward
from rlhf_scaling.checkpoint import rng_state, set_rng_state
from rlhf_scaling.compute import FlopCounter, gold_params, non_embedding_params
from rlhf_scaling.data.encode import encode_prompt_response, encode_texts, pad_batch
from rlhf_scaling.data.records import PreferenceGroup
from rlhf_scaling.distributed import DistEnv, barrier, from_rank0, sum_over_ranks
from rlhf_scaling.models import load_policy, save_policy
from rlhf_scaling.packing import require_exact_packing
from rlhf_scaling.preemption import Preemption
from rlhf_scaling.sampling import sample
from rlhf_scaling.stages.common import policy_init_path, record_eval_prompts, setup_task
from rlhf_scaling.stages.data import load_data, trained_prompts
from rlhf_scaling.stages.ppo import held_out_prompts
from rlhf_scaling.stages.rm import micro_batches, rank_share
from rlhf_scaling.summaries import dpo_fit_summary
from rlhf_scaling.training import (engine_config, make_trainer, optimizer_and_schedule, rank_env, resolve_device,
                                   seed_everything)

log = logging.getLogger(__name__)


def run(cfg: DictConfig, tracker) -> dict:
    """Train the policy on the preference data; write dpo_eval_curve.csv and policy/ in the run
    folder; returns the summary (peak gold, both Gao forms fitted to the eval points)."""
    d = cfg.dpo
    env = rank_env(cfg.deepspeed.enabled)
    device = resolve_device(cfg.device)
    setup = setup_task(cfg, device=str(device))
    train, val = encoded_data(cfg, setup.tokenizer, tracker)
    steps_per_epoch = max(1, math.ceil(len(train) / d.batch_size))
    total = steps_per_epoch * d.epochs
    seed_everything(cfg.seed + d.seed)
    engine_cfg = engine_config(**cfg.deepspeed, micro_batch_per_gpu=max(1, d.batch_size // env.world_size),
                               grad_accum=1, world_size=env.world_size, max_grad_norm=d.max_grad_norm,
                               precision="fp32")
    trainer, reference = build_policy_and_reference(policy_init_path(cfg), d, total, device, engine_cfg, env)
    n_params = non_embedding_params(trainer.module)
    flops, eval_flops = FlopCounter(), FlopCounter()  # training's work; the evaluations'
    ckpt_dir = Path(from_rank0(str(tracker.run_dir / "checkpoint")))
    start = resume(trainer, ckpt_dir, flops, eval_flops)
    tracker.define_step("dpo/", "dpo/step")
    tracker.define_step("eval/", "eval/step")
    # PPO's set when dpo.seed = ppo.seed (its proxy trained on this data); none of the training prompts
    held_out = held_out_prompts(setup, d.eval_prompts, cfg.seed + d.seed,
                                trained_prompts(cfg, setup) if d.eval_prompts else set())
    record_eval_prompts(Path(from_rank0(str(tracker.run_dir / "eval_prompts.json"))), held_out[0], start > 0, env.is_main)
    evaluate_now = lambda steps: log_evaluation(  # noqa: E731  (after `steps` optimizer steps)
        tracker, steps, held_out, val, trainer, reference, setup, cfg, n_params, eval_flops, device)
    if start == 0:
        evaluate_now(0)  # the SFT policy, evaluated the same way
    pad_id = setup.tokenizer.pad_token_id
    with Preemption() as preemption:
        for step, (epoch, idx) in enumerate(micro_batches(len(train), d.batch_size, 1, cfg.seed + d.seed, start,
                                                          steps_per_epoch, d.epochs), start=start + 1):
            metrics = train_step(trainer, reference, train, idx, d, pad_id, env, device, step)
            flops.train(n_params, metrics["dpo/step_tokens"])  # the policy's forward and backward
            flops.forward(n_params, metrics["dpo/step_tokens"])  # the reference's forward
            tracker.log({"dpo/step": step, "dpo/epoch": epoch, **metrics, "dpo/flops": flops.flops})
            if step % d.eval_every == 0 or step == total:
                evaluate_now(step)
            saved = step % d.checkpoint_every == 0 or step == total
            if saved:
                save(trainer, ckpt_dir, flops, eval_flops, step)
            # Preempted (SIGUSR2 from Slurm / submitit): checkpoint here, then requeue and stop.
            preemption.checkpoint_if_signalled(lambda: saved or save(trainer, ckpt_dir, flops, eval_flops, step))
    export_policy(trainer, setup.tokenizer, Path(from_rank0(str(tracker.run_dir / "policy"))), env)
    if not env.is_main:
        return {}
    return {**dpo_fit_summary(tracker.run_dir), "dpo/flops": flops.flops, "dpo/eval_flops": eval_flops.flops,
            "dpo/steps": total, "dpo/n_params": n_params}


# ----------------------------------------------------------------------------- data


@dataclass
class PreferenceUnit:
    """One prompt's encoded responses and labelled pairs: the unit of a DPO batch.

    prompt: prompt token ids; responses: K response token ids, each ending in EOS;
    pairs: (chosen, rejected) indices into responses; tied: per pair, whether gold scored both alike
    (the data stage then picked the chosen one by a coin flip)."""

    prompt: List[int]
    responses: List[List[int]]
    pairs: List[tuple]
    tied: List[bool]


def encode_units(groups: Sequence[PreferenceGroup], tokenizer, max_response_tokens: int) -> tuple[list, int]:
    """Every response of every group tokenised once, as the RM encodes it (prompt + response cut to
    max_response_tokens + EOS), split at the prompt. Returns (units, number of truncated responses)."""
    units, truncated = [], 0
    for g in groups:
        seqs, cut = encode_prompt_response(tokenizer, [g.prompt] * g.k, list(g.responses), max_response_tokens)
        n_prompt = len(encode_texts(tokenizer, [g.prompt])[0])
        tied = [g.gold is not None and g.gold[w] == g.gold[l] for w, l in g.pairs]
        units.append(PreferenceUnit(seqs[0][:n_prompt], [s[n_prompt:] for s in seqs], list(g.pairs), tied))
        truncated += cut
    return units, truncated


def encoded_data(cfg: DictConfig, tokenizer, tracker) -> tuple[list, list]:
    """(train, held-out) units of the data artifact (the RMs' data), with its counts logged."""
    train_groups, val_groups = load_data(cfg)
    train, cut_train = encode_units(train_groups, tokenizer, cfg.task.max_response_tokens)
    val, cut_val = encode_units(val_groups, tokenizer, cfg.task.max_response_tokens)
    tracker.log({"dpo/train_prompts": len(train), "dpo/train_pairs": sum(len(u.pairs) for u in train),
                 "dpo/tied_pairs": sum(sum(u.tied) for u in train), "dpo/truncated_responses": cut_train + cut_val})
    if cut_train + cut_val:
        log.warning("%d responses longer than task.max_response_tokens=%d were truncated", cut_train + cut_val,
                    cfg.task.max_response_tokens)
    return train, val


@dataclass
class PairBatch:
    """The responses of some units laid out for the policy forward, and their pairs.

    batch: [prompt (left-padded) | response (right-padded)] rows, one per response (ResponseBatch);
    r_ids, r_mask: (B, T) response tokens and their mask (EOS included; prompt and padding excluded);
    pairs: (P, 2) long (chosen row, rejected row); tokens: real prompt + response tokens of all rows."""

    batch: ResponseBatch
    r_ids: torch.Tensor
    r_mask: torch.Tensor
    pairs: torch.Tensor
    tokens: int


def collate(units: Sequence[PreferenceUnit], pad_id: int, padding_free: bool, device) -> PairBatch:
    """One row per response of `units` (a prompt repeated for each of its responses), pairs offset
    to the rows of their unit."""
    prompts = [u.prompt for u in units for _ in u.responses]
    responses = [r for u in units for r in u.responses]
    p_ids, p_mask = pad_batch(prompts, pad_id, side="left")
    r_ids, r_mask = pad_batch(responses, pad_id, side="right")
    offsets = [0]
    for u in units:
        offsets.append(offsets[-1] + len(u.responses))
    pairs = torch.tensor([(o + w, o + l) for u, o in zip(units, offsets) for w, l in u.pairs], dtype=torch.long)
    ids, mask = torch.cat([p_ids, r_ids], dim=1).to(device), torch.cat([p_mask, r_mask], dim=1).to(device)
    batch = ResponseBatch.of(ids, mask, p_ids.shape[1], padding_free)
    return PairBatch(batch, r_ids.to(device), r_mask.to(device), pairs.to(device), int(mask.sum()))


def response_logprobs(model, pb: PairBatch) -> torch.Tensor:
    """(B, T) log π of each row's response tokens (temperature 1: the distribution DPO trains)."""
    return P.logprobs_from_logits(policy_forward(model, pb.batch, 1.0)[0], pb.r_ids)


# ----------------------------------------------------------------------------- training


def build_policy_and_reference(init_path: str, d, total_steps: int, device, engine_cfg, env: DistEnv):
    """(trainer over the policy, frozen reference), both loaded from init_path (the SFT policy).
    The reference runs in the trainer's compute dtype, so the step-0 KL is 0, not rounding."""
    policy = load_policy(init_path).to(device)
    if d.padding_free:
        check_plain_lm_head(policy)
        require_exact_packing(policy.base_model, "dpo.padding_free")
    optimizer, scheduler = optimizer_and_schedule(policy.parameters(), lr=d.lr, weight_decay=d.weight_decay,
                                                  schedule=d.lr_schedule, warmup_ratio=d.warmup_ratio,
                                                  total_steps=total_steps)
    trainer = make_trainer(policy, optimizer, scheduler, engine_cfg=engine_cfg, where="dpo",
                           max_grad_norm=d.max_grad_norm, device=device, env=env)
    reference = load_policy(init_path).to(device, trainer.dtype).eval().requires_grad_(False)
    return trainer, reference


def pair_terms(policy, reference, pb: PairBatch, beta: float, loss: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(P,) losses, (P,) chosen and (P,) rejected implicit rewards β·ρ (detached) of a batch's pairs."""
    logprobs = response_logprobs(policy, pb)
    with torch.no_grad():
        ref_logprobs = response_logprobs(reference, pb)
    rho = D.sequence_logprobs(logprobs - ref_logprobs, pb.r_mask)  # (B,) summed response log-ratios
    lengths = pb.r_mask.sum(dim=1)
    chosen, rejected = D.pair_logratios(rho, pb.pairs)
    losses = D.preference_loss(chosen, rejected, beta, loss, lengths[pb.pairs[:, 0]], lengths[pb.pairs[:, 1]])
    return losses, beta * chosen.detach(), beta * rejected.detach()


def pair_sums(losses, r_chosen, r_rejected) -> torch.Tensor:
    """(6,) float64 sums over pairs of (loss, accuracy (ties ½), chosen reward, rejected reward,
    margin) and the pair count: summed over ranks, they give exact means over every rank's pairs."""
    won = (r_chosen > r_rejected).double() + 0.5 * (r_chosen == r_rejected).double()
    return torch.stack([losses.detach().double().sum(), won.sum(), r_chosen.double().sum(), r_rejected.double().sum(),
                        (r_chosen - r_rejected).double().sum(), torch.tensor(float(len(losses)), dtype=torch.float64,
                                                                             device=losses.device)])


def train_step(trainer, reference, train: list, idx: List[int], d, pad_id: int, env: DistEnv, device,
               step: int) -> dict:
    """One optimizer step on the units `idx` (this rank's share of them); its dpo/* metrics over
    every rank's pairs, and the real tokens of the whole step (dpo/step_tokens)."""
    clock = time.perf_counter()
    mine, weight = rank_share(train, idx, env.rank, env.world_size)
    pb = collate([train[i] for i in mine], pad_id, d.padding_free, device)
    trainer.module.train()
    with trainer.autocast():
        losses, r_chosen, r_rejected = pair_terms(trainer.module, reference, pb, d.beta, d.loss)
    trainer.backward(losses.mean() * weight, step)
    grad_norm = trainer.step(step)
    sums = sum_over_ranks(pair_sums(losses, r_chosen, r_rejected) * (weight > 0))
    tokens = sum_over_ranks(torch.tensor(float(pb.tokens) * (weight > 0), dtype=torch.float64, device=device))
    loss, accuracy, chosen, rejected, margin = (sums[:5] / sums[5]).tolist()
    return {"dpo/loss": loss, "dpo/accuracy": accuracy, "dpo/reward_chosen": chosen, "dpo/reward_rejected": rejected,
            "dpo/margin": margin, "dpo/pairs": int(sums[5]), "dpo/step_tokens": int(tokens), "dpo/grad_norm": grad_norm,
            "dpo/lr": trainer.lr(), "dpo/time_s": time.perf_counter() - clock}


# ----------------------------------------------------------------------------- held-out evaluation


def log_evaluation(tracker, steps: int, held_out: tuple, val: list, trainer, reference, setup, cfg, n_params: int,
                   eval_flops: FlopCounter, device) -> None:
    """Evaluate the policy after `steps` optimizer steps on the held-out prompts (none: nothing) and
    comparisons, count the FLOPs in eval_flops and log eval/* at eval/step = steps."""
    prompts, sample_seed = held_out
    if not prompts:
        return
    d = cfg.dpo
    metrics, tokens = evaluate(trainer, reference, setup, prompts, sample_seed, d.beta,
                               cfg.task.max_response_tokens, d.padding_free, device)
    eval_flops.generate(n_params, tokens)
    eval_flops.forward(gold_params(setup.gold) + 2 * n_params, tokens)  # gold; policy and reference log-probs
    pref, val_tokens = preference_eval(trainer.module, reference, val, d, setup.tokenizer.pad_token_id, device)
    eval_flops.forward(2 * n_params, val_tokens)
    tracker.log({"eval/step": steps, **metrics, **pref, "eval/flops": eval_flops.flops})


@torch.no_grad()
def evaluate(trainer, reference, setup, prompts, sample_seed: int, beta: float, max_response_tokens: int,
             padding_free: bool, device) -> tuple[dict, float]:
    """One response per held-out prompt from the current policy, sampled from `sample_seed` (the
    same every evaluation) inside fork_rng; returns (eval/* metrics, real prompt + response tokens).
    The keys, estimator and units are PPO's evaluation's (stages/ppo.evaluate): eval/gold (mean, and
    its standard error), eval/kl (mean k1 sequence KL to the reference, nats), eval/sqrt_kl,
    eval/response_len, eval/ended_fraction; eval/proxy is the mean implicit reward β·ρ."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(sample_seed)
        with trainer.whole():
            ro = sample(trainer.module, setup.tokenizer, prompts, max_new_tokens=max_response_tokens, temperature=1.0)
    gold = torch.as_tensor(setup.gold.score(prompts, ro.texts), dtype=torch.float32)
    ids = torch.cat([ro.prompt_ids, ro.response_ids], dim=1).to(device)
    mask = torch.cat([ro.prompt_mask, ro.response_mask], dim=1).to(device)
    pb = PairBatch(ResponseBatch.of(ids, mask, ro.prompt_ids.shape[1], padding_free), ro.response_ids.to(device),
                   ro.response_mask.to(device).float(), torch.empty((0, 2), dtype=torch.long), int(mask.sum()))
    logprobs, ref_logprobs = response_logprobs(trainer.module, pb), response_logprobs(reference, pb)
    kl = P.sequence_kl(P.kl_per_token(logprobs, ref_logprobs, "k1"), pb.r_mask)
    mean_kl = kl.mean().item()
    metrics = {"eval/gold": gold.mean().item(), "eval/gold_se": (gold.std() / len(gold) ** 0.5).item(),
               "eval/proxy": D.implicit_reward(logprobs, ref_logprobs, pb.r_mask, beta).mean().item(),
               "eval/kl": mean_kl, "eval/sqrt_kl": max(mean_kl, 0.0) ** 0.5,
               "eval/response_len": ro.lengths.float().mean().item(),
               "eval/ended_fraction": ro.ended.float().mean().item()}
    return metrics, float(pb.tokens)


@torch.no_grad()
def preference_eval(policy, reference, val: list, d, pad_id: int, device, batch_size: int = 64) -> tuple[dict, int]:
    """The loss and the implicit reward's accuracy (ties ½) on the held-out comparisons `val` (every
    rank computes all of them); ({} with no held-out data, real tokens forwarded)."""
    if not val:
        return {}, 0
    was_training = policy.training
    policy.eval()
    sums, tokens = torch.full((6,), 0.0, dtype=torch.float64, device=device), 0
    for start in range(0, len(val), batch_size):
        pb = collate(val[start:start + batch_size], pad_id, d.padding_free, device)
        sums += pair_sums(*pair_terms(policy, reference, pb, d.beta, d.loss))
        tokens += pb.tokens
    policy.train(was_training)
    return {"eval/pref_loss": (sums[0] / sums[5]).item(), "eval/pref_accuracy": (sums[1] / sums[5]).item()}, tokens


# ----------------------------------------------------------------------------- checkpoint and export


def save(trainer, ckpt_dir: Path, flops: FlopCounter, eval_flops: FlopCounter, step: int) -> None:
    """A resumable checkpoint after `step` optimizer steps: the trainer's (weights, optimizer,
    schedule), the FLOPs so far (training, evaluation) and this rank's RNG."""
    trainer.save(ckpt_dir, step, {"flops": flops.state_dict(), "eval_flops": eval_flops.state_dict()},
                 per_rank={"rng": rng_state()})


def resume(trainer, ckpt_dir: Path, flops: FlopCounter, eval_flops: FlopCounter) -> int:
    """Load the last checkpoint in ckpt_dir, if any; returns the optimizer steps already done."""
    state = trainer.resume(ckpt_dir)
    if state is None:
        return 0
    flops.load_state_dict(state["flops"])
    eval_flops.load_state_dict(state["eval_flops"])
    set_rng_state(state["rng"])
    log.info("DPO resumed at step %d from %s", int(state["step"]), ckpt_dir)
    return int(state["step"])


def export_policy(trainer, tokenizer, out: Path, env: DistEnv) -> None:
    """The trained policy as one consolidated fp32 safetensors model (loads with load_policy /
    model source=pretrained), however it was trained (a collective: every rank calls it)."""
    policy = trainer.export()
    if env.is_main:
        save_policy(policy, tokenizer, out)
    barrier()
