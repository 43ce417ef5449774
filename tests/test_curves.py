"""Overoptimization and scaling fits against exact and noisy synthetic data (DESIGN.md §2)."""

import numpy as np
import pytest

from rlhf_scaling.curves import (
    PowerLaw,
    bon_form,
    bootstrap_ci,
    fit_log_linear,
    fit_overoptimization,
    fit_power_law,
    fit_power_law_select,
    peak,
    rl_form,
    zero_crossing,
)

FORM_FN = {"bon": bon_form, "rl": rl_form}
TRUE = {"bon": (0.6, 0.08), "rl": (0.5, 0.12)}  # Gao et al.-like magnitudes


def test_forms_worked_values():
    assert bon_form(2.0, 1.0, 0.25) == pytest.approx(2.0 * (1.0 - 0.5))
    assert rl_form(np.e, 1.0, 0.5) == pytest.approx(np.e * 0.5)
    np.testing.assert_array_equal(rl_form(np.array([0.0, 1.0]), 0.3, 0.2), [0.0, 0.3])


@pytest.mark.parametrize("form", ["bon", "rl"])
def test_fit_recovers_noiseless_parameters(form):
    alpha, beta = TRUE[form]
    d = np.concatenate([[0.0], np.linspace(0.1, 6.0, 30)])  # includes d = 0, which is dropped
    a, b = fit_overoptimization(d, FORM_FN[form](d, alpha, beta), form)
    assert a == pytest.approx(alpha, abs=1e-9) and b == pytest.approx(beta, abs=1e-9)


@pytest.mark.parametrize("form", ["bon", "rl"])
def test_fit_recovers_parameters_under_1pct_multiplicative_noise(form):
    alpha, beta = TRUE[form]
    d = np.linspace(0.1, 6.0, 60)
    r = FORM_FN[form](d, alpha, beta) * (1 + 0.01 * np.random.default_rng(0).normal(size=d.size))
    a, b = fit_overoptimization(d, r, form)
    assert a == pytest.approx(alpha, rel=0.03) and b == pytest.approx(beta, rel=0.03)


def test_fit_has_no_intercept():
    # A constant offset cannot be absorbed: data R = 1 everywhere is not fitted exactly.
    d = np.linspace(0.5, 3, 10)
    a, b = fit_overoptimization(d, np.ones_like(d), "bon")
    assert not np.allclose(bon_form(d, a, b), 1.0)


@pytest.mark.parametrize(
    "d, r, form",
    [
        ([0.1, 0.2, 0.3], [1.0, 2.0], "bon"),  # different lengths
        ([0.0, 0.5], [0.0, 1.0], "bon"),  # only one usable point after dropping d = 0
        ([0.1, np.nan, 0.3], [1.0, 2.0, 3.0], "rl"),  # NaN
        ([0.1, 0.2, 0.3], [1.0, np.inf, 3.0], "bon"),  # inf
        ([-0.1, 0.2, 0.3], [1.0, 2.0, 3.0], "bon"),  # negative sqrt(KL)
        ([0.5, 0.5, 0.5], [1.0, 1.0, 1.0], "bon"),  # one distinct d: rank-deficient
        ([0.0, 0.0, 0.5], [0.0, 0.0, 0.2], "rl"),  # d = 0 dropped for rl (log 0): one usable point left
        ([0.0, 1.0, 1.0], [0.0, 0.3, 0.3], "rl"),  # only d = 1, where d log d = 0: beta undetermined
        ([0.1, 0.2], [1.0, 2.0], "ppo"),  # unknown form
    ],
)
def test_fit_rejects_bad_inputs(d, r, form):
    with pytest.raises(ValueError):
        fit_overoptimization(d, r, form)


@pytest.mark.parametrize("form", ["bon", "rl"])
def test_peak_and_zero_crossing_match_dense_grid(form):
    alpha, beta = TRUE[form]
    d_star, r_star = peak(alpha, beta, form)
    d0 = zero_crossing(alpha, beta, form)
    grid = np.linspace(1e-6, 2 * d0, 2_000_001)
    r = FORM_FN[form](grid, alpha, beta)
    assert d_star == pytest.approx(grid[np.argmax(r)], abs=2 * (grid[1] - grid[0]))
    assert r_star == pytest.approx(r.max(), rel=1e-9)
    assert FORM_FN[form](d0, alpha, beta) == pytest.approx(0.0, abs=1e-12)
    sign_change = grid[np.nonzero(np.diff(np.sign(r)))[0]]
    assert sign_change.size == 1 and sign_change[0] == pytest.approx(d0, abs=2 * (grid[1] - grid[0]))


def test_peak_worked_values():
    assert peak(0.6, 0.1, "bon") == pytest.approx((3.0, 0.9))
    assert peak(0.2, 0.1, "rl") == pytest.approx((np.e, 0.1 * np.e))
    assert zero_crossing(0.6, 0.1, "bon") == pytest.approx(6.0)
    assert zero_crossing(0.2, 0.1, "rl") == pytest.approx(np.e**2)


@pytest.mark.parametrize("form", ["bon", "rl"])
@pytest.mark.parametrize("beta", [0.0, -0.1])
def test_no_peak_when_beta_non_positive(form, beta):
    assert peak(0.5, beta, form) == (np.inf, np.inf)
    assert zero_crossing(0.5, beta, form) == np.inf


def test_bon_negative_alpha_peaks_at_origin():
    assert peak(-0.2, 0.1, "bon") == (0.0, 0.0)
    assert zero_crossing(-0.2, 0.1, "bon") == 0.0


def test_peak_rejects_unknown_form():
    with pytest.raises(ValueError):
        peak(1.0, 1.0, "ppo")
    with pytest.raises(ValueError):
        zero_crossing(1.0, 1.0, "ppo")


def test_fit_log_linear_exact():
    params = np.array([3e6, 3e7, 3e8, 3e9])
    y = 0.025 * np.log(params) + 0.12
    slope, intercept = fit_log_linear(params, y)
    assert slope == pytest.approx(0.025, abs=1e-12) and intercept == pytest.approx(0.12, abs=1e-10)


@pytest.mark.parametrize("x, y", [([1.0, 2.0], [1.0]), ([0.0, 2.0], [1.0, 2.0]), ([2.0, 2.0], [1.0, 3.0])])
def test_fit_log_linear_rejects_bad_inputs(x, y):
    with pytest.raises(ValueError):
        fit_log_linear(x, y)


def test_fit_power_law_without_floor():
    x = np.logspace(6, 10, 12)
    fit = fit_power_law(x, 5e3 * x**-0.35)
    assert isinstance(fit, PowerLaw) and fit.c == 0.0
    assert fit.a == pytest.approx(5e3, rel=1e-6) and fit.b == pytest.approx(0.35, rel=1e-6)
    np.testing.assert_allclose(fit.predict(x), 5e3 * x**-0.35, rtol=1e-6)


def test_fit_power_law_with_floor():
    x = np.logspace(6, 10, 15)
    y = 40.0 * x**-0.3 + 0.2
    fit = fit_power_law(x, y, floor=True)
    assert fit.a == pytest.approx(40.0, rel=1e-3)
    assert fit.b == pytest.approx(0.3, rel=1e-3)
    assert fit.c == pytest.approx(0.2, rel=1e-3)


def test_power_law_select_takes_the_floor_only_where_the_data_have_one():
    """RM error vs comparisons: with an irreducible error the floor wins on AICc and recovers the
    generating law (1% noise); without one, the plain law wins; too few points never get a floor."""
    rng = np.random.default_rng(0)
    x = np.logspace(2, 5, 10)
    floored = (0.9 * x**-0.4 + 0.15) * (1 + 0.01 * rng.standard_normal(x.size))
    fit, used = fit_power_law_select(x, floored)
    assert used and fit.c == pytest.approx(0.15, rel=0.05) and fit.b == pytest.approx(0.4, rel=0.1)
    plain = 0.9 * x**-0.4 * (1 + 0.01 * rng.standard_normal(x.size))
    fit, used = fit_power_law_select(x, plain)
    assert not used and fit.c == 0.0 and fit.b == pytest.approx(0.4, rel=0.02)
    fit, used = fit_power_law_select(x[:4], (0.9 * x**-0.4 + 0.15)[:4])
    assert not used


def test_power_law_is_frozen():
    with pytest.raises(AttributeError):
        PowerLaw(1.0, 1.0).a = 2.0


@pytest.mark.parametrize(
    "x, y, floor",
    [([1.0, 2.0, 3.0], [1.0, -1.0, 0.5], False),  # y <= 0 without floor
     ([1.0, 2.0], [2.0, 1.0], True),  # too few points for three parameters
     ([-1.0, 2.0], [2.0, 1.0], False),  # x <= 0
     ([1.0, 2.0, 3.0], [2.0, 2.0, 2.0], True),  # constant y: floor not identifiable
     ([1.0, 2.0, 3.0], [2.0, np.nan, 1.0], False),  # NaN
     ([1.0, 2.0, 3.0], [2.0, 1.0], False)],  # different lengths
)
def test_fit_power_law_rejects_bad_inputs(x, y, floor):
    with pytest.raises(ValueError):
        fit_power_law(x, y, floor=floor)


def test_bootstrap_ci_deterministic_and_covers_the_mean():
    units = np.random.default_rng(0).normal(loc=1.0, size=200)
    lo, hi = bootstrap_ci(np.mean, units, n_boot=500, seed=3)
    assert (lo, hi) == bootstrap_ci(np.mean, units, n_boot=500, seed=3)
    assert (lo, hi) != bootstrap_ci(np.mean, units, n_boot=500, seed=4)
    assert lo < units.mean() < hi
    assert hi - lo == pytest.approx(2 * 1.96 / np.sqrt(200), rel=0.25)  # ≈ normal-theory width


def test_bootstrap_ci_resamples_rows():
    # (U prompts, G grid values): the statistic sees whole rows, so a row-constant table has zero width.
    units = np.tile(np.arange(4.0), (10, 1))
    lo, hi = bootstrap_ci(lambda t: t[:, 2].mean(), units, n_boot=50)
    assert lo == hi == 2.0


@pytest.mark.parametrize("kwargs", [dict(level=1.0), dict(level=0.0), dict(n_boot=0)])
def test_bootstrap_ci_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        bootstrap_ci(np.mean, np.arange(5.0), **kwargs)


def test_bootstrap_ci_rejects_empty_units():
    with pytest.raises(ValueError):
        bootstrap_ci(np.mean, np.array([]))


def test_mean_interval_worked_value_and_edge_cases():
    from rlhf_scaling.curves import mean_interval

    mean, low, high = mean_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / np.sqrt(3)  # t_{0.975, 2} · s / √n, s = 1
    assert (mean, low, high) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    assert mean_interval([0.7, np.nan])[0] == 0.7 and np.isnan(mean_interval([0.7])[1])
    assert all(np.isnan(mean_interval([])))


@pytest.mark.parametrize("n_seeds", [2, 3, 5])
def test_mean_interval_covers_the_true_mean_at_the_nominal_rate(n_seeds):
    """Seeds as replicates: over 4000 simulated studies of n_seeds normal draws, the 95% interval
    holds the true mean in 95% ± 1.2% of them (3 binomial SDs at p = 0.95, 4000 trials: ±1.0%)."""
    from rlhf_scaling.curves import mean_interval

    rng = np.random.default_rng(n_seeds)
    draws = rng.normal(0.65, 0.03, size=(4000, n_seeds))
    covered = [low <= 0.65 <= high for _, low, high in map(mean_interval, draws)]
    assert np.mean(covered) == pytest.approx(0.95, abs=0.012)
