"""RM training throughput: our K-wise path (one forward per response, all C(K,2) pairs from it)
against the same model trained on the expanded pairs (two forwards per comparison, what a
pairwise trainer such as TRL's RewardTrainer does with K-wise data), measured in one run.

    .venv/bin/python benchmarks/bench_rm.py [--model tiny-m] [--steps 20] [--repeats 3]
Optionally --trl also times trl.RewardTrainer on the same pairs (needs trl installed, see README).
"""

import argparse
import random
import statistics
import time

import torch

from rlhf_scaling.cli import compose
from rlhf_scaling.data.records import PreferenceGroup
from rlhf_scaling.data.rm_batches import collate, encode_groups, expand_pairs
from rlhf_scaling.data.synthetic import build_tokenizer, make_task, sample_demonstrations
from rlhf_scaling.models import build_reward_model
from rlhf_scaling.stages.rm import group_loss

torch.set_num_threads(2)


def make_groups(k: int, n_prompts: int, seed: int = 0):
    task = make_task(8, 6, 6, 16)
    rng = random.Random(seed)
    groups = []
    for i in range(n_prompts):
        prompts, demos = sample_demonstrations(task, k, seed=seed * 100_000 + i)
        responses = tuple(f"{d} {j}" if d else f"the {j}" for j, d in enumerate(demos))  # distinct
        order = list(range(k))
        rng.shuffle(order)
        pairs = tuple((order[a], order[b]) for a in range(k) for b in range(a + 1, k))
        groups.append(PreferenceGroup(prompts[0], responses, pairs))
    return task, groups


def time_training(model, units, pad_id, batch_size, steps, padding_free: bool = True):
    """Median seconds per optimizer step (collate + forward + backward + AdamW) and forward tokens
    per step, over `steps` steps after two warm-up steps (the median resists a busy machine).
    padding_free: the forward packs the batch (rm_train.padding_free, the stage's default)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times, tokens = [], []
    for step in range(steps + 2):
        start = time.perf_counter()
        part = [units[(step * batch_size + i) % len(units)] for i in range(batch_size)]
        batch = collate(part, pad_id)
        loss = group_loss(model, batch, use_margin=False, padding_free=padding_free)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= 2:
            times.append(time.perf_counter() - start)
            tokens.append(int(batch.attention_mask.sum()))
    return statistics.median(times), statistics.mean(tokens)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny-m")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--comparisons-per-step", type=int, default=96)
    args = parser.parse_args()
    spec = compose([f"model@rm={args.model}", "stage=rm"]).rm
    print(f"model {args.model}; {args.comparisons_per_step} comparisons per optimizer step; fp32; "
          f"{torch.get_num_threads()} threads")
    print(f"{'K':>3} {'ours cmp/s':>11} {'pairs cmp/s':>12} {'speed-up':>9} {'fwd tok/cmp ours':>17} {'pairs':>7} {'ratio':>6}")
    for k in (2, 4, 8):
        task, groups = make_groups(k, 400)
        tok = build_tokenizer(task)
        kwise, _ = encode_groups(groups, tok, 16)
        pairs, _ = encode_groups(expand_pairs(groups), tok, 16)
        per_group = k * (k - 1) // 2
        ours_t, pair_t = [], []
        for rep in range(args.repeats):
            torch.manual_seed(rep)
            t, ours_tok = time_training(build_reward_model(spec, tok), kwise, tok.pad_token_id,
                                        max(1, args.comparisons_per_step // per_group), args.steps)
            ours_t.append(t)
            torch.manual_seed(rep)
            t, pair_tok = time_training(build_reward_model(spec, tok), pairs, tok.pad_token_id,
                                        args.comparisons_per_step, args.steps)
            pair_t.append(t)
        comparisons_ours = max(1, args.comparisons_per_step // per_group) * per_group
        ours = comparisons_ours / statistics.median(ours_t)
        base = args.comparisons_per_step / statistics.median(pair_t)
        print(f"{k:>3} {ours:>11.0f} {base:>12.0f} {ours / base:>8.2f}x {ours_tok / comparisons_ours:>17.1f} "
              f"{pair_tok / args.comparisons_per_step:>7.1f} {pair_tok / args.comparisons_per_step / (ours_tok / comparisons_ours):>5.2f}x")


if __name__ == "__main__":
    main()
