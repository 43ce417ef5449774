"""Stage `ppo`: policy-gradient RL against a proxy RM, KL-regularised to the frozen init policy:
PPO with a critic (ppo.algorithm=ppo), or critic-free with a group baseline (rloo, grpo).

Recipe (Ziegler et al. 2019; Ouyang et al. 2022; maths in rlhf_scaling/ppo_math.py, actor-critic
forwards in rlhf_scaling/actor_critic.py):
  per iteration: prompts x ppo.samples_per_prompt rollouts from the policy ->
  proxy score on the final token, gold score of the same rollouts (logged, never trained on) ->
  per-token reward −β·KL_t (+ score at the last real token) -> GAE with a critic initialised
  from the init policy (ppo.critic: its own transformer, or a value head on the policy's) ->
  ppo.ppo_epochs of clipped policy and value updates over minibatches -> β update (fixed or adaptive).
The critic-free algorithms (rlhf_scaling/group_advantages.py) change three things only, each in one
place: no critic is built (build_actor_critic), the advantage of a rollout is its group baseline's
(advantages_of: rloo, reward minus the mean of its prompt's other rollouts, KL as a sequence reward
penalty; grpo, group-normalised reward, no penalty), and grpo adds β x the k3 KL to the loss
(update). The groups of ppo.samples_per_prompt rollouts of a prompt stay on one rank (rank_batch).
Every iteration logs proxy reward, gold reward, KL (nats per sequence, the estimator trained
with) and sqrt(KL) of its training batch (diagnostics), the iteration's time split (generation,
scoring, experience forwards, training), rollout tokens and cumulative FLOPs (rlhf_scaling/compute.py).
The results are the held-out evaluations (eval/*): at iteration 0 (the initial policy), every
ppo.eval_every iterations and at the end, one response per prompt of a fixed set of ppo.eval_prompts
prompts, sampled from a seed of its own inside torch.random.fork_rng (the training RNG is left as it
was, so training is the same with or without evaluation), scored by gold and proxy, with the KL
estimator trained with; the fitted summary (rlhf_scaling/summaries.py) uses these points.

Checkpoints (policy, critic, optimizer, β, RNG, step) go to <run dir>/checkpoint every
ppo.checkpoint_every iterations and at a preemption signal (rlhf_scaling/preemption.py); a job
started again in the same run folder resumes there and produces the same curves (tested). The trained
policy is written as one consolidated safetensors model to <run dir>/policy.

Data-parallel over W ranks (deepspeed.enabled; rlhf_scaling/training.py does the sharded
training): policy and critic train as ONE module, sharded as the profile says;
ppo.prompts_per_step x samples_per_prompt rollouts and ppo.minibatch_size are GLOBAL and split
evenly over the ranks. Generation runs inside `trainer.whole()` (sharded weights gathered whole on
every rank once per iteration, so ranks may stop generating at different lengths without
deadlocking per-layer collectives). Batch statistics (reward and advantage whitening, the KL
controller's input, every logged metric) are taken over all ranks' rollouts, as one process would
(the ppo_math functions with reduce=sum_over_ranks); the gradient is the mean of the ranks'
minibatch losses, each a mean over its own tokens (the usual data-parallel approximation of the
global token mean). The frozen reference policy and the proxy RMs are replicated on every rank
(inference only; in the trainer's compute dtype).
"""


from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import AbstractSet, Optional

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from tqdm.auto import tqdm

from rlhf_scaling import group_advantages as G
from rlhf_scaling import ppo_math as P
from rlhf_scaling.actor_critic import Critic, ResponseBatch, check_plain_lm_head, logits_and_values, policy_forward, value_head
from rlhf_scaling.bon_math import combine_ensemble
from rlhf_scaling.checkpoint import rng_state, set_rng_state
from rlhf_scaling.compute import FlopCounter, gold_params, non_embedding_params
from rlhf_scaling.config import ConfigError
from rlhf_scaling.distributed import DistEnv, barrier, cat_over_ranks, from_rank0, mean_over_ranks, sum_over_ranks
from rlhf_scaling.models import load_policy, save_policy
from rlhf_scaling.packing import require_exact_packing
from rlhf_scaling.preemption import Preemption
from rlhf_scaling.sampling import sample
from rlhf_scaling.scoring import load_ensemble, score_texts
from rlhf_scaling.stages.common import (build_command, policy_init_path, proxy_data_cfg, proxy_n_params, rm_artifact,
                                        record_eval_prompts, setup_task)
from rlhf_scaling.stages.data import trained_prompts
from rlhf_scaling.summaries import ppo_fit_summary
from rlhf_scaling.training import engine_config, make_trainer, rank_env, resolve_device, seed_everything

log = logging.getLogger(__name__)
RANK_SEED_STRIDE = 1_000_003  # rank r samples from seed + r·stride: ranks draw different rollouts


def run(cfg: DictConfig, tracker) -> dict:
    """Train the policy; write ppo_curve.csv and policy/ in the run folder; returns the RL-form fit summary."""
    p = cfg.ppo
    env = rank_env(cfg.deepspeed.enabled)
    local_n, local_mb = rank_batch(p.prompts_per_step * p.samples_per_prompt, p.minibatch_size, env.world_size,
                                   group=1 if p.algorithm == "ppo" else p.samples_per_prompt)
    device = resolve_device(cfg.device)
    setup = setup_task(cfg, device=str(device))
    rm_dir = rm_artifact(cfg).require(build_command("rm", cfg))
    seed_everything(cfg.seed + p.seed + RANK_SEED_STRIDE * env.rank)
    engine_cfg = engine_config(**cfg.deepspeed, micro_batch_per_gpu=local_mb, grad_accum=1, world_size=env.world_size,
                               max_grad_norm=p.max_grad_norm, precision="fp32")
    trainer, reference = build_actor_critic(policy_init_path(cfg), p, device, engine_cfg, env)
    proxies = load_ensemble(rm_dir, device)
    if p.padding_free:
        require_exact_packing(proxies[0].backbone, "ppo.padding_free")
    sizes = model_sizes(trainer, proxies, setup.gold)
    flops, eval_flops = FlopCounter(), FlopCounter()  # training's work; the held-out evaluations'
    kl_ctl = P.AdaptiveKLController(p.kl_coef, p.target_kl, p.kl_horizon) if p.adaptive_kl else P.FixedKLController(p.kl_coef)
    # Every rank's shards go to rank 0's run folder (ranks may have composed slightly different ones).
    ckpt_dir = Path(from_rank0(str(tracker.run_dir / "checkpoint")))
    start = resume(trainer, ckpt_dir, kl_ctl, flops, eval_flops, env.rank)
    tracker.define_step("ppo/", "ppo/step")
    tracker.define_step("eval/", "eval/step")
    held_out = held_out_prompts(setup, p.eval_prompts, cfg.seed + p.seed,
                                trained_prompts(proxy_data_cfg(cfg), setup) if p.eval_prompts else set())
    record_eval_prompts(Path(from_rank0(str(tracker.run_dir / "eval_prompts.json"))), held_out[0], start > 0, env.is_main)
    held_out_set = frozenset(held_out[0])
    evaluate_now = lambda iterations: log_evaluation(  # noqa: E731  (after `iterations` iterations)
        tracker, iterations, held_out, trainer, reference, proxies, setup, cfg, sizes, eval_flops, device)
    if start == 0:
        evaluate_now(0)  # the initial policy, evaluated the same way
    bar = tqdm(range(start, p.steps), initial=start, total=p.steps, desc=f"ppo vs {cfg.rm.name}",
               disable=not cfg.progress or not env.is_main, leave=False)
    with Preemption() as preemption:
        for step in bar:
            logged = step % p.log_every == 0 or step == p.steps - 1
            metrics = iteration(step, cfg, setup, trainer, reference, proxies, kl_ctl, flops, sizes, env, local_n,
                                local_mb, device, logged, held_out_set)
            if logged:
                tracker.log(metrics)
                bar.set_postfix(proxy=f"{metrics['ppo/proxy']:.2f}", gold=f"{metrics['ppo/gold']:.2f}",
                                kl=f"{metrics['ppo/kl']:.2f}")
            if (step + 1) % p.eval_every == 0 or step == p.steps - 1:
                evaluate_now(step + 1)
            saved = (step + 1) % p.checkpoint_every == 0 or step == p.steps - 1
            if saved:
                save(trainer, ckpt_dir, kl_ctl, flops, eval_flops, step + 1)
            # Preempted (SIGUSR2 from Slurm / submitit): checkpoint here, then requeue and stop.
            preemption.checkpoint_if_signalled(
                lambda: saved or save(trainer, ckpt_dir, kl_ctl, flops, eval_flops, step + 1))
    bar.close()
    export_policy(trainer, setup.tokenizer, Path(from_rank0(str(tracker.run_dir / "policy"))), env)
    if not env.is_main:
        return {}
    return {**ppo_fit_summary(tracker.run_dir), "ppo/flops": flops.flops, "ppo/eval_flops": eval_flops.flops,
            **{f"ppo/n_params_{k}": v for k, v in sizes.items()},
            "rm/n_params": proxy_n_params(rm_dir)}  # the proxy's size as its RM job counted it (all parameters)


# ----------------------------------------------------------------------------- the phases of one iteration


def iteration(step: int, cfg, setup, trainer, reference, proxies, kl_ctl, flops, sizes: dict, env: DistEnv,
              local_n: int, local_mb: int, device, logged: bool, held_out: AbstractSet[str]) -> dict:
    """One PPO iteration: rollouts -> scores -> experience -> update -> β update, its FLOPs counted;
    returns its metrics (iteration_metrics) when `logged`, else {}. held_out: the held-out prompts,
    which no rollout has in the feature world (rollout_prompts)."""
    p = cfg.ppo
    clock = [time.perf_counter()]  # rollout -> score -> experience -> update
    drawn = rollout_prompts(setup, step, p.prompts_per_step, cfg.seed + p.seed, held_out)
    prompts = rank_prompts(drawn, p.samples_per_prompt, env.rank, local_n)
    with trainer.whole():  # sharded weights gathered once, no per-layer collectives
        ro = sample(trainer.module["policy"], setup.tokenizer, prompts,
                    max_new_tokens=cfg.task.max_response_tokens, temperature=p.temperature)
    clock.append(time.perf_counter())
    proxy, gold = score(proxies, setup, prompts, ro.texts, cfg.proxy.ensemble, cfg.proxy.uwo_lambda,
                        cfg.task.max_response_tokens, p.padding_free, device)
    clock.append(time.perf_counter())
    exp = experience(trainer.module, reference, ro, proxy, kl_ctl.value, p, device)
    clock.append(time.perf_counter())
    stats = update(trainer, exp, p, local_mb, step, kl_ctl.value)
    clock.append(time.perf_counter())
    beta_used = kl_ctl.value  # the β this iteration's penalty used; then the controller's update
    kl_ctl.update(float(exp.all_seq_kl.mean()), p.prompts_per_step * p.samples_per_prompt)
    prompt_tokens, response_tokens = sum_over_ranks(torch.stack(
        [ro.prompt_mask.sum(), ro.lengths.sum()]).to(device, torch.float64)).tolist()
    count_iteration(flops, sizes, prompt_tokens + response_tokens, p.ppo_epochs)
    if not logged:
        return {}
    metrics = iteration_metrics(step, exp, gold, ro, stats, beta_used, clock, p.prompts_per_step * p.samples_per_prompt,
                                device, p.algorithm)
    # 0 in the feature world; the topics world's ~240 prompts recur, in rollouts and held-out set alike
    in_eval = sum(q in held_out for q in drawn)
    return {**metrics, "ppo/prompt_tokens": prompt_tokens, "ppo/flops": flops.flops, "ppo/rollout_prompts_in_eval": in_eval}


def rollout_prompts(setup, step: int, n: int, seed: int, exclude: AbstractSet[str] = frozenset()):
    """The prompts of iteration `step`, from a generator seeded by (seed, step): resume-stable. In the
    feature world none of `exclude` (the held-out prompts: the policy never trains on what it is
    evaluated on); elsewhere exclude changes nothing (TaskSetup.prompts)."""
    return setup.prompts(n, seed=seed * 1_000_003 + step, exclude=exclude)


def rank_prompts(prompts, samples_per_prompt: int, rank: int, local_n: int) -> list:
    """This rank's share of the iteration's rollouts: each prompt repeated samples_per_prompt
    times, split into consecutive blocks of local_n."""
    repeated = [q for q in prompts for _ in range(samples_per_prompt)]
    return repeated[rank * local_n:(rank + 1) * local_n]


def rank_batch(n_rollouts: int, minibatch_size: int, world_size: int, group: int = 1) -> tuple[int, int]:
    """(rollouts, minibatch) of one rank: the global rollouts per iteration (ppo.prompts_per_step x
    samples_per_prompt) and ppo.minibatch_size split evenly over world_size ranks (an uneven
    split would leave ranks with different numbers of optimizer steps, which sharded training's collectives cannot do).
    group > 1 (rloo, grpo: the samples_per_prompt rollouts of a prompt): each rank must hold whole
    groups, so that the group baselines are computed on one rank without a cross-rank gather."""
    for name, value in (("ppo.prompts_per_step x ppo.samples_per_prompt", n_rollouts),
                        ("ppo.minibatch_size", minibatch_size)):
        if value % world_size:
            raise ConfigError(f"{name} = {value} must be divisible by the {world_size} ranks")
    if (n_rollouts // world_size) % group:
        raise ConfigError(f"ppo.prompts_per_step = {n_rollouts // group} must be divisible by the {world_size} ranks: "
                          f"each rank holds whole groups of ppo.samples_per_prompt = {group} rollouts")
    return n_rollouts // world_size, minibatch_size // world_size


def build_actor_critic(init_path: str, p, device, engine_cfg, env: DistEnv):
    """(trainer over {"policy", "critic"}, frozen reference policy), all initialised from init_path.

    The critic: ppo.critic=separate, its own copy of the init transformer; shared, a value head on
    the policy's; none for the critic-free algorithms (ppo.algorithm=rloo|grpo: the trainer holds
    {"policy"} alone, so no value head, value loss or critic FLOPs exist). The reference runs in the policy's compute dtype: a bf16 policy against an fp32
    reference would start with a KL made of rounding alone.
    """
    policy = load_policy(init_path).to(device)
    if p.padding_free:
        check_plain_lm_head(policy)
        require_exact_packing(policy.base_model, "ppo.padding_free")
    trainable = nn.ModuleDict({"policy": policy})
    if p.algorithm == "ppo":
        trainable["critic"] = (Critic(policy) if p.critic == "separate" else value_head(policy.config.hidden_size)).to(device)
    # fused: one kernel over all parameters instead of a Python loop per tensor (measured ~0.23 s
    # per step at the Pythia-160M shape on CPU unfused, benchmarks/RESULTS.md).
    optimizer = torch.optim.Adam(trainable.parameters(), lr=p.lr, eps=1e-5, fused=True)
    trainer = make_trainer(trainable, optimizer, engine_cfg=engine_cfg, where="ppo", max_grad_norm=p.max_grad_norm,
                           device=device, env=env)
    reference = load_policy(init_path).to(device, trainer.dtype).eval().requires_grad_(False)
    return trainer, reference


@torch.no_grad()
def score(proxies, setup, prompts, texts, ensemble: str, uwo_lambda: float, max_response_tokens: int,
          padding_free: bool, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(proxy (B,), gold (B,)) scores of this rank's rollouts: the proxy ensemble combined
    (proxy.ensemble) is trained on, gold is logged only."""
    member_scores = score_texts(proxies, setup.tokenizer, prompts, texts, max_response_tokens=max_response_tokens,
                                padding_free=padding_free)
    proxy = torch.as_tensor(combine_ensemble(member_scores.numpy(), ensemble, uwo_lambda), dtype=torch.float32,
                            device=device)
    gold = torch.as_tensor(setup.gold.score(prompts, texts), dtype=torch.float32, device=device)
    return proxy, gold


@dataclass
class Experience:
    """One iteration's rollouts with everything the updates need: (B, T) response tensors, the
    rollout-time log-probs and values, the advantages (advantages_of) and returns; and the batch
    statistics the log needs (all_* are over every rank's rollouts). Without a critic (rloo, grpo)
    old_values and returns are None."""

    batch: ResponseBatch
    r_ids: torch.Tensor
    r_mask: torch.Tensor
    old_logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    old_values: Optional[torch.Tensor]
    advantages: torch.Tensor
    returns: Optional[torch.Tensor]
    entropy: torch.Tensor  # scalar, nats per token
    all_proxy: torch.Tensor  # (W·B,)
    all_seq_kl: torch.Tensor  # (W·B,) nats per sequence, the estimator the penalty used


@torch.no_grad()
def experience(module, reference, ro, proxy: torch.Tensor, kl_coef: float, p, device) -> Experience:
    """Log-probs, reference log-probs, values (with a critic) and advantages of the rollouts `ro`."""
    ids = torch.cat([ro.prompt_ids, ro.response_ids], dim=1).to(device)
    mask = torch.cat([ro.prompt_mask, ro.response_mask], dim=1).to(device)
    r_ids, r_mask = ro.response_ids.to(device), ro.response_mask.to(device).float()
    batch = ResponseBatch.of(ids, mask, ro.prompt_ids.shape[1], p.padding_free)
    logits, old_values = logits_and_values(module["policy"], critic_of(module), batch, p.temperature)
    old_logprobs = P.logprobs_from_logits(logits, r_ids)
    entropy = P.entropy_from_logits(logits, r_mask, reduce=sum_over_ranks)
    ref_logprobs = P.logprobs_from_logits(policy_forward(reference, batch, p.temperature)[0], r_ids)
    old_values = old_values * r_mask if old_values is not None else None
    scores = P.whiten_scores(proxy, reduce=sum_over_ranks) if p.whiten_rewards else proxy
    advantages, returns, kl = advantages_of(scores, old_logprobs, ref_logprobs, old_values, r_mask, kl_coef, p)
    return Experience(batch, r_ids, r_mask, old_logprobs, ref_logprobs, old_values, advantages, returns, entropy,
                      cat_over_ranks(proxy), cat_over_ranks(P.sequence_kl(kl, r_mask)))


def critic_of(module) -> Optional[nn.Module]:
    """The trained module's critic (ppo.algorithm=ppo), or None (rloo, grpo: critic-free)."""
    return module["critic"] if "critic" in module else None


def advantages_of(scores, logprobs, ref_logprobs, values, mask, kl_coef: float, p):
    """The one place the algorithms estimate advantages differently. scores: (B,) proxy rewards
    (this rank's, in whole groups for rloo/grpo); logprobs, ref_logprobs, values, mask: (B, T).
    Returns (advantages (B, T), returns (B, T) or None, kl (B, T): the per-token KL estimate
    (ppo.kl_estimator) the method trains with, 0 on padding; logged as ppo/kl).
      ppo:  per-token reward −β·kl_t + score on the last token -> GAE with the critic -> whitened.
      rloo: sequence reward score − β·Σ_t kl_t (the KL as a reward penalty, as in PPO; Ahmadian et
            al. 2024 §3) -> leave-one-out advantage over its prompt's group, on every token.
      grpo: group-normalised score on every token; the KL is NOT in the reward but a loss term (update).
    """
    if p.algorithm == "ppo":
        rewards, kl = P.kl_penalised_rewards(scores, logprobs, ref_logprobs, mask, kl_coef, p.kl_estimator)
        advantages, returns = P.gae(rewards, values, mask, p.gamma, p.lam)
        return P.whiten(advantages, mask, reduce=sum_over_ranks), returns, kl
    kl = P.kl_per_token(logprobs, ref_logprobs, p.kl_estimator)
    kl = torch.where(mask.bool(), kl, 0.0)  # not `* mask`: nan · 0 = nan on padding
    if p.algorithm == "rloo":
        advantages = G.rloo_advantages(scores - kl_coef * P.sequence_kl(kl, mask), p.samples_per_prompt)
    else:
        advantages = G.grpo_advantages(scores, p.samples_per_prompt)
    return G.per_token(advantages, mask), None, kl


def update(trainer, exp: Experience, p, local_mb: int, step: int, kl_coef: float) -> torch.Tensor:
    """ppo.ppo_epochs passes of clipped policy updates (+ the value loss with a critic; + kl_coef x
    the k3 KL loss for grpo) over random minibatches of this rank's rollouts; returns the (6,) mean
    over minibatches of (policy loss, value loss, policy clip fraction, value clip fraction, approx
    KL, KL loss), 0 for a term the algorithm has not."""
    stats, critic = [], critic_of(trainer.module)
    for _ in range(p.ppo_epochs):
        for mb in torch.randperm(exp.r_ids.shape[0]).split(local_mb):
            logits, values = logits_and_values(trainer.module["policy"], critic, exp.batch.rows(mb), p.temperature)
            new_logprobs = P.logprobs_from_logits(logits, exp.r_ids[mb])
            pg_loss, pg_clip, approx_kl = P.policy_loss(new_logprobs, exp.old_logprobs[mb], exp.advantages[mb],
                                                        exp.r_mask[mb], p.clip_range)
            vf_loss = vf_clip = kl_loss = pg_loss.new_tensor(0.0)
            if critic is not None:
                vf_loss, vf_clip = P.value_loss(values, exp.old_values[mb], exp.returns[mb], exp.r_mask[mb],
                                                p.clip_range_value)
            if p.algorithm == "grpo":
                kl_loss = G.kl_loss(new_logprobs, exp.ref_logprobs[mb], exp.r_mask[mb])
            trainer.backward(pg_loss + p.vf_coef * vf_loss + kl_coef * kl_loss, step)
            trainer.step(step)
            stats.append(torch.stack([pg_loss.detach(), vf_loss.detach(), pg_clip, vf_clip, approx_kl,
                                      kl_loss.detach()]))
    return torch.stack(stats).mean(0).float()


def iteration_metrics(step: int, exp: Experience, gold, ro, stats, beta_used: float, clock, rollouts_per_step: int,
                      device, algorithm: str) -> dict:
    """The logged metrics of one iteration, every value over all ranks' rollouts; wall time of the
    phases on rank 0 and the tokens generated by all ranks. The value-loss metrics only with a
    critic (ppo), the KL loss only where it is trained (grpo)."""
    pg, vf, pg_clip, vf_clip, approx_kl, kl_loss = mean_over_ranks(stats).tolist()
    own = ({"ppo/value_loss": vf, "ppo/value_clip_frac": vf_clip} if algorithm == "ppo" else
           {"ppo/kl_loss": kl_loss} if algorithm == "grpo" else {})
    k1 = cat_over_ranks(P.sequence_kl(P.kl_per_token(exp.old_logprobs, exp.ref_logprobs, "k1"), exp.r_mask))
    all_gold, lengths = cat_over_ranks(gold), cat_over_ranks(ro.lengths.float().to(device))
    ended = cat_over_ranks(ro.ended.float().to(device))
    generate_s, score_s, forward_s, train_s = np.diff(clock)
    mean_kl = exp.all_seq_kl.mean().item()
    return {
        "ppo/step": step, "ppo/proxy": exp.all_proxy.mean().item(), "ppo/gold": all_gold.mean().item(),
        "ppo/kl": mean_kl, "ppo/sqrt_kl": max(mean_kl, 0.0) ** 0.5, "ppo/kl_k1": k1.mean().item(),
        "ppo/kl_coef": beta_used, "ppo/response_length": lengths.mean().item(),
        "ppo/ended_fraction": ended.mean().item(), "ppo/entropy": exp.entropy.item(),
        "ppo/policy_loss": pg, "ppo/clip_frac": pg_clip, "ppo/approx_kl": approx_kl, **own, "ppo/rollouts": (step + 1) * rollouts_per_step,
        "ppo/time_generate_s": generate_s, "ppo/time_score_s": score_s, "ppo/time_forward_s": forward_s,
        "ppo/time_train_s": train_s, "ppo/rollout_tokens": lengths.sum().item(),
        "ppo/rollout_tokens_per_s": lengths.sum().item() / (clock[-1] - clock[0]),
    }


# ----------------------------------------------------------------------------- held-out evaluation


def held_out_prompts(setup, n: int, seed: int, exclude: AbstractSet[str] = frozenset()) -> tuple[list, int]:
    """(the n held-out prompts, their sampling seed), fixed for the whole run; in the feature world none
    of `exclude` (trained_prompts: those the proxy, or a DPO policy, trained on). The prompt seed is
    the last of this seed's block of rollout seeds (rollout_prompts: seed·1_000_003 + step), which
    no run of fewer than 1_000_002 iterations reaches (not seed·1_000_003 − 1: random.Random seeds
    with |seed|, so −1 would be iteration 1's prompts); the sampling seed is apart from the
    training seeds (seed + rank·stride)."""
    return setup.prompts(n, seed=seed * 1_000_003 + 1_000_002, exclude=exclude) if n else [], seed + 2**31


def log_evaluation(tracker, iterations: int, held_out: tuple, trainer, reference, proxies, setup, cfg, sizes: dict,
                   eval_flops: FlopCounter, device) -> None:
    """Evaluate the policy after `iterations` iterations on the held-out prompts (held_out_prompts;
    none: nothing), count its FLOPs in eval_flops and log eval/* at eval/step = iterations."""
    prompts, sample_seed = held_out
    if not prompts:
        return
    metrics, tokens = evaluate(trainer, reference, proxies, setup, prompts, sample_seed, cfg.ppo,
                               cfg.task.max_response_tokens, cfg.proxy.ensemble, cfg.proxy.uwo_lambda, device)
    eval_flops.generate(sizes["policy"], tokens)
    eval_flops.forward(sizes["proxy"] + sizes["gold"] + 2 * sizes["policy"], tokens)  # scoring; policy and reference
    tracker.log({"eval/step": iterations, **metrics, "eval/flops": eval_flops.flops})


@torch.no_grad()
def evaluate(trainer, reference, proxies, setup, prompts, sample_seed: int, p, max_response_tokens: int,
             ensemble: str, uwo_lambda: float, device) -> tuple[dict, float]:
    """One response per held-out prompt from the current policy, sampled from `sample_seed` (the
    same every evaluation: common random numbers) inside fork_rng, so the training RNG is untouched;
    returns (eval/* metrics, real prompt + response tokens). eval/gold, eval/proxy: means (and gold's
    standard error); eval/kl: mean sequence KL to the reference, nats, with ppo.kl_estimator as in
    training. Every rank evaluates the whole set (generation inside trainer.whole()); rank 0 logs it."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(sample_seed)
        with trainer.whole():
            ro = sample(trainer.module["policy"], setup.tokenizer, prompts, max_new_tokens=max_response_tokens,
                        temperature=p.temperature)
    proxy, gold = score(proxies, setup, prompts, ro.texts, ensemble, uwo_lambda, max_response_tokens,
                        p.padding_free, device)
    ids = torch.cat([ro.prompt_ids, ro.response_ids], dim=1).to(device)
    mask = torch.cat([ro.prompt_mask, ro.response_mask], dim=1).to(device)
    r_ids, r_mask = ro.response_ids.to(device), ro.response_mask.to(device).float()
    batch = ResponseBatch.of(ids, mask, ro.prompt_ids.shape[1], p.padding_free)
    logprobs = P.logprobs_from_logits(policy_forward(trainer.module["policy"], batch, p.temperature)[0], r_ids)
    ref_logprobs = P.logprobs_from_logits(policy_forward(reference, batch, p.temperature)[0], r_ids)
    kl = P.sequence_kl(P.kl_per_token(logprobs, ref_logprobs, p.kl_estimator), r_mask)
    mean_kl = kl.mean().item()
    metrics = {"eval/gold": gold.mean().item(), "eval/gold_se": (gold.std() / len(gold) ** 0.5).item(),
               "eval/proxy": proxy.mean().item(), "eval/kl": mean_kl, "eval/sqrt_kl": max(mean_kl, 0.0) ** 0.5,
               "eval/response_len": ro.lengths.float().mean().item(),
               "eval/ended_fraction": ro.ended.float().mean().item()}
    return metrics, float(ro.prompt_mask.sum() + ro.lengths.sum())


# ----------------------------------------------------------------------------- compute


def model_sizes(trainer, proxies, gold) -> dict:
    """Non-embedding parameters (rlhf_scaling/compute.py) of every model PPO runs: policy (= the
    frozen reference), critic (separate: its transformer + head; shared: the value head alone;
    0 without one: rloo, grpo),
    proxy (summed over ensemble members) and gold (0 when it is a program)."""
    critic = critic_of(trainer.module)
    return {"policy": non_embedding_params(trainer.module["policy"]),
            "critic": non_embedding_params(critic) if critic is not None else 0,
            "proxy": sum(non_embedding_params(m) for m in proxies), "gold": gold_params(gold)}


def count_iteration(flops: FlopCounter, n: dict, tokens: float, ppo_epochs: int) -> None:
    """Add one iteration's work to `flops`; tokens = real prompt + response tokens of all rollouts:
    generation by the policy; proxy and gold scoring; the experience forwards (policy, reference,
    critic); ppo_epochs passes of training policy and critic."""
    flops.generate(n["policy"], tokens)
    flops.forward(n["proxy"] + n["gold"], tokens)
    flops.forward(2 * n["policy"] + n["critic"], tokens)  # policy and reference log-probs, values
    flops.train(n["policy"] + n["critic"], ppo_epochs * tokens)


# ----------------------------------------------------------------------------- checkpoint and export


def save(trainer, ckpt_dir: Path, kl_ctl, flops: FlopCounter, eval_flops: FlopCounter, step: int) -> None:
    """A resumable checkpoint after `step` iterations: the trainer's (weights, optimizer), β, the
    FLOPs so far (training, evaluation) and this rank's RNG."""
    trainer.save(ckpt_dir, step, {"kl_ctl": kl_ctl.state_dict(), "flops": flops.state_dict(),
                                  "eval_flops": eval_flops.state_dict()}, per_rank={"rng": rng_state()})


def resume(trainer, ckpt_dir: Path, kl_ctl, flops: FlopCounter, eval_flops: FlopCounter, rank: int) -> int:
    """Load the last checkpoint in ckpt_dir, if any; returns the iteration to start at."""
    state = trainer.resume(ckpt_dir)
    if state is None:
        return 0
    if "rng" not in state:
        raise RuntimeError(f"{ckpt_dir}: the checkpoint has no RNG state for rank {rank} "
                           f"(was it written by a run with a different number of ranks?)")
    kl_ctl.load_state_dict(state["kl_ctl"])
    flops.load_state_dict(state.get("flops", {"flops": 0.0}))
    eval_flops.load_state_dict(state.get("eval_flops", {"flops": 0.0}))
    set_rng_state(state["rng"])
    log.info("PPO resumed at iteration %d from %s", int(state["step"]), ckpt_dir)
    return int(state["step"])


def export_policy(trainer, tokenizer, out: Path, env: DistEnv) -> None:
    """The trained policy as one consolidated fp32 safetensors model (loads with load_policy /
    model source=pretrained), however it was trained (a collective: every rank calls it)."""
    policy = trainer.export("policy")
    if env.is_main:
        save_policy(policy, tokenizer, out)
    barrier()
