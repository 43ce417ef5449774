"""Stage `data`: the preference data a proxy RM trains on.

Synthetic task: prompts -> K responses each from the init (SFT) policy -> gold scores ->
all C(K,2) comparisons labelled by gold (ties coin-flipped, optional label noise).
n_prompts = data.comparison_budget / C(K,2) training prompts (the diversity split), plus
data.n_eval_prompts held-out prompts with K responses each for RM evaluation (in the feature world
none of them a training prompt), and data.n_val_prompts more (default 0) for model selection (RM
early stopping), so the held-out accuracy is not measured on the set the weights were chosen on.

Loaded tasks (jsonl, hh, ultrafeedback): read and validate the file (rlhf_scaling.data.loaders),
hold out data.n_eval_prompts prompts with all their records (at most a fifth of the prompts); the
held-out prompts are also best-of-n's and PPO's prompts unless task.prompts_path names others;
data.n_val_prompts of the remaining prompts (at most a fifth) are the validation split.
Either way the artifact holds train.jsonl, eval.jsonl, stats.json, and val.jsonl when it has one.
"""

from __future__ import annotations

import json
import logging
import random
from typing import List, Set

from omegaconf import DictConfig

from rlhf_scaling.artifacts import building
from rlhf_scaling.compute import FlopCounter, gold_params, non_embedding_params
from rlhf_scaling.config import ConfigError, n_train_prompts, pairs_per_prompt
from rlhf_scaling.data.comparisons import LabelStats, label_group, split_eval
from rlhf_scaling.data.encode import encode_texts
from rlhf_scaling.data.feature_world import FeatureTask
from rlhf_scaling.data.records import read_groups, write_groups
from rlhf_scaling.models import load_policy
from rlhf_scaling.sampling import sample
from rlhf_scaling.stages.common import build_command, data_artifact, policy_init_path, setup_task
from rlhf_scaling.training import resolve_device, seed_everything
from rlhf_scaling.tracking import strict_json

log = logging.getLogger(__name__)


def generate_groups(policy, setup, prompts, *, k: int, max_new_tokens: int, temperature: float,
                    label_noise: float, rng: random.Random, stats: LabelStats):
    """K sampled responses per prompt, gold-scored and labelled: (one PreferenceGroup per prompt,
    real tokens sampled = prompt prefill + response tokens of the len(prompts)·k sequences)."""
    repeated = [p for p in prompts for _ in range(k)]
    rollouts = sample(policy, setup.tokenizer, repeated, max_new_tokens=max_new_tokens, temperature=temperature)
    tokens = int(rollouts.prompt_mask.sum() + rollouts.lengths.sum())
    gold = setup.gold.score(repeated, rollouts.texts).tolist()
    groups = []
    for n, prompt in enumerate(prompts):
        texts, scores = rollouts.texts[n * k:(n + 1) * k], gold[n * k:(n + 1) * k]
        groups.append(label_group(prompt, texts, scores, label_noise=label_noise, rng=rng, stats=stats))
    return groups, tokens


def _generate_synthetic(cfg: DictConfig, setup, out) -> dict:
    d = cfg.data
    device = resolve_device(cfg.device)
    policy = load_policy(policy_init_path(cfg)).to(device)
    seed_everything(cfg.seed + d.seed)
    rng = random.Random(cfg.seed + d.seed)
    n_prompts = n_train_prompts(d)
    train_prompts = setup.prompts(n_prompts, seed=cfg.seed + d.seed)
    eval_prompts = held_out_prompts(setup, d.n_eval_prompts, cfg.seed + d.seed + 10_000, seen=set(train_prompts))
    stats = LabelStats()
    kw = dict(k=d.responses_per_prompt, max_new_tokens=cfg.task.max_response_tokens, temperature=d.temperature,
              label_noise=d.label_noise, rng=rng)
    train, train_tokens = generate_groups(policy, setup, train_prompts, stats=stats, **kw)
    # Held-out comparisons are noise-free: RM accuracy is measured against gold itself.
    eval_, eval_tokens = generate_groups(policy, setup, eval_prompts, stats=LabelStats(), **{**kw, "label_noise": 0.0})
    # The validation split is generated last, so train and eval are the same with or without it; it is
    # labelled like the training data (label noise included): it stands for labelled data held back.
    val_prompts = held_out_prompts(setup, d.n_val_prompts, cfg.seed + d.seed + 30_000,
                                   seen=set(train_prompts) | set(eval_prompts))
    val, val_tokens = generate_groups(policy, setup, val_prompts, stats=LabelStats(), **kw) if val_prompts else ([], 0)
    # Compute (rlhf_scaling/compute.py): sampling 2·N per token, gold scoring 2·N per token when gold is a model.
    flops, tokens = FlopCounter(), train_tokens + eval_tokens + val_tokens
    flops.generate(non_embedding_params(policy), tokens)
    flops.forward(gold_params(setup.gold), tokens)
    write_splits(out, train, eval_, val)
    gold = [g for grp in train for g in grp.gold]
    return {
        "data/n_train_prompts": n_prompts, "data/responses_per_prompt": d.responses_per_prompt,
        "data/comparisons": stats.pairs, "data/pairs_per_prompt": pairs_per_prompt(d.responses_per_prompt),
        "data/tied_pairs": stats.ties, "data/noise_flipped": stats.flipped,
        "data/n_eval_prompts": len(eval_), "data/n_val_prompts": len(val), "data/gold_mean": sum(gold) / len(gold),
        "data/distinct_prompts": len(set(train_prompts)),
        "data/eval_prompts_in_train": len(set(eval_prompts) & set(train_prompts)),
        "data/val_prompts_in_train_or_eval": len(set(val_prompts) & (set(train_prompts) | set(eval_prompts))),
        "data/tokens": tokens, "data/flops": flops.flops,
    }


def held_out_prompts(setup, n: int, seed: int, seen: set) -> List[str]:
    """n held-out prompts: in the feature world none of them in `seen` (the training prompts, so the
    RM's held-out accuracy is on prompts it never saw); in the topics world drawn as the training
    prompts are (its ~240 prompts all recur in training at the default budgets: held out there are
    the responses, not the prompts; data/eval_prompts_in_train counts them)."""
    try:
        return setup.prompts(n, seed=seed, exclude=seen)
    except ValueError as e:
        raise ConfigError(f"data: {e}") from None


def write_splits(out, train, eval_, val) -> None:
    """train.jsonl, eval.jsonl and (only when there is one, so older artifacts read the same) val.jsonl."""
    write_groups(train, out / "train.jsonl")
    write_groups(eval_, out / "eval.jsonl")
    if val:
        write_groups(val, out / "val.jsonl")


def _load_existing(cfg: DictConfig, setup, out) -> dict:
    from rlhf_scaling.data.loaders import load_preferences

    groups, report = load_preferences(
        cfg.task.path, cfg.task.name, count_tokens=lambda text: len(encode_texts(setup.tokenizer, [text])[0]),
        max_prompt_tokens=cfg.task.max_prompt_tokens, on_bad_record=cfg.task.on_bad_record, split=cfg.task.split)
    log.info("%s: %s", cfg.task.path, report.summary())
    # Held out by prompt: RM evaluation, best-of-n and PPO use prompts the RM never trained on.
    n_eval = min(cfg.data.n_eval_prompts, len({g.prompt for g in groups}) // 5)
    train, eval_ = split_eval(groups, n_eval, seed=cfg.seed + cfg.data.seed, key=lambda g: g.prompt)
    # The validation split (model selection) comes out of the training prompts, at most a fifth of them.
    n_train = len({g.prompt for g in train})
    n_val = min(cfg.data.n_val_prompts, n_train // 5)
    if n_val < cfg.data.n_val_prompts:
        log.warning("data.n_val_prompts=%d: the validation split is capped at a fifth of the %d training prompts: %d",
                    cfg.data.n_val_prompts, n_train, n_val)
    train, val = split_eval(train, n_val, seed=cfg.seed + cfg.data.seed + 1, key=lambda g: g.prompt)
    write_splits(out, train, eval_, val)
    return {"data/n_train_prompts": len({g.prompt for g in train}), "data/n_eval_prompts": len({g.prompt for g in eval_}),
            "data/n_val_prompts": len({g.prompt for g in val}),
            "data/comparisons": sum(len(g.pairs) for g in train),
            "data/records_read": report.n_read, "data/records_kept": report.n_kept,
            "data/records_filtered": report.n_read - report.n_kept}


def run(cfg: DictConfig, tracker) -> dict:
    """Build (or reuse) the preference-data artifact; returns its stats."""
    artifact = data_artifact(cfg)
    if not artifact.exists():
        if cfg.task.name == "synthetic" and cfg.policy.source == "tiny":
            policy_init_path(cfg)  # fail early, naming the SFT command, if the policy is missing
        setup = setup_task(cfg)
        with building(artifact) as out:
            if out is not None:
                stats = _generate_synthetic(cfg, setup, out) if cfg.task.name == "synthetic" \
                    else _load_existing(cfg, setup, out)
                (out / "stats.json").write_text(strict_json(stats, indent=2))
    stats = json.loads((artifact.path / "stats.json").read_text())
    tracker.log(stats)
    log.info("preference data %s: %s", artifact.key, stats)
    return {**stats, "data/artifact": str(artifact.path)}


def load_data(cfg: DictConfig):
    """(train groups, eval groups) of the data artifact this config names, or a MissingArtifact error."""
    path = data_artifact(cfg).require(build_command("data", cfg))
    return read_groups(path / "train.jsonl"), read_groups(path / "eval.jsonl")


def load_validation(cfg: DictConfig) -> list:
    """The validation groups (data.n_val_prompts > 0) of the data artifact this config names; [] without."""
    path = data_artifact(cfg).require(build_command("data", cfg)) / "val.jsonl"
    return read_groups(path) if path.is_file() else []


def trained_prompts(data_cfg: DictConfig, setup) -> Set[str]:
    """The prompts of the training and validation groups (load_data, load_validation) of the data artifact
    `data_cfg` names: those an RM trained on or chose its weights by, or a DPO policy trained on. In the
    feature world a policy's held-out evaluation leaves them out (TaskSetup.prompts' exclude); empty
    elsewhere, where nothing is left out, and the data is not read. For best-of-n and PPO, data_cfg is
    proxy_data_cfg(cfg): the proxy's data."""
    if not isinstance(setup.task, FeatureTask):
        return set()
    train, _ = load_data(data_cfg)
    return {g.prompt for g in [*train, *load_validation(data_cfg)]}
