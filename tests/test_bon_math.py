"""Best-of-n maths against worked values and brute force over all subsets (DESIGN.md §2)."""

import itertools
import math

import numpy as np
import pytest

from rlhf_scaling.bon_math import (
    bon_weights,
    combine_ensemble,
    expected_best_of_n,
    expected_best_of_n_batch,
    kl_best_of_n,
)


def brute_force_best_of_n(proxy, gold, n):
    """Mean over ALL C(N, n) subsets of gold at the subset's proxy argmax (np.argmax: lowest index wins ties)."""
    vals = [gold[list(s)][int(np.argmax(proxy[list(s)]))] for s in itertools.combinations(range(len(proxy)), n)]
    return float(np.mean(vals))


# ---- KL ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, expected", [(1, 0.0), (2, math.log(2) - 0.5), (1000, 5.909), (12500, 8.434)])
def test_kl_best_of_n_worked_values(n, expected):
    assert kl_best_of_n(n) == pytest.approx(expected, abs=5e-4 if n >= 1000 else 1e-12)


@pytest.mark.parametrize("n", [0, -3, 2.5, float("nan"), float("inf"), "4", True])
def test_kl_best_of_n_rejects_non_positive_or_non_integer_n(n):
    with pytest.raises(ValueError):
        kl_best_of_n(n)


def test_kl_best_of_n_rounds_to_design_values():
    # DESIGN.md §2 quotes these to 3 decimal places.
    assert round(kl_best_of_n(1000), 3) == 5.909 and round(kl_best_of_n(12500), 3) == 8.434
    assert kl_best_of_n(np.int64(1000)) == kl_best_of_n(1000.0) == kl_best_of_n(1000)


# ---- weights ----------------------------------------------------------------------------------

def test_bon_weights_match_exact_binomials():
    N, n = 9, 4
    expected = [math.comb(i - 1, n - 1) / math.comb(N, n) for i in range(1, N + 1)]
    np.testing.assert_allclose(bon_weights(N, n), expected, rtol=1e-12, atol=0)
    assert np.all(bon_weights(N, n)[: n - 1] == 0)


@pytest.mark.parametrize("n", [1, 2, 100, 6300, 12599, 12600])
def test_bon_weights_finite_and_normalised_at_large_N(n):
    w = bon_weights(12600, n)
    assert w.shape == (12600,)
    assert np.all(np.isfinite(w)) and np.all(w >= 0)
    assert w.sum() == pytest.approx(1.0, abs=1e-12)
    assert w[-1] == pytest.approx(n / 12600, rel=1e-9)  # P(the top sample is in the subset)


@pytest.mark.parametrize("N, n", [(3, 4), (5, 0), (5, 2.5), (float("inf"), 2)])
def test_bon_weights_reject_bad_sizes(N, n):
    with pytest.raises(ValueError):
        bon_weights(N, n)


# ---- single-pool estimator --------------------------------------------------------------------

@pytest.mark.parametrize("N", [1, 2, 5, 8])
def test_estimator_equals_brute_force_over_all_subsets(N):
    rng = np.random.default_rng(N)
    proxy, gold = rng.normal(size=N), rng.normal(size=N)
    for n in range(1, N + 1):
        assert expected_best_of_n(proxy, gold, n) == pytest.approx(brute_force_best_of_n(proxy, gold, n), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_estimator_equals_brute_force_with_tied_proxy_scores(seed):
    rng = np.random.default_rng(100 + seed)
    proxy = rng.integers(0, 3, size=8).astype(float)  # three distinct values among 8: many ties
    gold = rng.normal(size=8)
    for n in range(1, 9):
        assert expected_best_of_n(proxy, gold, n) == pytest.approx(brute_force_best_of_n(proxy, gold, n), abs=1e-12)


def test_tie_rule_lowest_index_wins():
    # All proxy scores tie: the best of the full pool is sample 0, by the documented rule.
    assert expected_best_of_n([1.0, 1.0, 1.0], [10.0, 20.0, 30.0], 3) == 10.0


def test_n1_is_mean_and_nN_is_gold_at_proxy_argmax():
    rng = np.random.default_rng(0)
    proxy, gold = rng.normal(size=50), rng.normal(size=50)
    assert expected_best_of_n(proxy, gold, 1) == pytest.approx(gold.mean(), abs=1e-12)
    assert expected_best_of_n(proxy, gold, 50) == pytest.approx(gold[np.argmax(proxy)], abs=1e-12)


def test_gold_is_permuted_with_proxy():
    # Proxy order is the reverse of the index order; gold is NOT sorted. Forgetting to permute gold
    # (Coste et al.'s ensemble_rm.py) would weight gold in index order: 3.0 instead of 7.0 at n = N.
    proxy = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    gold = np.array([7.0, -1.0, 0.0, 2.0, 3.0])
    assert expected_best_of_n(proxy, gold, 5) == 7.0
    assert expected_best_of_n(proxy, gold, 2) == pytest.approx(brute_force_best_of_n(proxy, gold, 2))
    unpermuted = float(bon_weights(5, 2) @ gold)
    assert unpermuted != pytest.approx(expected_best_of_n(proxy, gold, 2))


def test_gold_equal_proxy_gives_expected_proxy_max():
    proxy = np.array([0.3, -1.0, 2.0, 0.5])
    assert expected_best_of_n(proxy, proxy, 4) == 2.0
    assert expected_best_of_n(proxy, proxy, 2) == pytest.approx(brute_force_best_of_n(proxy, proxy, 2))


def test_finite_at_N_12600():
    rng = np.random.default_rng(1)
    proxy, gold = rng.normal(size=12600), rng.normal(size=12600)
    for n in (1, 1000, 12600):
        assert np.isfinite(expected_best_of_n(proxy, gold, n))


def test_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    proxy, gold = torch.tensor([0.1, 0.9, 0.5]), torch.tensor([1.0, 2.0, 3.0])
    assert expected_best_of_n(proxy, gold, 3) == 2.0
    # bfloat16 (common for RM scores) has no numpy dtype; requires_grad tensors must be detached.
    proxy_bf16 = proxy.to(torch.bfloat16).requires_grad_()
    assert expected_best_of_n(proxy_bf16, gold.to(torch.bfloat16), 3) == 2.0
    np.testing.assert_allclose(expected_best_of_n_batch(proxy_bf16[None], gold[None], [1, 3]), [2.0, 2.0], rtol=1e-12)


@pytest.mark.parametrize(
    "proxy, gold, n",
    [
        ([1.0, 2.0], [1.0, 2.0, 3.0], 1),  # mismatched shapes
        ([1.0, 2.0], [1.0, 2.0], 3),  # n > N
        ([1.0, 2.0], [1.0, 2.0], 0),  # n < 1
        ([1.0, np.nan], [1.0, 2.0], 1),  # NaN proxy
        ([1.0, 2.0], [np.nan, 2.0], 1),  # NaN gold
        ([[1.0, 2.0]], [[1.0, 2.0]], 1),  # 2-D pool for the 1-D function
        ([], [], 1),  # empty pool
        ([1.0, 2.0], [1.0, 2.0], 1.5),  # non-integer n
        (["a", "b"], [1.0, 2.0], 1),  # non-numeric scores
    ],
)
def test_estimator_rejects_bad_inputs(proxy, gold, n):
    with pytest.raises(ValueError):
        expected_best_of_n(proxy, gold, n)


# ---- batched estimator ------------------------------------------------------------------------

def test_batch_equals_per_prompt_loop():
    rng = np.random.default_rng(2)
    P, N = 7, 300
    proxy = rng.normal(size=(P, N))
    proxy[0, :10] = proxy[0, 10]  # a row with ties takes the stable-sort path
    proxy[1] = np.round(proxy[1])
    gold = proxy + rng.normal(size=(P, N))
    grid = [1, 2, 3, 7, 64, 150, 299, 300]
    loop = np.array([[expected_best_of_n(proxy[p], gold[p], n) for n in grid] for p in range(P)])
    per_prompt = expected_best_of_n_batch(proxy, gold, grid, per_prompt=True)
    assert per_prompt.shape == (P, len(grid))
    np.testing.assert_allclose(per_prompt, loop, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(expected_best_of_n_batch(proxy, gold, grid), loop.mean(axis=0), rtol=1e-12, atol=1e-12)


def test_batch_full_grid_small_blocks_and_unsorted_grid():
    rng = np.random.default_rng(3)
    proxy, gold = rng.normal(size=(3, 40)), rng.normal(size=(3, 40))
    grid = list(range(40, 0, -1))  # descending and spanning several blocks
    loop = np.array([[expected_best_of_n(proxy[p], gold[p], n) for n in grid] for p in range(3)])
    np.testing.assert_allclose(expected_best_of_n_batch(proxy, gold, grid, per_prompt=True, block=7), loop,
                               rtol=1e-12, atol=1e-12)


def test_batch_large_N_matches_single_pool():
    # Large n skips negligible low ranks in the batched form; the result must still agree.
    rng = np.random.default_rng(4)
    proxy, gold = rng.normal(size=(2, 12600)), rng.normal(size=(2, 12600))
    grid = [1, 10, 1000, 12600]
    loop = np.array([[expected_best_of_n(proxy[p], gold[p], n) for n in grid] for p in range(2)])
    np.testing.assert_allclose(expected_best_of_n_batch(proxy, gold, grid, per_prompt=True), loop, rtol=1e-12, atol=1e-12)


def test_batch_accepts_scalar_and_array_grids():
    rng = np.random.default_rng(6)
    proxy, gold = rng.normal(size=(4, 9)), rng.normal(size=(4, 9))
    full = expected_best_of_n_batch(proxy, gold, range(1, 10))
    np.testing.assert_allclose(expected_best_of_n_batch(proxy, gold, 3), full[[2]], rtol=1e-12)
    np.testing.assert_allclose(expected_best_of_n_batch(proxy, gold, np.array([9, 3, 3])), full[[8, 2, 2]], rtol=1e-12)


def test_batch_with_ties_equals_brute_force():
    # Direct check (not only through the scalar form): quantised proxy, ties in every row.
    rng = np.random.default_rng(7)
    proxy = rng.integers(0, 3, size=(3, 7)).astype(float)
    gold = rng.normal(size=(3, 7))
    got = expected_best_of_n_batch(proxy, gold, range(1, 8), per_prompt=True)
    brute = [[brute_force_best_of_n(proxy[p], gold[p], n) for n in range(1, 8)] for p in range(3)]
    np.testing.assert_allclose(got, brute, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "proxy, gold, grid",
    [
        (np.zeros((2, 3)), np.zeros((2, 4)), [1]),
        (np.zeros(3), np.zeros(3), [1]),  # 1-D pool for the batched function
        (np.zeros((2, 3)), np.zeros((2, 3)), [4]),
        (np.zeros((2, 3)), np.zeros((2, 3)), [0]),
        (np.zeros((2, 3)), np.zeros((2, 3)), []),
        (np.full((2, 3), np.nan), np.zeros((2, 3)), [1]),
        (np.zeros((2, 3)), np.full((2, 3), np.inf), [1]),
        (np.zeros((0, 3)), np.zeros((0, 3)), [1]),  # no prompts
        (np.zeros((2, 3)), np.zeros((2, 3)), [[1, 2]]),  # 2-D grid
    ],
)
def test_batch_rejects_bad_inputs(proxy, gold, grid):
    with pytest.raises(ValueError):
        expected_best_of_n_batch(proxy, gold, grid)


# ---- ensembles --------------------------------------------------------------------------------

def test_combine_ensemble_mean_min_uwo():
    scores = np.array([[1.0, 0.0], [3.0, 0.0]])  # 2 members, 2 samples
    np.testing.assert_allclose(combine_ensemble(scores, "mean"), [2.0, 0.0])
    np.testing.assert_allclose(combine_ensemble(scores, "min"), [1.0, 0.0])
    # population variance of (1, 3) is 1 (ddof=1 would give 2): uwo = 2 − 0.5·1
    np.testing.assert_allclose(combine_ensemble(scores, "uwo", uwo_lambda=0.5), [1.5, 0.0])


def test_uwo_uses_population_variance():
    rng = np.random.default_rng(5)
    scores = rng.normal(size=(3, 4, 5))
    got = combine_ensemble(scores, "uwo", uwo_lambda=2.0)
    assert got.shape == (4, 5)
    np.testing.assert_allclose(got, scores.mean(0) - 2.0 * scores.var(0, ddof=0))
    assert not np.allclose(got, scores.mean(0) - 2.0 * scores.var(0, ddof=1))


def test_combine_ensemble_rejects_unknown_method():
    with pytest.raises(ValueError, match="unknown"):
        combine_ensemble(np.zeros((2, 3)), "max")


@pytest.mark.parametrize("scores", [np.float64(1.0), np.zeros((0, 3))])
def test_combine_ensemble_rejects_scores_without_members(scores):
    with pytest.raises(ValueError):
        combine_ensemble(scores, "mean")


def test_combine_ensemble_single_member_and_1d():
    # One member: mean = min = the member, and its population variance is 0 (ddof=1 would give NaN).
    member = np.array([[0.5, -1.0, 2.0]])
    for how in ("mean", "min", "uwo"):
        np.testing.assert_array_equal(combine_ensemble(member, how), member[0])
    # Shape (M,): one sample scored by M members -> a 0-d result.
    assert float(combine_ensemble(np.array([1.0, 2.0, 6.0]), "min")) == 1.0
