"""Stage `sft`: initialise the policy by supervised training on the task's demonstrations.

Recipe: demonstrations -> tiny policy (random init) -> next-token loss on response tokens, one
trainer step each (rlhf_scaling/training.py: one process) ->
sample and score with gold -> save the policy (safetensors + tokenizer) as the SFT artifact.
Pretrained policies skip this stage: give their SFT checkpoint as `policy.name_or_path`.
"""

from __future__ import annotations

import logging

import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from rlhf_scaling.artifacts import building
from rlhf_scaling.compute import FlopCounter, gold_params, non_embedding_params
from rlhf_scaling.data.encode import encode_prompt_response, encode_texts, pad_batch
from rlhf_scaling.data import feature_world
from rlhf_scaling.data.synthetic import sample_demonstrations
from rlhf_scaling.models import build_policy, save_policy
from rlhf_scaling.sampling import sample
from rlhf_scaling.stages.common import setup_task, sft_artifact
from rlhf_scaling.training import make_trainer, optimizer_and_schedule, resolve_device, seed_everything

log = logging.getLogger(__name__)


def response_labels(seqs, prompt_lens, pad_id):
    """(B, L) ids/mask and labels with -100 on prompt and padding: the loss covers response + EOS only."""
    ids, mask = pad_batch(seqs, pad_id, side="right")
    labels = ids.masked_fill(mask == 0, -100)
    for i, n in enumerate(prompt_lens):
        labels[i, :n] = -100
    return ids, mask, labels


def run(cfg: DictConfig, tracker) -> dict:
    """Build (or reuse) the SFT policy artifact; returns summary metrics."""
    if cfg.policy.source == "pretrained":
        log.info("policy %s is pretrained: no SFT stage, it is used as the init policy", cfg.policy.name_or_path)
        return {}
    artifact = sft_artifact(cfg)
    if artifact.exists():
        log.info("SFT policy reused: %s", artifact.path)
        return {"sft/artifact": str(artifact.path)}
    device = resolve_device(cfg.device)
    setup = setup_task(cfg)
    tok, s = setup.tokenizer, cfg.sft
    with building(artifact) as out:
        if out is None:
            return {"sft/artifact": str(artifact.path)}
        seed_everything(cfg.seed + s.seed)
        demonstrations = feature_world.sample_demonstrations if isinstance(setup.task, feature_world.FeatureTask) \
            else sample_demonstrations
        prompts, demos = demonstrations(setup.task, s.n_demos, seed=cfg.seed + s.seed)
        seqs, _ = encode_prompt_response(tok, prompts, demos, cfg.task.max_response_tokens)
        prompt_lens = [len(p) for p in encode_texts(tok, prompts)]
        policy = build_policy(cfg.policy, tok).to(device)
        optimizer, scheduler = optimizer_and_schedule(
            policy.parameters(), lr=s.lr, weight_decay=s.weight_decay, schedule=s.lr_schedule,
            warmup_ratio=s.warmup_ratio, total_steps=s.steps)
        trainer = make_trainer(policy, optimizer, scheduler, engine_cfg=None, where="sft", max_grad_norm=1.0,
                               precision=s.precision, device=device)
        tracker.define_step("sft/", "sft/step")
        n_params, flops, tokens = non_embedding_params(policy), FlopCounter(), 0  # compute: 6·N per trained token
        gen = torch.Generator().manual_seed(cfg.seed + s.seed)
        bar = tqdm(range(s.steps), desc=f"sft {cfg.policy.name}", disable=not cfg.progress, leave=False)
        for step in bar:
            idx = torch.randint(len(seqs), (s.batch_size,), generator=gen).tolist()
            ids, mask, labels = response_labels([seqs[i] for i in idx], [prompt_lens[i] for i in idx], tok.pad_token_id)
            with trainer.autocast():
                loss = policy(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss
            loss = trainer.backward(loss, step)
            trainer.step(step)
            tokens += int(mask.sum())
            flops.train(n_params, int(mask.sum()))
            if step % 20 == 0 or step == s.steps - 1:
                tracker.log({"sft/step": step, "sft/loss": loss.item(), "sft/lr": trainer.lr(),
                             "sft/train_tokens": tokens, "sft/flops": flops.flops})
                bar.set_postfix(loss=f"{loss.item():.3f}")
        eval_prompts = setup.prompts(256, seed=cfg.seed + s.seed + 1)
        rollouts = sample(policy, tok, eval_prompts, max_new_tokens=cfg.task.max_response_tokens)
        gold = setup.gold.score(eval_prompts, rollouts.texts)
        eval_tokens = int(rollouts.prompt_mask.sum() + rollouts.lengths.sum())
        flops.generate(n_params, eval_tokens)
        flops.forward(gold_params(setup.gold), eval_tokens)
        demo_gold = setup.gold.score(prompts[:256], demos[:256])
        summary = {"sft/gold_mean": gold.mean().item(), "sft/demo_gold_mean": demo_gold.mean().item(),
                   "sft/response_length": rollouts.lengths.float().mean().item(),
                   "sft/ended_fraction": rollouts.ended.float().mean().item(), "sft/flops": flops.flops}
        tracker.log({"sft/step": s.steps, **summary})
        save_policy(policy, tok, out)
    log.info("SFT policy %s: gold %.3f (demos %.3f), length %.1f -> %s", cfg.policy.name, summary["sft/gold_mean"],
             summary["sft/demo_gold_mean"], summary["sft/response_length"], artifact.path)
    return {**summary, "sft/artifact": str(artifact.path)}

