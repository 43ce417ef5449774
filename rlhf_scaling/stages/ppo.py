"""Stage `ppo`: PPO against a proxy RM with a per-token KL penalty to the frozen init policy.

Recipe (Ziegler et al. 2019; Ouyang et al. 2022; maths in rlhf_scaling/ppo.py):
  per iteration: prompts x ppo.samples_per_prompt rollouts from the policy ->
  proxy score on the final token, gold score of the same rollouts (logged, never trained on) ->
  per-token reward −β·KL_t (+ score at the last real token) -> GAE with a critic initialised
  from the init policy (ppo.critic: its own transformer, or a value head on the policy's) ->
  ppo.ppo_epochs of clipped policy and value updates over minibatches -> β update (fixed or adaptive).
Every iteration logs proxy reward, gold reward, KL (nats per sequence, the estimator trained
with) and sqrt(KL), so overoptimization shows as proxy rising while gold turns down; and the
iteration's time split (generation, scoring, experience forwards, training) and rollout tokens.

Checkpoints (policy, critic, optimizer, β, RNG, step) go to <run dir>/checkpoint every
ppo.checkpoint_every iterations and at a preemption signal (rlhf_scaling/preemption.py); a job
started again in the same run folder resumes there and produces the same curves (tested). The trained
policy is written as one consolidated safetensors model to <run dir>/policy.

DeepSpeed (deepspeed.enabled, W ranks): policy and critic train as ONE engine (ZeRO-2/3, bf16 from
the profile); ppo.prompts_per_step x samples_per_prompt rollouts and ppo.minibatch_size are GLOBAL
and split evenly over the ranks. Under ZeRO-3 generation runs with the engine's weights gathered
whole on every rank and ZeRO's hooks off for the duration of `sample` (one all-gather per
iteration instead of one per layer per generated token; ranks may then stop generating at
different lengths without deadlocking ZeRO's per-layer collectives). Batch statistics (reward and advantage whitening, the KL
controller's input, every logged metric) are taken over all ranks' rollouts, as one process would;
the gradient is the mean of the ranks' minibatch losses, each a mean over its own tokens (the
usual data-parallel approximation of the global token mean). The frozen reference policy and the
proxy RMs are replicated on every rank (inference only; bf16 when the profile trains in bf16).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from torch import nn
from tqdm.auto import tqdm

from rlhf_scaling import ppo as P
from rlhf_scaling.bon import combine_ensemble
from rlhf_scaling.checkpoint import load_checkpoint, save_checkpoint
from rlhf_scaling.config import ConfigError
from rlhf_scaling.curves import fit_overoptimization, peak
from rlhf_scaling.distributed import (DistEnv, barrier, cat_over_ranks, deepspeed_config, dist_env_from_environ,
                                      from_rank0, full_fp32_state_dict, load_deepspeed_checkpoint, mean_over_ranks,
                                      save_deepspeed_checkpoint, sum_over_ranks, whole_for_generation,
                                      wrap_with_deepspeed)
from rlhf_scaling.models import load_policy, save_policy
from rlhf_scaling.packing import PackPlan, packed_hidden_states, plan_packing, position_ids_from_mask, require_exact_packing
from rlhf_scaling.preemption import Preemption
from rlhf_scaling.sampling import sample
from rlhf_scaling.scoring import load_ensemble, score_texts
from rlhf_scaling.stages.common import build_command, policy_init_path, rm_artifact, setup_task
from rlhf_scaling.training import check_finite, resolve_device, seed_everything

log = logging.getLogger(__name__)
RANK_SEED_STRIDE = 1_000_003  # rank r samples from seed + r·stride: ranks draw different rollouts


def value_head(hidden_size: int) -> nn.Linear:
    """A zero-initialised scalar head (H -> 1): every value estimate starts at 0."""
    head = nn.Linear(hidden_size, 1)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head


@dataclass
class ResponseBatch:
    """Rollouts [prompt (n_prompt) | response (T)] laid out once for every PPO forward over them.

    ids, mask: (B, L = n_prompt + T), the prompt left-padded and the response right-padded.
    Padding-free (`plan` set): the real tokens are packed end to end (rlhf_scaling/packing.py) and
    (b, t), each (M,), are the rollout and response position of the M real response tokens. One
    plan serves the policy, reference and critic forwards of the same rollouts.
    """

    ids: torch.Tensor
    mask: torch.Tensor
    n_prompt: int
    plan: Optional[PackPlan] = None
    b: Optional[torch.Tensor] = None
    t: Optional[torch.Tensor] = None

    @classmethod
    def of(cls, ids: torch.Tensor, mask: torch.Tensor, n_prompt: int, padding_free: bool) -> "ResponseBatch":
        if not padding_free:
            return cls(ids, mask, n_prompt)
        b, t = mask[:, n_prompt:].nonzero(as_tuple=True)
        return cls(ids, mask, n_prompt, plan_packing(mask), b, t)

    def rows(self, index: torch.Tensor) -> "ResponseBatch":
        """The minibatch of rollouts `index` (packed anew: its rollouts fill fewer rows)."""
        return ResponseBatch.of(self.ids[index], self.mask[index], self.n_prompt, self.plan is not None)

    def states(self, backbone) -> torch.Tensor:
        """Hidden states of `backbone` (an HF base model) at the states before each response token:
        (M, H) at the real ones when padding-free, else (B, T, H)."""
        if self.plan is not None:
            return packed_hidden_states(backbone, self.ids, self.plan, self.b, self.n_prompt - 1 + self.t)
        h = backbone(input_ids=self.ids, attention_mask=self.mask,
                     position_ids=position_ids_from_mask(self.mask)).last_hidden_state
        return h[:, self.n_prompt - 1:-1]

    def scatter(self, x: torch.Tensor) -> torch.Tensor:
        """Per-response-token outputs as (B, T, ...): padding-free (M, ...) values are placed at
        (b, t) with zeros on padding (differentiable); padded (B, T, ...) ones pass through."""
        if self.plan is None:
            return x
        B, L = self.mask.shape
        return x.new_zeros((B, L - self.n_prompt, *x.shape[1:])).index_put((self.b, self.t), x)


class Critic(nn.Module):
    """ppo.critic=separate: per-token values from a copy of the init policy's transformer + a value head."""

    def __init__(self, policy):
        super().__init__()
        self.backbone = copy.deepcopy(policy.base_model)
        self.head = value_head(policy.config.hidden_size)

    def forward(self, batch: ResponseBatch) -> torch.Tensor:
        """(B, T) fp32 values V(s_t) of the states before each response token; 0 on response
        padding when padding-free."""
        return batch.scatter(self.head(batch.states(self.backbone)).squeeze(-1).float())


def policy_forward(model, batch: ResponseBatch, temperature: float,
                   head: Optional[nn.Linear] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Logits (B, T, V) that predict the T response tokens, and with `head` (ppo.critic=shared) the
    (B, T) fp32 values from that head on the same forward's last hidden states (else None).

    Only the positions that predict response tokens go through the LM head: with a 50k vocabulary
    the head is a large share of the forward, and the prompt's logits are never used. Padding-free,
    logits and values on response padding are 0 (every consumer masks them). The padded path runs
    the model's own forward, so models that post-process their logits keep doing so.
    """
    if batch.plan is not None:
        h = batch.states(model.base_model)
        logits = batch.scatter(model.get_output_embeddings()(h) / temperature)
    else:
        n_response = batch.ids.shape[1] - batch.n_prompt
        # The LM head's input is the last T + 1 final hidden states (logits_to_keep); capturing it
        # costs nothing, where output_hidden_states would keep every layer's (B, L, H).
        head_input = []
        hook = (model.get_output_embeddings().register_forward_pre_hook(lambda _, args: head_input.append(args[0]))
                if head is not None else None)
        try:
            logits = model(input_ids=batch.ids, attention_mask=batch.mask, position_ids=position_ids_from_mask(batch.mask),
                           logits_to_keep=n_response + 1).logits[:, :-1] / temperature
        finally:
            if hook is not None:
                hook.remove()
        h = head_input[0][:, :-1] if head is not None else None
    values = batch.scatter(head(h).squeeze(-1).float()) if head is not None else None
    return logits, values


def logits_and_values(policy, critic, batch: ResponseBatch, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Policy logits (B, T, V) and values (B, T) of the rollouts: one trunk forward when `critic`
    is a bare value head on the policy (ppo.critic=shared), a second one through a Critic's own
    transformer (separate)."""
    if isinstance(critic, Critic):
        return policy_forward(policy, batch, temperature)[0], critic(batch)
    return policy_forward(policy, batch, temperature, critic)


def check_plain_lm_head(model) -> None:
    """A padding-free forward applies the output embedding to the backbone's hidden states itself,
    which is the model's own forward only where nothing rescales or caps the logits after the head."""
    post = [k for k in ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")
            if getattr(model.config, k, None) not in (None, 1, 1.0)]
    if post or model.get_output_embeddings() is None:
        raise ConfigError(f"ppo.padding_free: {type(model).__name__} post-processes its logits ({', '.join(post) or 'no output embedding'}); "
                          f"set ppo.padding_free=false")


def rollout_prompts(setup, step: int, n: int, seed: int):
    """The prompts of iteration `step`, from a generator seeded by (seed, step): resume-stable."""
    return setup.prompts(n, seed=seed * 1_000_003 + step)


def rank_batch(p, env: DistEnv) -> tuple[int, int]:
    """(rollouts, minibatch) of one rank: the global ppo.prompts_per_step x samples_per_prompt and
    ppo.minibatch_size split evenly over env.world_size ranks (an uneven split would leave ranks
    with different numbers of optimizer steps, which ZeRO's collectives cannot do)."""
    n_rollouts = p.prompts_per_step * p.samples_per_prompt
    for name, value in (("ppo.prompts_per_step x ppo.samples_per_prompt", n_rollouts),
                        ("ppo.minibatch_size", p.minibatch_size)):
        if value % env.world_size:
            raise ConfigError(f"{name} = {value} must be divisible by the {env.world_size} ranks")
    return n_rollouts // env.world_size, p.minibatch_size // env.world_size


def whiten_over_ranks(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """P.whiten with the mean and (unbiased) variance taken over every rank's masked entries.

    x, mask: (B, T) on each rank. Two passes (mean, then squared deviations) as P.whiten does.
    """
    x = torch.where(mask.bool(), x, torch.zeros_like(x))
    count = sum_over_ranks(mask.sum().to(x.dtype))
    mean = sum_over_ranks(x.sum()) / count.clamp_min(1)
    dev = torch.where(mask.bool(), (x - mean) ** 2, torch.zeros_like(x))
    var = sum_over_ranks(dev.sum()) / (count - 1).clamp_min(1)
    return torch.where(mask.bool(), (x - mean) * torch.rsqrt(var + eps), torch.zeros_like(x))


def masked_mean_over_ranks(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """P.masked_mean over every rank's masked entries (scalar)."""
    total = sum_over_ranks(torch.stack([torch.where(mask.bool(), x, torch.zeros_like(x)).sum(),
                                        mask.sum().to(x.dtype)]))
    return total[0] / total[1].clamp_min(1)


def run(cfg: DictConfig, tracker) -> dict:
    """Train the policy; write ppo_curve.csv and policy/ in the run folder; returns the RL-form fit summary."""
    p = cfg.ppo
    env = dist_env_from_environ() if cfg.deepspeed.enabled else DistEnv()
    local_n, local_mb = rank_batch(p, env)
    device = resolve_device(cfg.device)
    setup = setup_task(cfg, device=str(device))
    tok = setup.tokenizer
    rm_dir = rm_artifact(cfg).require(build_command("rm", cfg))
    seed_everything(cfg.seed + p.seed + RANK_SEED_STRIDE * env.rank)
    init_path = policy_init_path(cfg)
    policy = load_policy(init_path).to(device)
    if p.padding_free:
        check_plain_lm_head(policy)
        require_exact_packing(policy.base_model, "ppo.padding_free")
    # separate: the critic's own copy of the init transformer; shared: a value head on the policy's.
    critic = (Critic(policy) if p.critic == "separate" else value_head(policy.config.hidden_size)).to(device)
    trainable = nn.ModuleDict({"policy": policy, "critic": critic})
    # fused: one kernel over all parameters instead of a Python loop per tensor (measured ~0.23 s
    # per step at the Pythia-160M shape on CPU unfused, benchmarks/RESULTS.md).
    optimizer = torch.optim.Adam(trainable.parameters(), lr=p.lr, eps=1e-5, fused=True)
    engine, dtype = None, torch.float32
    if cfg.deepspeed.enabled:
        ds_config = deepspeed_config(cfg.deepspeed, micro_batch_per_gpu=local_mb, grad_accum=1,
                                     world_size=env.world_size, max_grad_norm=p.max_grad_norm, precision="fp32")
        engine = wrap_with_deepspeed(trainable, optimizer, None, ds_config, env)
        policy, critic = engine.module["policy"], engine.module["critic"]
        dtype = torch.bfloat16 if ds_config["bf16"]["enabled"] else torch.float32
    # The reference in the policy's compute dtype: a bf16 policy against an fp32 reference would
    # start with a KL made of rounding alone.
    reference = load_policy(init_path).to(device, dtype).eval().requires_grad_(False)
    proxies = load_ensemble(rm_dir, device)
    if p.padding_free:
        require_exact_packing(proxies[0].backbone, "ppo.padding_free")
    kl_ctl = P.AdaptiveKLController(p.kl_coef, p.target_kl, p.kl_horizon) if p.adaptive_kl else P.FixedKLController(p.kl_coef)

    # Every rank's shards go to rank 0's run folder (ranks may have composed slightly different ones).
    ckpt_dir = Path(from_rank0(str(tracker.run_dir / "checkpoint")))
    start = _resume(ckpt_dir, trainable, optimizer, engine, kl_ctl, env)
    tracker.define_step("ppo/", "ppo/step")
    bar = tqdm(range(start, p.steps), initial=start, total=p.steps, desc=f"ppo vs {cfg.rm.name}",
               disable=not cfg.progress or not env.is_main, leave=False)
    with Preemption() as preemption:
        for step in bar:
            clock = [time.perf_counter()]
            # ---- rollouts (this rank's share of the iteration's prompts)
            prompts = [q for q in rollout_prompts(setup, step, p.prompts_per_step, cfg.seed + p.seed)
                       for _ in range(p.samples_per_prompt)][env.rank * local_n:(env.rank + 1) * local_n]
            with whole_for_generation(engine):  # ZeRO-3: gathered once, no per-layer collectives
                ro = sample(policy, tok, prompts, max_new_tokens=cfg.task.max_response_tokens, temperature=p.temperature)
            clock.append(time.perf_counter())
            ids = torch.cat([ro.prompt_ids, ro.response_ids], dim=1).to(device)
            mask = torch.cat([ro.prompt_mask, ro.response_mask], dim=1).to(device)
            r_ids, r_mask, n_prompt = ro.response_ids.to(device), ro.response_mask.to(device).float(), ro.prompt_ids.shape[1]
            # ---- scores: proxy (trained on) and gold (logged only)
            with torch.no_grad():
                member_scores = score_texts(proxies, tok, prompts, ro.texts, max_response_tokens=cfg.task.max_response_tokens,
                                            padding_free=p.padding_free)
                proxy = torch.as_tensor(combine_ensemble(member_scores.numpy(), cfg.bon.ensemble, cfg.bon.uwo_lambda),
                                        dtype=torch.float32, device=device)
                gold = torch.as_tensor(setup.gold.score(prompts, ro.texts), dtype=torch.float32, device=device)
            clock.append(time.perf_counter())
            # ---- experience: log-probs, reference log-probs, values, KL-penalised rewards, GAE
            batch = ResponseBatch.of(ids, mask, n_prompt, p.padding_free)
            with torch.no_grad():
                logits, old_values = logits_and_values(policy, critic, batch, p.temperature)
                old_logprobs = P.logprobs_from_logits(logits, r_ids)
                entropy = masked_mean_over_ranks(P.entropy_per_token(logits), r_mask)
                ref_logprobs = P.logprobs_from_logits(policy_forward(reference, batch, p.temperature)[0], r_ids)
                old_values = old_values * r_mask
                all_proxy = cat_over_ranks(proxy)
                scores = (proxy - all_proxy.mean()) / (all_proxy.std() + 1e-8) if p.whiten_rewards else proxy
                rewards, kl = P.kl_penalised_rewards(scores, old_logprobs, ref_logprobs, r_mask, kl_ctl.value, p.kl_estimator)
                advantages, returns = P.gae(rewards, old_values, r_mask, p.gamma, p.lam)
                advantages = whiten_over_ranks(advantages, r_mask)
            seq_kl = P.sequence_kl(kl, r_mask)  # nats per sequence, the estimator the penalty used
            clock.append(time.perf_counter())
            # ---- PPO updates
            stats = []
            for _ in range(p.ppo_epochs):
                for mb in torch.randperm(local_n).split(local_mb):
                    logits, values = logits_and_values(policy, critic, batch.rows(mb), p.temperature)
                    new_logprobs = P.logprobs_from_logits(logits, r_ids[mb])
                    pg_loss, pg_clip, approx_kl = P.policy_loss(new_logprobs, old_logprobs[mb], advantages[mb], r_mask[mb], p.clip_range)
                    vf_loss, vf_clip = P.value_loss(values, old_values[mb], returns[mb], r_mask[mb], p.clip_range_value)
                    loss = pg_loss + p.vf_coef * vf_loss
                    check_finite(mean_over_ranks(loss.detach()), "ppo", step)  # every rank stops together
                    if engine is not None:
                        engine.backward(loss)  # gradients averaged over ranks
                        engine.step()  # clipping at ppo.max_grad_norm (gradient_clipping) and Adam
                        # The step is taken inside engine.step: stop before any checkpoint can hold its weights.
                        check_finite(engine.get_global_grad_norm() or 0.0, "ppo", step, "gradient norm")
                    else:
                        optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                        grad_norm = nn.utils.clip_grad_norm_(trainable.parameters(), p.max_grad_norm or float("inf"))
                        check_finite(grad_norm, "ppo", step, "gradient norm")  # before the weights move
                        optimizer.step()
                    stats.append(torch.stack([pg_loss.detach(), vf_loss.detach(), pg_clip, vf_clip, approx_kl]))
            clock.append(time.perf_counter())
            all_seq_kl = cat_over_ranks(seq_kl)
            beta_used = kl_ctl.value
            kl_ctl.update(float(all_seq_kl.mean()), p.prompts_per_step * p.samples_per_prompt)
            # ---- log (every value over all ranks' rollouts)
            if step % p.log_every == 0 or step == p.steps - 1:
                pg, vf, pg_clip, vf_clip, approx_kl = mean_over_ranks(torch.stack(stats).mean(0).float()).tolist()
                k1 = cat_over_ranks(P.sequence_kl(P.kl_per_token(old_logprobs, ref_logprobs, "k1"), r_mask))
                all_gold, lengths = cat_over_ranks(gold), cat_over_ranks(ro.lengths.float().to(device))
                ended = cat_over_ranks(ro.ended.float().to(device))
                generate_s, score_s, forward_s, train_s = np.diff(clock)
                mean_kl = all_seq_kl.mean().item()
                tracker.log({
                    "ppo/step": step, "ppo/proxy": all_proxy.mean().item(), "ppo/gold": all_gold.mean().item(),
                    "ppo/kl": mean_kl, "ppo/sqrt_kl": max(mean_kl, 0.0) ** 0.5, "ppo/kl_k1": k1.mean().item(),
                    "ppo/kl_coef": beta_used, "ppo/response_length": lengths.mean().item(),
                    "ppo/ended_fraction": ended.mean().item(), "ppo/entropy": entropy.item(),
                    "ppo/policy_loss": pg, "ppo/value_loss": vf, "ppo/clip_frac": pg_clip, "ppo/value_clip_frac": vf_clip,
                    "ppo/approx_kl": approx_kl, "ppo/rollouts": (step + 1) * p.prompts_per_step * p.samples_per_prompt,
                    # Wall time of this iteration's phases on rank 0, and the tokens generated by all ranks.
                    "ppo/time_generate_s": generate_s, "ppo/time_score_s": score_s, "ppo/time_forward_s": forward_s,
                    "ppo/time_train_s": train_s, "ppo/rollout_tokens": lengths.sum().item(),
                    "ppo/rollout_tokens_per_s": lengths.sum().item() / (clock[-1] - clock[0]),
                })
                bar.set_postfix(proxy=f"{all_proxy.mean().item():.2f}", gold=f"{all_gold.mean().item():.2f}", kl=f"{mean_kl:.2f}")
            saved = (step + 1) % p.checkpoint_every == 0 or step == p.steps - 1
            if saved:
                _save(ckpt_dir, trainable, optimizer, engine, kl_ctl, step + 1, env)
            # Preempted (SIGUSR2 from Slurm / submitit): checkpoint here, then requeue and stop.
            preemption.checkpoint_if_signalled(
                lambda: saved or _save(ckpt_dir, trainable, optimizer, engine, kl_ctl, step + 1, env))
    bar.close()
    _save_policy(engine, trainable, tok, Path(from_rank0(str(tracker.run_dir / "policy"))), env)
    return fit_summary(tracker.run_dir) if env.is_main else {}


# ----------------------------------------------------------------------------- checkpoints (boilerplate)


def _rng_state() -> dict:
    """This process's RNG streams: CPU, and CUDA where sampling runs on a GPU."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _save(ckpt_dir: Path, trainable, optimizer, engine, kl_ctl, step: int, env: DistEnv) -> None:
    """A resumable checkpoint after `step` iterations: ours (safetensors + weights-only state) in one
    process, DeepSpeed's sharded one with each rank's RNG under DeepSpeed."""
    if engine is not None:
        save_deepspeed_checkpoint(engine, ckpt_dir, step, {"kl_ctl": kl_ctl.state_dict()}, env, per_rank=_rng_state())
    else:
        save_checkpoint(ckpt_dir, trainable, {"optimizer": optimizer.state_dict(), "kl_ctl": kl_ctl.state_dict(),
                                              "rng": _rng_state(), "step": step})


def _resume(ckpt_dir: Path, trainable, optimizer, engine, kl_ctl, env: DistEnv) -> int:
    """Load the last checkpoint in ckpt_dir, if any; returns the iteration to start at."""
    if engine is not None:
        resumed = load_deepspeed_checkpoint(engine, ckpt_dir, env)
        if resumed is None:
            return 0
        state, rng = {**resumed[0]}, resumed[1]
        if rng is None:
            raise RuntimeError(f"{ckpt_dir}: the checkpoint has no RNG state for rank {env.rank} "
                               f"(was it written by a run with a different number of ranks?)")
    else:
        state = load_checkpoint(ckpt_dir, trainable)
        if state is None:
            return 0
        optimizer.load_state_dict(state["optimizer"])
        rng = state["rng"]
    kl_ctl.load_state_dict(state["kl_ctl"])
    _set_rng_state(rng)
    log.info("PPO resumed at iteration %d from %s", int(state["step"]), ckpt_dir)
    return int(state["step"])


def _save_policy(engine, trainable, tokenizer, out: Path, env: DistEnv) -> None:
    """The trained policy as one consolidated fp32 safetensors model (loads with load_policy /
    model source=pretrained), whatever the ZeRO stage: under DeepSpeed gathered from the fp32
    master weights of every rank onto rank 0 (a collective: every rank calls it)."""
    policy = trainable["policy"]
    if engine is not None:
        state = full_fp32_state_dict(engine.module)
        if env.is_main:
            prefix = "policy."
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            with torch.device("meta"):  # a shell for the gathered tensors: no init, no memory
                policy = type(policy)(copy.deepcopy(policy.config))
            policy.load_state_dict(state, strict=True, assign=True)
            policy.config.torch_dtype = torch.float32
    if env.is_main:
        save_policy(policy, tokenizer, out)
    barrier()


def fit_summary(run_dir) -> dict:
    """RL-form fits (Gao et al.: R(d) = d(α − β log d)) of the gold and proxy gains over iteration 0,
    from the run's own metrics.jsonl (so a resumed run fits its whole curve); writes ppo_curve.csv."""
    rows = pd.read_json(run_dir / "metrics.jsonl", lines=True)
    curve = rows.dropna(subset=["ppo/gold"]).drop_duplicates("ppo/step", keep="last").sort_values("ppo/step")
    curve = curve[["ppo/step", "ppo/proxy", "ppo/gold", "ppo/kl", "ppo/sqrt_kl"]].astype({"ppo/step": int})
    curve.to_csv(run_dir / "ppo_curve.csv", index=False)
    base = curve.iloc[0]
    d = curve["ppo/sqrt_kl"].to_numpy()
    out = {"ppo/final_gold": float(curve["ppo/gold"].iloc[-1]), "ppo/final_proxy": float(curve["ppo/proxy"].iloc[-1]),
           "ppo/final_kl": float(curve["ppo/kl"].iloc[-1]), "ppo/peak_gold": float(curve["ppo/gold"].max()),
           "ppo/init_gold": float(base["ppo/gold"])}
    for target in ("gold", "proxy"):
        gain = (curve[f"ppo/{target}"] - base[f"ppo/{target}"]).to_numpy()
        try:
            alpha, beta = fit_overoptimization(d, gain, "rl")
        except ValueError:  # too few points with KL > 0
            alpha, beta = float("nan"), float("nan")
        out[f"ppo/alpha_{target}"], out[f"ppo/beta_{target}"] = alpha, beta
    out["ppo/peak_sqrt_kl_fit"], out["ppo/peak_gold_gain_fit"] = peak(out["ppo/alpha_gold"], out["ppo/beta_gold"], "rl")
    return out
