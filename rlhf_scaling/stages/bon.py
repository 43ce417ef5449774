"""Stage `bon`: best-of-n against a proxy RM, scored by gold with the unbiased estimator.

Recipe: init policy -> a pool of N = bon.n_max responses for each of bon.n_eval_prompts prompts,
sampled once -> proxy scores (ensemble combined by proxy.ensemble: mean | min | uwo) and gold scores ->
for every n on the grid, the unbiased estimate of the expected proxy and gold score of the
best-of-n choice (rlhf_scaling.bon_math) and KL_bon(n) = log n − (n−1)/n -> fit Gao's BoN form
R(d) = d(α − βd) to the gold and proxy gains over n = 1, with d = sqrt(KL_bon).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from rlhf_scaling.bon_math import combine_ensemble, expected_best_of_n_batch, kl_best_of_n
from rlhf_scaling.compute import FlopCounter, gold_params, non_embedding_params
from rlhf_scaling.config import bon_grid
from rlhf_scaling.curves import bootstrap_ci
from rlhf_scaling.models import load_policy
from rlhf_scaling.packing import require_exact_packing
from rlhf_scaling.sampling import sample
from rlhf_scaling.scoring import load_ensemble, score_texts
from rlhf_scaling.stages.common import (build_command, policy_init_path, proxy_data_cfg, proxy_n_params, rm_artifact,
                                        record_eval_prompts, setup_task)
from rlhf_scaling.stages.data import trained_prompts
from rlhf_scaling.summaries import bon_fit_summary
from rlhf_scaling.training import resolve_device, seed_everything

log = logging.getLogger(__name__)


def bon_curve(proxy: np.ndarray, gold: np.ndarray, grid) -> pd.DataFrame:
    """(P, N) proxy and gold scores -> one row per n: kl_bon (nats), sqrt_kl, proxy, gold
    (means over prompts of the unbiased best-of-n estimates) and their gains over n = 1."""
    proxy_n = expected_best_of_n_batch(proxy, proxy, grid)
    gold_per_prompt = expected_best_of_n_batch(proxy, gold, grid, per_prompt=True)  # (P, G)
    gold_n = gold_per_prompt.mean(axis=0)
    kl = np.array([kl_best_of_n(n) for n in grid])
    base_proxy, base_gold = proxy.mean(), gold.mean()  # n = 1: the init policy's means
    # 95% intervals of the gold gain by bootstrap over prompts (the unit that was sampled).
    gain_per_prompt = gold_per_prompt - gold.mean(axis=1, keepdims=True)
    ci = np.array([bootstrap_ci(lambda rows: rows.mean(), gain_per_prompt[:, j], n_boot=200, seed=j)
                   for j in range(len(grid))])
    return pd.DataFrame({"n": grid, "kl": kl, "sqrt_kl": np.sqrt(kl), "proxy": proxy_n, "gold": gold_n,
                         "proxy_gain": proxy_n - base_proxy, "gold_gain": gold_n - base_gold,
                         "gold_gain_low": ci[:, 0], "gold_gain_high": ci[:, 1]})


def run(cfg: DictConfig, tracker) -> dict:
    """Sample the pool, score it, write bon_curve.csv in the run folder; returns fit summary."""
    b = cfg.bon
    device = resolve_device(cfg.device)
    setup = setup_task(cfg, device=str(device))
    rm_dir = rm_artifact(cfg).require(build_command("rm", cfg))
    policy = load_policy(policy_init_path(cfg)).to(device)
    proxies = load_ensemble(rm_dir, device)
    if b.padding_free:
        require_exact_packing(proxies[0].backbone, "bon.padding_free")
    seed_everything(cfg.seed + b.seed)
    # In the feature world none of the proxy's training or validation prompts (stages/data.trained_prompts).
    prompts = setup.prompts(b.n_eval_prompts, seed=cfg.seed + b.seed + 20_000,
                            exclude=trained_prompts(proxy_data_cfg(cfg), setup))
    record_eval_prompts(tracker.run_dir / "eval_prompts.json", prompts)
    pool_prompts = [p for p in prompts for _ in range(b.n_max)]
    pool = sample(policy, setup.tokenizer, pool_prompts, max_new_tokens=cfg.task.max_response_tokens,
                  temperature=b.temperature)
    texts = pool.texts
    member_scores = score_texts(proxies, setup.tokenizer, pool_prompts, texts,
                                max_response_tokens=cfg.task.max_response_tokens, padding_free=b.padding_free).numpy()  # (M, P*N)
    proxy = combine_ensemble(member_scores, cfg.proxy.ensemble, cfg.proxy.uwo_lambda).reshape(len(prompts), b.n_max)
    gold = setup.gold.score(pool_prompts, texts).numpy().reshape(len(prompts), b.n_max)
    curve = bon_curve(proxy, gold, bon_grid(b))
    curve.to_csv(tracker.run_dir / "bon_curve.csv", index=False)
    tracker.define_step("bon/", "bon/n")
    for row in curve.itertuples():
        tracker.log({"bon/n": int(row.n), "bon/kl": row.kl, "bon/sqrt_kl": row.sqrt_kl, "bon/proxy": row.proxy,
                     "bon/gold": row.gold, "bon/proxy_gain": row.proxy_gain, "bon/gold_gain": row.gold_gain,
                     "bon/gold_gain_low": row.gold_gain_low, "bon/gold_gain_high": row.gold_gain_high})
    summary = bon_fit_summary(curve, "bon")
    summary["bon/n_max"] = b.n_max
    summary["rm/n_params"] = proxy_n_params(rm_dir)  # the proxy's size, as its RM job counted it
    summary["bon/gold_at_n_max"] = float(curve["gold"].iloc[-1])
    # Compute (rlhf_scaling/compute.py): the pool's generation, then proxy and gold scoring of it.
    flops, pool_tokens = FlopCounter(), int(pool.prompt_mask.sum() + pool.lengths.sum())
    flops.generate(non_embedding_params(policy), pool_tokens)
    flops.forward(sum(non_embedding_params(m) for m in proxies) + gold_params(setup.gold), pool_tokens)
    summary["bon/pool_tokens"], summary["bon/flops"] = pool_tokens, flops.flops
    log.info("best-of-n %s: gold %.3f at n=1, best %.3f at n=%d, %.3f at n=%d (KL %.2f nats)", cfg.rm.name,
             gold.mean(), summary["bon/best_gold"], summary["bon/best_n"], summary["bon/gold_at_n_max"], b.n_max,
             math.log(b.n_max) - (b.n_max - 1) / b.n_max)
    return summary
