"""Best-of-n maths: KL of best-of-n, the unbiased best-of-n estimator, RM ensembles (pure numpy).

Notation
--------
N       pool size: responses sampled from the init policy per prompt (`bon.n_max`)
n       best-of-n: how many of the pool the policy "draws" before keeping the proxy's favourite
P       prompts (rows of a batched pool)
G       length of the n grid
M       ensemble members (proxy RMs)
S_i     the i-th smallest proxy score of a pool (1-based i, ascending order)
R(S_i)  the gold score of the response whose proxy score is S_i

Equations
---------
KL of best-of-n against the init policy (Gao, Schulman & Hilton 2022, best-of-n method; the formula
goes back to Stiennon et al. 2020 and Nakano et al. 2021):
    KL_bon(n) = log n − (n − 1)/n   nats.
It is an upper bound on the true KL, exact when the proxy score has no atoms under the init policy
(its density ratio is then n·F(S)^(n−1)); ties and repeated responses make the true KL smaller
(Beirami et al. 2024).

Unbiased best-of-n estimator (Nakano et al. 2021, used by Gao et al. 2022; Coste et al. 2023, App. B): over a pool of N ≥ n samples, the mean over ALL C(N, n) size-n subsets of the gold score of
the subset's proxy-argmax is
    R̂_n = Σ_{i=n..N} C(i − 1, n − 1) / C(N, n) · R(S_i),
because the i-th smallest sample is the subset maximum exactly when it is in the subset and the other
n − 1 members are drawn from the i − 1 smaller ones. With gold = proxy it gives the proxy score.

Tie rule: when proxy scores tie, the sample with the LOWER original index ranks higher (wins), the
same convention as `numpy.argmax` on a subset kept in original order. The estimator therefore equals
the brute-force mean of `gold[subset][argmax(proxy[subset])]` over subsets in index order.

Ensembles (Coste et al. 2023, §3 and App. B): "mean" = member mean; "min" = worst case;
"uwo" = uncertainty-weighted optimisation, mean − λ · Var with the POPULATION variance (ddof = 0).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.special import gammaln

ENSEMBLE_METHODS = ("mean", "min", "uwo")


def _as_float_array(x, name: str) -> np.ndarray:
    """numpy float64 array of an array-like or torch tensor (detached, on CPU)."""
    if hasattr(x, "detach"):  # torch.Tensor without importing torch here
        # .double() first: numpy has no bfloat16, the dtype RM scores often come in.
        x = x.detach().double().cpu().numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numeric, got {type(x).__name__}: {err}") from None


def _as_int(n, what: str) -> int:
    """n as a Python int, or ValueError if it is not a whole number (NaN, inf, 2.5, "3", True)."""
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer, float, np.floating)):
        raise ValueError(f"{what} must be an integer, got {n!r}")
    if not np.isfinite(n) or int(n) != n:
        raise ValueError(f"{what} must be an integer, got {n!r}")
    return int(n)


def kl_best_of_n(n: int) -> float:
    """KL_bon(n) = log n − (n−1)/n, in nats (Nakano et al. 2021, App. G). n=1 → 0."""
    n = _as_int(n, "kl_best_of_n: n")
    if n < 1:
        raise ValueError(f"kl_best_of_n: n must be >= 1, got {n}")
    return float(np.log(n) - (n - 1) / n)


def _log_binom(top: np.ndarray, k: np.ndarray) -> np.ndarray:
    """log C(top, k) through gammaln; exact binomials overflow float64 at N ≈ 10^4 (C(12600, 6300))."""
    return gammaln(top + 1.0) - gammaln(k + 1.0) - gammaln(top - k + 1.0)


def bon_weights(N: int, n: int) -> np.ndarray:
    """Weights w_i = C(i−1, n−1)/C(N, n) of the ascending-sorted pool, shape (N,), sum 1.

    w[i−1] is the probability that the i-th smallest of N samples is the maximum of a uniformly random
    size-n subset (Nakano et al. 2021, App. I); zero for i < n. Computed in log space.
    """
    N, n = _as_int(N, "bon_weights: N"), _as_int(n, "bon_weights: n")
    if n < 1 or N < n:
        raise ValueError(f"bon_weights: need integers 1 <= n <= N, got N={N}, n={n}")
    i = np.arange(n, N + 1, dtype=np.float64)
    log_w = _log_binom(i - 1.0, np.float64(n - 1)) - _log_binom(np.float64(N), np.float64(n))
    w = np.zeros(N)
    w[n - 1:] = np.exp(log_w)
    # The hockey-stick identity Σ_i C(i−1, n−1) = C(N, n) makes the sum exactly 1; renormalising only
    # removes the ~1e-13 rounding that gammaln differences accumulate at large N.
    return w / w.sum()


def _check_pool(proxy: np.ndarray, gold: np.ndarray, ndim: int) -> None:
    if proxy.shape != gold.shape:
        raise ValueError(f"proxy and gold must have the same shape, got {proxy.shape} and {gold.shape}")
    if proxy.ndim != ndim:
        raise ValueError(f"expected {ndim}-D proxy/gold, got shape {proxy.shape}")
    if proxy.shape[-1] < 1:
        raise ValueError("empty pool: need at least one sample per prompt")
    if ndim == 2 and proxy.shape[0] < 1:
        raise ValueError("no prompts: need proxy/gold of shape (P>=1, N)")
    if not (np.all(np.isfinite(proxy)) and np.all(np.isfinite(gold))):
        raise ValueError("proxy and gold must be finite (found NaN or inf)")


def _check_n(n, N: int) -> int:
    n = _as_int(n, "best-of-n: n")
    if n < 1 or n > N:
        raise ValueError(f"best-of-n needs an integer n in [1, N={N}], got n={n}")
    return n


def _descending_order(proxy: np.ndarray) -> np.ndarray:
    """Indices sorting each row of proxy (P, N) DESCENDING, ties by ascending original index.

    Reversed, this is the ascending order of the estimator with the documented tie rule (lower index
    ranks higher). A stable sort of −proxy gives exactly that but is ~3x slower than introsort, which
    is arbitrary only among ties: so introsort every row and redo the (rare) rows with ties stably.
    """
    order = np.argsort(-proxy, axis=-1)
    sorted_proxy = np.take_along_axis(proxy, order, axis=-1)
    tied = np.any(sorted_proxy[:, 1:] == sorted_proxy[:, :-1], axis=-1)
    if tied.any():
        order[tied] = np.argsort(-proxy[tied], axis=-1, kind="stable")
    return order


def expected_best_of_n(proxy, gold, n: int) -> float:
    """Unbiased expected gold score of best-of-n selection by `proxy`, from one pool.

    proxy, gold: shape (N,), scores of the same N responses (any reward units); N >= n.
    Returns Σ_i w_i · gold_sorted_i in gold units, where gold is permuted by THE SAME sort as proxy
    (a gold array left unpermuted pairs each proxy rank with another response's gold score: the bug
    in Coste et al.'s ensemble best-of-n code, `src/bon/ensemble_rm.py`). Ties: lower original index
    wins (module docstring).
    """
    proxy, gold = _as_float_array(proxy, "proxy"), _as_float_array(gold, "gold")
    _check_pool(proxy, gold, ndim=1)
    n = _check_n(n, proxy.shape[0])
    gold_desc = gold[_descending_order(proxy[None, :])[0]]
    # Descending position j holds ascending rank N − j, so the weights are read back to front.
    return float(gold_desc @ bon_weights(proxy.shape[0], n)[::-1])


# Lower-rank weight mass the batched estimator may skip (see expected_best_of_n_batch).
TRIM_MASS = 2.0 ** -60


def _support_width(L: np.ndarray, N: int, n: int) -> int:
    """How many top ranks of N carry all but <= TRIM_MASS of the best-of-n weight (L[k] = log k!).

    The skipped mass is the same or smaller for every larger n: C(i, n)/C(N, n) decreases in n.
    """
    i = np.arange(n, N + 1)
    w = np.exp(L[i - 1] - L[n - 1] - L[i - n] - (L[N] - L[n] - L[N - n]))  # ascending ranks n..N
    dropped = np.cumsum(w) <= TRIM_MASS  # prefix of ranks whose joint mass is negligible
    return N - n + 1 - int(dropped.sum())


def expected_best_of_n_batch(proxy, gold, n_grid: Sequence[int], per_prompt: bool = False,
                             block: int = 256) -> np.ndarray:
    """Best-of-n estimator for P prompts and a whole n grid at once.

    proxy, gold: shape (P, N), P >= 1 prompts. n_grid: G integers in [1, N], any order, repeats allowed.
    Returns shape (G,), the mean over prompts, or (P, G) with per_prompt=True (to bootstrap over
    prompts). Each prompt is sorted once; each n has one weight vector shared by all prompts; the work
    is a matrix product (P, N) @ (N, G), done in blocks of `block` grid values so memory stays
    O(N · block). Only the top of each sorted pool is multiplied: w_i = 0 for i < n, and for large n
    the weight sits on the top ~N·42/n ranks, so the lowest ranks, whose total weight is below
    TRIM_MASS = 2^-60 for every n in the block, are skipped. Each dropped term is bounded by
    TRIM_MASS · max|gold| (below float64 rounding of the result); this turns the O(P·N·G) product
    for the full grid n = 1..N into roughly O(P·N·(block + 42·log N)).
    """
    proxy, gold = _as_float_array(proxy, "proxy"), _as_float_array(gold, "gold")
    _check_pool(proxy, gold, ndim=2)
    P, N = proxy.shape
    n_grid = np.atleast_1d(np.asarray(n_grid))
    if n_grid.ndim != 1:
        raise ValueError(f"n_grid must be 1-D, got shape {n_grid.shape}")
    grid = np.array([_check_n(n, N) for n in n_grid.tolist()], dtype=np.int64)
    if grid.size == 0:
        raise ValueError("n_grid is empty")
    # Sorted descending so that the rows with nonzero weight for n (ascending ranks n..N) are the
    # leading columns 0..N−n: a block then uses a contiguous prefix.
    gold_desc = np.take_along_axis(gold, _descending_order(proxy), axis=1)
    # gammaln once for every integer the weights need; log C(a, b) = L[a] − L[b] − L[a−b].
    L = gammaln(np.arange(N + 1, dtype=np.float64) + 1.0)  # L[k] = log k!
    out = np.empty((P, grid.size))
    order = np.argsort(grid, kind="stable")
    for start in range(0, grid.size, block):
        cols = order[start:start + block]
        ns = grid[cols]
        width = _support_width(L, N, int(ns.min()))  # descending positions 0..width−1 are ranks N..N−width+1
        ranks = N - np.arange(width)  # ascending rank i of each descending position
        log_w = (L[ranks[:, None] - 1] - L[ns[None, :] - 1] - L[np.maximum(ranks[:, None] - ns[None, :], 0)]
                 - (L[N] - L[ns] - L[N - ns])[None, :])
        w = np.where(ranks[:, None] >= ns[None, :], np.exp(log_w), 0.0)
        w /= w.sum(axis=0, keepdims=True)  # as in bon_weights: remove gammaln rounding
        out[:, cols] = gold_desc[:, :width] @ w
    return out if per_prompt else out.mean(axis=0)


def combine_ensemble(scores, how: str, uwo_lambda: float = 1.0) -> np.ndarray:
    """Combine M ensemble members' scores over axis 0 (Coste et al. 2023, §3, App. B).

    scores: shape (M, ...), one row per member, in reward units. Returns shape (...).
    how: "mean"; "min" (worst-case optimisation); "uwo" = mean − uwo_lambda · population variance
    (ddof=0: Coste et al. App. B define Var with 1/M; ddof=1 would inflate the penalty by M/(M−1)).
    """
    scores = _as_float_array(scores, "scores")
    if scores.ndim < 1 or scores.shape[0] < 1:
        raise ValueError(f"combine_ensemble: scores must have shape (M>=1, ...), got {scores.shape}")
    if how == "mean":
        return scores.mean(axis=0)
    if how == "min":
        return scores.min(axis=0)
    if how == "uwo":
        return scores.mean(axis=0) - uwo_lambda * scores.var(axis=0, ddof=0)
    raise ValueError(f"combine_ensemble: unknown how={how!r}; choose one of {ENSEMBLE_METHODS}")
