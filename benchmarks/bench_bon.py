"""Best-of-n estimation speed: the full n-grid with the batched unbiased estimator, against a
per-n loop of the scalar estimator and Monte-Carlo resampling, all in one run (ratios).

    .venv/bin/python benchmarks/bench_bon.py [--prompts 1000] [--pool 12600]
"""

import argparse
import time

import numpy as np

from rlhf_scaling.bon_math import expected_best_of_n, expected_best_of_n_batch


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--pool", type=int, default=12600)
    parser.add_argument("--mc-samples", type=int, default=100)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    P, N = args.prompts, args.pool
    proxy = rng.normal(size=(P, N))
    gold = proxy + rng.normal(scale=1.0, size=(P, N))
    grid = list(range(1, N + 1))

    t_batch, est = timed(lambda: expected_best_of_n_batch(proxy, gold, grid))
    print(f"batched estimator, full grid n=1..{N}, {P} prompts: {t_batch:.2f} s")

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


if __name__ == "__main__":
    main()
