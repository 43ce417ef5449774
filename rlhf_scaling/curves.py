"""Overoptimization and scaling fits shared by the stages, the figures and the analysis (numpy/scipy).

Notation
--------
KL      KL(π ‖ π_init) in nats: per sequence for RL, KL_bon(n) for best-of-n (see bon.py)
d       sqrt(KL), the "distance" the policy has moved from its initialisation (nats^½)
R(d)    reward gain over the init policy, in reward units; R(0) = 0 by construction (RMs are
        re-centred so the init policy's mean reward is 0)
α, β    the fitted coefficients of a functional form

Equations (Gao, Schulman & Hilton 2022, §3, eq. 1–2)
--------------------------------------------------
best-of-n:  R_bon(d) = d (α_bon − β_bon d)
RL:         R_RL(d)  = d (α_RL − β_RL log d)
Both are linear in (α, β), so they are fitted by ordinary least squares with NO intercept.
Peaks (dR/dd = 0): BoN d* = α/2β, R* = α²/4β;  RL d* = exp(α/β − 1), R* = β d*.
Zero crossings (R(d) = 0, d > 0): BoN d = α/β;  RL d = exp(α/β).
Gao et al. Fig. 3: α and β move roughly linearly in log(RM parameter count) -> `fit_log_linear`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.optimize import curve_fit

FORMS = ("bon", "rl")


def _check_form(form: str) -> None:
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; choose one of {FORMS}")


def bon_form(d, alpha: float, beta: float) -> np.ndarray:
    """Best-of-n gold-reward curve R(d) = d (α − β d) (Gao et al. 2022, eq. 1). d = sqrt(KL), any shape."""
    d = np.asarray(d, dtype=np.float64)
    return d * (alpha - beta * d)


def rl_form(d, alpha: float, beta: float) -> np.ndarray:
    """RL gold-reward curve R(d) = d (α − β log d) (Gao et al. 2022, eq. 2), with R(0) = 0.

    d = sqrt(KL) >= 0, any shape. d log d -> 0 as d -> 0, so R(0) = 0 is the continuous extension.
    """
    d = np.asarray(d, dtype=np.float64)
    safe = np.where(d > 0, d, 1.0)  # avoid log(0) warnings; those entries are replaced by 0 below
    return np.where(d > 0, d * (alpha - beta * np.log(safe)), 0.0)


def _design(d: np.ndarray, form: str) -> np.ndarray:
    """Design matrix (K, 2) with R = X @ (α, β): columns d and −d² (BoN) or d and −d log d (RL)."""
    if form == "bon":
        return np.stack([d, -d * d], axis=1)
    return np.stack([d, -d * np.log(d)], axis=1)


def fit_overoptimization(d, r, form: str) -> tuple[float, float]:
    """Least-squares (α, β) of R(d) with no intercept (Gao et al. 2022, eq. 1–2).

    d: shape (K,), sqrt(KL) >= 0; r: shape (K,), reward gain over the init policy (reward units).
    Points at d == 0 are dropped: R(0) = 0 by construction, so they carry no information.
    Needs >= 2 points with d > 0 that determine both coefficients.
    """
    _check_form(form)
    d = np.asarray(d, dtype=np.float64).ravel()
    r = np.asarray(r, dtype=np.float64).ravel()
    if d.shape != r.shape:
        raise ValueError(f"d and r must have the same length, got {d.size} and {r.size}")
    if not (np.all(np.isfinite(d)) and np.all(np.isfinite(r))):
        raise ValueError("d and r must be finite (found NaN or inf)")
    if np.any(d < 0):
        raise ValueError("d = sqrt(KL) must be >= 0")
    keep = d > 0
    d, r = d[keep], r[keep]
    if d.size < 2:
        raise ValueError(f"need at least 2 points with d > 0 to fit (alpha, beta), got {d.size}")
    X = _design(d, form)
    (alpha, beta), _, rank, _ = np.linalg.lstsq(X, r, rcond=None)
    if rank < 2:
        raise ValueError("the points do not determine (alpha, beta): need at least 2 distinct d > 0"
                         + (" other than d = 1 (where d log d = 0)" if form == "rl" else ""))
    return float(alpha), float(beta)


def peak(alpha: float, beta: float, form: str) -> tuple[float, float]:
    """(d*, R*): where the fitted gold curve peaks, and its height (Gao et al. 2022, §3).

    BoN: d* = α/2β, R* = α²/4β.  RL: d* = exp(α/β − 1), R* = β d*.
    β <= 0: the curve never turns down, so there is no peak -> (inf, inf).
    BoN with β > 0 and α <= 0: the curve only falls for d > 0, so the maximum over d >= 0 is at the
    origin -> (0.0, 0.0) (the formula's d* <= 0 lies outside the domain). The RL form always has
    d* > 0 when β > 0, since −β d log d > 0 near d = 0.
    """
    _check_form(form)
    if beta <= 0:
        return float("inf"), float("inf")
    if form == "bon":
        if alpha <= 0:
            return 0.0, 0.0
        return alpha / (2 * beta), alpha**2 / (4 * beta)
    d_star = float(np.exp(alpha / beta - 1.0))
    return d_star, beta * d_star


def zero_crossing(alpha: float, beta: float, form: str) -> float:
    """d > 0 at which the fitted gold gain returns to 0: BoN α/β, RL exp(α/β).

    β <= 0: the curve never turns down -> inf. BoN with α <= 0 < β: R < 0 for all d > 0 -> 0.0.
    """
    _check_form(form)
    if beta <= 0:
        return float("inf")
    if form == "bon":
        return max(alpha / beta, 0.0)
    return float(np.exp(alpha / beta))


def _xy(x, y, name: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"{name}: x and y must have the same length, got {x.size} and {y.size}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError(f"{name}: x and y must be finite")
    if np.any(x <= 0):
        raise ValueError(f"{name}: x must be > 0 (it is log-transformed)")
    return x, y


def fit_log_linear(x, y) -> tuple[float, float]:
    """(slope, intercept) of y ≈ slope · log(x) + intercept, natural log (Gao et al. 2022, Fig. 3).

    x: shape (K,), > 0 (e.g. RM parameter count); y: shape (K,) (e.g. fitted α or β). K >= 2 distinct x.
    """
    x, y = _xy(x, y, "fit_log_linear")
    if np.unique(x).size < 2:
        raise ValueError("fit_log_linear: need at least 2 distinct x")
    slope, intercept = np.polyfit(np.log(x), y, 1)
    return float(slope), float(intercept)


@dataclass(frozen=True)
class PowerLaw:
    """y = a · x^(−b) + c (c = 0 without a floor)."""

    a: float
    b: float
    c: float = 0.0

    def predict(self, x) -> np.ndarray:
        """y at x (> 0, any shape), same units as the fitted y."""
        return self.a * np.power(np.asarray(x, dtype=np.float64), -self.b) + self.c


def _power(x, a, b):
    return a * np.power(x, -b)


def _power_floor(x, a, b, c):
    return a * np.power(x, -b) + c


def fit_power_law(x, y, floor: bool = False) -> PowerLaw:
    """Fit y ≈ a · x^(−b) (+ c with floor=True) by nonlinear least squares (scipy curve_fit).

    x: shape (K,), > 0; y: shape (K,). Start values come from a straight line in log-log space
    (of y − c0 with floor, c0 just under min y), without which curve_fit often stalls when x spans
    decades. Needs K >= 2 (>= 3 with floor) and, without floor, y > 0.
    """
    x, y = _xy(x, y, "fit_power_law")
    k = 3 if floor else 2
    if np.unique(x).size < k:
        raise ValueError(f"fit_power_law: need at least {k} distinct x")
    if floor:
        spread = float(y.max() - y.min())
        if spread == 0:
            raise ValueError("fit_power_law: y is constant; a floor fit is not identifiable")
        c0 = float(y.min()) - 0.05 * spread
        neg_b, log_a = np.polyfit(np.log(x), np.log(y - c0), 1)
        p, _ = curve_fit(_power_floor, x, y, p0=[np.exp(log_a), -neg_b, c0], maxfev=20000)
        return PowerLaw(float(p[0]), float(p[1]), float(p[2]))
    if np.any(y <= 0):
        raise ValueError("fit_power_law: y must be > 0 without a floor (log-space start values)")
    neg_b, log_a = np.polyfit(np.log(x), np.log(y), 1)
    p, _ = curve_fit(_power, x, y, p0=[np.exp(log_a), -neg_b], maxfev=20000)
    return PowerLaw(float(p[0]), float(p[1]))


def _aicc(rss: float, k: int, n_params: int) -> float:
    """Small-sample Akaike criterion of a least-squares fit (Burnham & Anderson 2002, eq. 2.14)."""
    rss = max(rss, 1e-300)  # an exact fit would give -inf; this keeps the comparison defined
    return k * np.log(rss / k) + 2 * n_params + 2 * n_params * (n_params + 1) / (k - n_params - 1)


def fit_power_law_select(x, y) -> tuple[PowerLaw, bool]:
    """The power law y ≈ a · x^(−b), or with an irreducible floor + c where that fits better.

    "Better" is the lower AICc (the floor costs one parameter), so a floor is only taken when it
    earns it; AICc needs more points than parameters + 1, so a floor is only considered from 5
    distinct x on. Returns (fit, floor used). x, y: shape (K,), K >= 2 distinct x, y > 0.
    """
    x, y = _xy(x, y, "fit_power_law_select")
    plain = fit_power_law(x, y)
    if np.unique(x).size < 5:
        return plain, False
    try:
        floored = fit_power_law(x, y, floor=True)
    except (ValueError, RuntimeError):  # curve_fit did not converge, or y is constant
        return plain, False
    rss = [float(np.sum((y - f.predict(x)) ** 2)) for f in (plain, floored)]
    use_floor = _aicc(rss[1], len(x), 3) < _aicc(rss[0], len(x), 2)
    return (floored, True) if use_floor else (plain, False)


def bootstrap_ci(statistic: Callable[[np.ndarray], float], units, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic` over resampled units (Efron & Tibshirani 1993).

    units: shape (U, ...), one row per independent unit (prompt or seed); rows are resampled with
    replacement U at a time, n_boot times, and statistic(resampled (U, ...) array) -> float.
    Deterministic given `seed` (its own numpy Generator; the global RNG is untouched).
    Returns the (1 − level)/2 and (1 + level)/2 percentiles.
    """
    units = np.asarray(units)
    if units.ndim < 1 or units.shape[0] < 1:
        raise ValueError(f"bootstrap_ci: need units of shape (U>=1, ...), got {units.shape}")
    if not 0 < level < 1:
        raise ValueError(f"bootstrap_ci: level must be in (0, 1), got {level}")
    if int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"bootstrap_ci: n_boot must be a positive integer, got {n_boot}")
    rng = np.random.default_rng(seed)
    U = units.shape[0]
    stats = np.array([float(statistic(units[rng.integers(0, U, size=U)])) for _ in range(int(n_boot))])
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(stats, [tail, 1.0 - tail])
    return float(low), float(high)


def mean_interval(values, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the mean of independent replicates (one value per seed) and its Student-t
    interval, mean ± t_{(1+level)/2, n−1} · s/√n with s the sample SD (ddof = 1).

    values: shape (n,), NaN ignored. With one finite value the interval is undefined: (v, nan, nan);
    with none, all nan. The t interval, not a bootstrap, because seeds are few (2–5): a bootstrap
    over 3 values has only 10 distinct resamples and too narrow an interval.
    """
    from scipy import stats

    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(v.mean())
    if v.size == 1:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf((1.0 + level) / 2.0, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return mean, mean - half, mean + half
