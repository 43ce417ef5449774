"""Best-of-n speed: the full n-grid with the batched unbiased estimator, against a per-n loop of the
scalar estimator and Monte-Carlo resampling, all in one run (ratios); optionally sampling throughput.

    .venv/bin/python benchmarks/bench_bon.py [--prompts 1000] [--pool 12600]

--device cuda also runs the estimator's matrix products on the GPU (`estimator_torch` below: the
package's numpy estimator with its (P, width) @ (width, block) products in float64 torch on the
device; checked equal to the numpy result). --sample SHAPE times best-of-n pool sampling: our
`rlhf_scaling.sampling.sample` (the bon stage's sampler: HF generate, pure temperature sampling,
responses cut at EOS) from a random-init policy of that shape (benchmarks/shapes.py) on the synthetic
task's tokenizer, and, for the cost of Pythia's 50,304-row output layer, plain `generate` at that
vocabulary from random prompt ids; generated tokens/s. --no-baselines skips the CPU loop and Monte
Carlo extrapolations; --json writes every figure.
"""

import argparse
import json
import time

import numpy as np
from scipy.special import gammaln

from rlhf_scaling.bon_math import _support_width, expected_best_of_n, expected_best_of_n_batch


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def estimator_torch(proxy, gold, grid, device, block: int = 256) -> np.ndarray:
    """expected_best_of_n_batch (mean over prompts) with the sort, gather and products on `device`.

    The same weights as the package (log-space binomials, the top `_support_width` ranks only, columns
    renormalised), computed on the host per block of n; ties rank by lower original index (a stable
    descending sort), as the package's tie rule."""
    import torch

    p = torch.as_tensor(proxy, dtype=torch.float64, device=device)
    g = torch.as_tensor(gold, dtype=torch.float64, device=device)
    P, N = p.shape
    order = torch.sort(p, dim=1, descending=True, stable=True).indices
    gold_desc = torch.gather(g, 1, order)
    L = gammaln(np.arange(N + 1, dtype=np.float64) + 1.0)
    grid = np.asarray(grid, dtype=np.int64)
    out = torch.empty(P, grid.size, dtype=torch.float64, device=device)
    cols_all = np.argsort(grid, kind="stable")
    for start in range(0, grid.size, block):
        cols = cols_all[start:start + block]
        ns = grid[cols]
        width = _support_width(L, N, int(ns.min()))
        ranks = N - np.arange(width)
        log_w = (L[ranks[:, None] - 1] - L[ns[None, :] - 1] - L[np.maximum(ranks[:, None] - ns[None, :], 0)]
                 - (L[N] - L[ns] - L[N - ns])[None, :])
        w = np.where(ranks[:, None] >= ns[None, :], np.exp(log_w), 0.0)
        w /= w.sum(axis=0, keepdims=True)
        out[:, torch.as_tensor(cols, device=device)] = gold_desc[:, :width] @ torch.as_tensor(w, device=device)
    return out.mean(dim=0).cpu().numpy()


def sampling_throughput(shape: str, device: str, n_prompts: int, n: int, new_tokens: int, batch_size: int,
                        vocab: int) -> dict:
    """Generated tokens/s of n samples for each of n_prompts prompts: ours, and plain generate at `vocab`."""
    import random

    import torch
    from transformers import GPTNeoXForCausalLM

    from rlhf_scaling.data.synthetic import build_tokenizer, make_task, sample_prompts
    from rlhf_scaling.models import tiny_config
    from rlhf_scaling.sampling import sample
    from shapes import spec, sync

    task = make_task(8, 6, 6, new_tokens)
    tok = build_tokenizer(task)
    prompts = [q for q in sample_prompts(task, n_prompts, random.Random(0)) for _ in range(n)]
    out = {"shape": shape, "sequences": len(prompts), "max_new_tokens": new_tokens, "batch_size": batch_size}
    torch.manual_seed(0)
    with torch.device(device):
        policy = GPTNeoXForCausalLM(tiny_config(spec(shape, 2048), len(tok), tok.pad_token_id, tok.eos_token_id))
    sample(policy, tok, prompts[:batch_size], max_new_tokens=4, batch_size=batch_size)  # warm-up
    sync(device)
    start = time.perf_counter()
    ro = sample(policy, tok, prompts, max_new_tokens=new_tokens, batch_size=batch_size)
    sync(device)
    seconds = time.perf_counter() - start
    out.update(ours_vocab=len(tok), ours_s=seconds, ours_generated_tokens=int(ro.lengths.sum()),
               ours_tokens_per_s=int(ro.lengths.sum()) / seconds)
    del policy
    with torch.device(device):  # Pythia's output layer: 50,304 x d_model per generated token
        policy = GPTNeoXForCausalLM(tiny_config(spec(shape, 2048), vocab, 0, 0)).eval()
    ids = torch.randint(1, vocab, (len(prompts), 8), generator=torch.Generator().manual_seed(0))
    tokens, start = 0, None
    with torch.no_grad():
        for i, first in enumerate(range(-batch_size, len(prompts), batch_size)):  # chunk -1: warm-up
            chunk = ids[max(first, 0):max(first, 0) + batch_size].to(device)
            if i == 1:
                sync(device)
                start = time.perf_counter()
            gen = policy.generate(input_ids=chunk, attention_mask=torch.ones_like(chunk), do_sample=True, top_k=0,
                                  max_new_tokens=new_tokens if i else 4, min_new_tokens=new_tokens if i else 4,
                                  pad_token_id=0, eos_token_id=None)
            tokens += (gen.shape[1] - chunk.shape[1]) * chunk.shape[0] if i else 0
    sync(device)
    seconds = time.perf_counter() - start
    out.update(plain_vocab=vocab, plain_s=seconds, plain_generated_tokens=tokens, plain_tokens_per_s=tokens / seconds)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--pool", type=int, default=12600)
    parser.add_argument("--mc-samples", type=int, default=100)
    parser.add_argument("--device", default=None, help="also run estimator_torch (and --sample) on this device")
    parser.add_argument("--no-baselines", action="store_true", help="skip the scalar-loop and Monte Carlo extrapolations")
    parser.add_argument("--sample", default=None, help="shape of benchmarks/shapes.py: time pool sampling too")
    parser.add_argument("--sample-prompts", type=int, default=8)
    parser.add_argument("--sample-n", type=int, default=256, help="samples per prompt (the bon pool)")
    parser.add_argument("--sample-tokens", type=int, default=64)
    parser.add_argument("--sample-batch", type=int, default=512)
    parser.add_argument("--sample-vocab", type=int, default=50304, help="output rows of the plain-generate model (Pythia's)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    P, N = args.prompts, args.pool
    proxy = rng.normal(size=(P, N))
    gold = proxy + rng.normal(scale=1.0, size=(P, N))
    grid = list(range(1, N + 1))
    res = {"prompts": P, "pool": N, "grid": f"1..{N}"}

    t_batch, est = timed(lambda: expected_best_of_n_batch(proxy, gold, grid))
    res["estimator_numpy_s"] = t_batch
    print(f"batched estimator, full grid n=1..{N}, {P} prompts: {t_batch:.2f} s")
    if args.device:
        import torch

        from shapes import sync

        estimator_torch(proxy[:8], gold[:8], grid[:8], args.device)  # warm-up (CUDA context, kernels)
        t_dev, est_dev = timed(lambda: (estimator_torch(proxy, gold, grid, args.device), sync(args.device))[0])
        res["estimator_device_s"] = t_dev
        res["estimator_device_max_abs_diff"] = float(np.abs(est_dev - est).max())
        name = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
        print(f"same on {name} (estimator_torch, float64): {t_dev:.2f} s, max |diff| vs numpy "
              f"{res['estimator_device_max_abs_diff']:.2e}")
    if args.sample:
        s = sampling_throughput(args.sample, args.device or "cpu", args.sample_prompts, args.sample_n,
                                args.sample_tokens, args.sample_batch, args.sample_vocab)
        res["sampling"] = s
        print(f"pool sampling, {args.sample} shape, {s['sequences']} samples x <= {s['max_new_tokens']} tokens: "
              f"ours {s['ours_tokens_per_s']:.0f} generated tokens/s (vocab {s['ours_vocab']}), plain generate at "
              f"vocab {s['plain_vocab']:,} {s['plain_tokens_per_s']:.0f} tokens/s")
    if args.no_baselines:
        if args.json:
            with open(args.json, "w") as f:
                json.dump(res, f, indent=1)
        return

    for n_sub in (1000, 3000, N):
        t, _ = timed(lambda: expected_best_of_n_batch(proxy[:, :n_sub], gold[:, :n_sub], list(range(1, n_sub + 1))))
        print(f"  N={n_sub:>6}: {t:.2f} s  ({t / n_sub * 1e3:.3f} ms per unit of N)")

    # Per-n scalar loop on a subsample of prompts and n, extrapolated to the full grid.
    sub_p, sub_n = 5, 50
    ns = np.linspace(1, N, sub_n).astype(int)
    t_loop, _ = timed(lambda: [[expected_best_of_n(proxy[p], gold[p], int(n)) for n in ns] for p in range(sub_p)])
    t_loop_full = t_loop / (sub_p * sub_n) * P * N
    print(f"scalar estimator per (prompt, n): {t_loop / (sub_p * sub_n) * 1e3:.2f} ms -> full grid ~{t_loop_full:.0f} s "
          f"(extrapolated from {sub_p} prompts x {sub_n} n)")

    # Monte-Carlo resampling of size-n subsets (what the estimator replaces), same extrapolation.
    def monte_carlo(p, n):
        idx = np.stack([rng.choice(N, size=n, replace=False) for _ in range(args.mc_samples)])
        best = idx[np.arange(len(idx)), proxy[p][idx].argmax(1)]
        return gold[p][best].mean()

    sub_n_mc = 10
    ns_mc = np.linspace(1, N, sub_n_mc).astype(int)
    t_mc, _ = timed(lambda: [[monte_carlo(p, int(n)) for n in ns_mc] for p in range(sub_p)])
    t_mc_full = t_mc / (sub_p * sub_n_mc) * P * N
    print(f"Monte Carlo ({args.mc_samples} subsets per n): ~{t_mc_full:.0f} s for the full grid (extrapolated)")
    print(f"speed-up: {t_loop_full / t_batch:.0f}x over the scalar loop, {t_mc_full / t_batch:.0f}x over Monte Carlo")
    print(f"check: estimate at n=1 {est[0]:.4f} vs mean gold {gold.mean():.4f}")
    res.update(scalar_loop_full_grid_s=t_loop_full, monte_carlo_full_grid_s=t_mc_full)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
