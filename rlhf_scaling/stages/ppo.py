"""Stage `ppo`: PPO against a proxy RM with a per-token KL penalty to the frozen init policy.

Recipe (Ziegler et al. 2019; Ouyang et al. 2022; maths in rlhf_scaling/ppo.py):
  per iteration: prompts x ppo.samples_per_prompt rollouts from the policy ->
  proxy score on the final token, gold score of the same rollouts (logged, never trained on) ->
  per-token reward −β·KL_t (+ score at the last real token) -> GAE with a critic initialised
  from the init policy -> ppo.ppo_epochs of clipped policy and value updates over minibatches ->
  β update (fixed or adaptive).
Every iteration logs proxy reward, gold reward, KL (nats per sequence, the estimator trained
with) and sqrt(KL), so overoptimization shows as proxy rising while gold turns down.

Checkpoints (policy, critic, optimizer, β, RNG, step) go to <run dir>/checkpoint; a job started
again in the same run folder resumes there and produces the same curves (tested).
"""

from __future__ import annotations

import copy
import logging
import random

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from torch import nn
from tqdm.auto import tqdm

from rlhf_scaling import ppo as P
from rlhf_scaling.bon import combine_ensemble
from rlhf_scaling.checkpoint import load_checkpoint, save_checkpoint
from rlhf_scaling.curves import fit_overoptimization, peak
from rlhf_scaling.models import load_policy, position_ids_from_mask
from rlhf_scaling.sampling import sample
from rlhf_scaling.scoring import load_ensemble, score_texts
from rlhf_scaling.stages.common import build_command, policy_init_path, rm_artifact, setup_task
from rlhf_scaling.training import check_finite, resolve_device, seed_everything

log = logging.getLogger(__name__)


class Critic(nn.Module):
    """Per-token value estimates: the init policy's transformer + a zero-initialised scalar head."""

    def __init__(self, policy):
        super().__init__()
        self.backbone = copy.deepcopy(policy.base_model)
        self.head = nn.Linear(policy.config.hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids, attention_mask):
        """(B, L) -> (B, L) values."""
        h = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                          position_ids=position_ids_from_mask(attention_mask)).last_hidden_state
        return self.head(h).squeeze(-1)


def response_logits(model, input_ids, attention_mask, n_prompt: int, temperature: float) -> torch.Tensor:
    """Logits (B, T, V) that predict the T response tokens of [prompt (n_prompt) | response (T)]."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask,
                   position_ids=position_ids_from_mask(attention_mask)).logits
    return logits[:, n_prompt - 1:-1] / temperature


def rollout_prompts(setup, step: int, n: int, seed: int):
    """The prompts of iteration `step`, from a generator seeded by (seed, step): resume-stable."""
    return setup.prompts(n, seed=seed * 1_000_003 + step)


def run(cfg: DictConfig, tracker) -> dict:
    """Train the policy; write ppo_curve.csv in the run folder; returns the RL-form fit summary."""
    p = cfg.ppo
    device = resolve_device(cfg.device)
    setup = setup_task(cfg, device=str(device))
    tok = setup.tokenizer
    rm_dir = rm_artifact(cfg).require(build_command("rm", cfg))
    seed_everything(cfg.seed + p.seed)
    init_path = policy_init_path(cfg)
    policy = load_policy(init_path).to(device)
    reference = load_policy(init_path).to(device).eval().requires_grad_(False)
    critic = Critic(policy).to(device)
    proxies = load_ensemble(rm_dir, device)
    trainable = nn.ModuleDict({"policy": policy, "critic": critic})
    optimizer = torch.optim.Adam(trainable.parameters(), lr=p.lr, eps=1e-5)
    kl_ctl = P.AdaptiveKLController(p.kl_coef, p.target_kl, p.kl_horizon) if p.adaptive_kl else P.FixedKLController(p.kl_coef)

    ckpt_dir = tracker.run_dir / "checkpoint"
    start = 0
    state = load_checkpoint(ckpt_dir, trainable)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        kl_ctl.load_state_dict(state["kl_ctl"])
        torch.set_rng_state(state["rng"])
        start = int(state["step"])
        log.info("PPO resumed at iteration %d from %s", start, ckpt_dir)
    tracker.define_step("ppo/", "ppo/step")
    n_rollouts = p.prompts_per_step * p.samples_per_prompt
    bar = tqdm(range(start, p.steps), initial=start, total=p.steps, desc=f"ppo vs {cfg.rm.name}",
               disable=not cfg.progress, leave=False)
    for step in bar:
        # ---- rollouts and their scores
        prompts = [q for q in rollout_prompts(setup, step, p.prompts_per_step, cfg.seed + p.seed)
                   for _ in range(p.samples_per_prompt)]
        ro = sample(policy, tok, prompts, max_new_tokens=cfg.task.max_response_tokens, temperature=p.temperature)
        ids = torch.cat([ro.prompt_ids, ro.response_ids], dim=1).to(device)
        mask = torch.cat([ro.prompt_mask, ro.response_mask], dim=1).to(device)
        r_ids, r_mask, n_prompt = ro.response_ids.to(device), ro.response_mask.to(device).float(), ro.prompt_ids.shape[1]
        with torch.no_grad():
            member_scores = score_texts(proxies, tok, prompts, ro.texts, max_response_tokens=cfg.task.max_response_tokens)
            proxy = torch.as_tensor(combine_ensemble(member_scores.numpy(), cfg.bon.ensemble, cfg.bon.uwo_lambda),
                                    dtype=torch.float32, device=device)
            gold = setup.gold.score(prompts, ro.texts)
            logits = response_logits(policy, ids, mask, n_prompt, p.temperature)
            old_logprobs = P.logprobs_from_logits(logits, r_ids)
            entropy = P.entropy_from_logits(logits, r_mask)
            ref_logprobs = P.logprobs_from_logits(response_logits(reference, ids, mask, n_prompt, p.temperature), r_ids)
            old_values = critic(ids, mask)[:, n_prompt - 1:-1] * r_mask
            scores = (proxy - proxy.mean()) / (proxy.std() + 1e-8) if p.whiten_rewards else proxy
            rewards, kl = P.kl_penalised_rewards(scores, old_logprobs, ref_logprobs, r_mask, kl_ctl.value, p.kl_estimator)
            advantages, returns = P.gae(rewards, old_values, r_mask, p.gamma, p.lam)
            advantages = P.whiten(advantages, r_mask)
        seq_kl = P.sequence_kl(kl, r_mask)  # nats per sequence, the estimator the penalty used
        # ---- PPO updates
        stats = []
        for _ in range(p.ppo_epochs):
            for mb in torch.randperm(n_rollouts).split(p.minibatch_size):
                new_logprobs = P.logprobs_from_logits(response_logits(policy, ids[mb], mask[mb], n_prompt, p.temperature), r_ids[mb])
                values = critic(ids[mb], mask[mb])[:, n_prompt - 1:-1]
                pg_loss, pg_clip, approx_kl = P.policy_loss(new_logprobs, old_logprobs[mb], advantages[mb], r_mask[mb], p.clip_range)
                vf_loss, vf_clip = P.value_loss(values, old_values[mb], returns[mb], r_mask[mb], p.clip_range_value)
                loss = pg_loss + p.vf_coef * vf_loss
                check_finite(loss, "ppo", step)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(trainable.parameters(), p.max_grad_norm or float("inf"))
                optimizer.step()
                stats.append([pg_loss.item(), vf_loss.item(), float(pg_clip), float(vf_clip), float(approx_kl)])
        beta_used = kl_ctl.value
        kl_ctl.update(float(seq_kl.mean()), n_rollouts)
        # ---- log
        if step % p.log_every == 0 or step == p.steps - 1:
            pg, vf, pg_clip, vf_clip, approx_kl = np.mean(stats, axis=0)
            k1 = P.sequence_kl(P.kl_per_token(old_logprobs, ref_logprobs, "k1"), r_mask).mean().item()
            mean_kl = seq_kl.mean().item()
            tracker.log({
                "ppo/step": step, "ppo/proxy": proxy.mean().item(), "ppo/gold": gold.mean().item(),
                "ppo/kl": mean_kl, "ppo/sqrt_kl": max(mean_kl, 0.0) ** 0.5, "ppo/kl_k1": k1,
                "ppo/kl_coef": beta_used, "ppo/response_length": ro.lengths.float().mean().item(),
                "ppo/ended_fraction": ro.ended.float().mean().item(), "ppo/entropy": entropy.item(),
                "ppo/policy_loss": pg, "ppo/value_loss": vf, "ppo/clip_frac": pg_clip, "ppo/value_clip_frac": vf_clip,
                "ppo/approx_kl": approx_kl, "ppo/rollouts": (step + 1) * n_rollouts,
            })
            bar.set_postfix(proxy=f"{proxy.mean().item():.2f}", gold=f"{gold.mean().item():.2f}", kl=f"{mean_kl:.2f}")
        if (step + 1) % p.checkpoint_every == 0 or step == p.steps - 1:
            save_checkpoint(ckpt_dir, trainable, {"optimizer": optimizer.state_dict(), "kl_ctl": kl_ctl.state_dict(),
                                                  "rng": torch.get_rng_state(), "step": step + 1})
    bar.close()
    return fit_summary(tracker.run_dir)


def fit_summary(run_dir) -> dict:
    """RL-form fits (Gao et al.: R(d) = d(α − β log d)) of the gold and proxy gains over iteration 0,
    from the run's own metrics.jsonl (so a resumed run fits its whole curve); writes ppo_curve.csv."""
    rows = pd.read_json(run_dir / "metrics.jsonl", lines=True)
    curve = rows.dropna(subset=["ppo/gold"]).drop_duplicates("ppo/step", keep="last").sort_values("ppo/step")
    curve = curve[["ppo/step", "ppo/proxy", "ppo/gold", "ppo/kl", "ppo/sqrt_kl"]]
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
