"""Step 7: the anomaly detection test of Sec. 3.2.

r_t = 1 / ||v_t||_2 for each putative target class t. A Gamma null G is fitted to every r_t
except r_max = max_t r_t, and the order-statistic p-value is pv = 1 - G(r_max)^K.
An attack is detected when pv < alpha (the paper's phi); the inferred target is argmax_t r_t.

Fitting: maximum likelihood with the location fixed at 0 (the fit of scipy's ``gamma.fit(..., floc=0)``,
solved by ``gamma_mle`` below).
The statistics are positive by construction, so the support (0, inf) is the natural null; with
only K - 1 values (9 for ten classes) a free location makes the three-parameter likelihood
unbounded as loc approaches min r, which yields erratic p-values.

pv is computed in log space: 1 - G^K = -expm1(K log1p(-S)) with S = 1 - G the survival function,
and log pv = log K + log S when S itself underflows (then pv = K S to double precision), using the
asymptotic series of the upper incomplete gamma function when scipy's log S underflows to -inf.
So ``log10_p_value`` is always finite, where the paper prints "u.f." (Table 4).

Calibration: that p-value takes the Gamma fitted to K - 1 statistics for the true null, and the
fit leaves r_max out; with K = 10 and the statistics really i.i.d. Gamma, pv < 0.05 happens in
about a quarter of draws, not in 5% (docs/method.md "Calibrated p-value"). The verdict therefore uses,
by default, the probability of a p-value at least as small under that null, estimated from
CALIBRATION_DRAWS draws of K statistics at the fitted shape (the statistic does not depend on
the scale). It is monotone in the paper's p-value, so it never changes the inferred target, only
where the threshold alpha falls. ``basis="paper"`` decides on the paper's p-value as written.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

from .config import P_VALUE_BASES
from .errors import LredError


@dataclass(frozen=True)
class DetectionResult:
    """Outcome of the order-statistic test over the K statistics r_t."""

    statistics: tuple[float, ...]
    inferred_target: int
    gamma_shape: float
    gamma_scale: float
    paper_log_p_value: float      # natural log of 1 - G(r_max)^K, Sec. 3.2
    calibrated_log_p_value: float  # natural log of its Monte Carlo calibration (below)
    alpha: float
    basis: str = "calibrated"      # which of the two the verdict uses: calibrated | paper

    def log_p_value_of(self, basis: str) -> float:
        """Natural log of the ``basis`` p-value (calibrated | paper)."""
        return self.calibrated_log_p_value if basis == "calibrated" else self.paper_log_p_value

    @property
    def log_p_value(self) -> float:
        """The p-value the verdict uses (natural log)."""
        return self.log_p_value_of(self.basis)

    @property
    def p_value(self) -> float:
        return math.exp(self.log_p_value)

    @property
    def log10_p_value(self) -> float:
        return self.log_p_value / math.log(10.0)

    def detected_by(self, basis: str) -> bool:
        """Whether the ``basis`` p-value (calibrated | paper) falls below alpha."""
        return self.log_p_value_of(basis) < math.log(self.alpha)

    @property
    def detected(self) -> bool:
        return self.detected_by(self.basis)


def gamma_log_survival(x: float, shape: float, scale: float) -> float:
    """log(1 - G(x)) for a Gamma(shape, scale) with location 0, finite far into the tail."""
    with np.errstate(divide="ignore"):   # what scipy's gamma.logsf computes, without importing scipy.stats
        value = float(np.log(special.gammaincc(shape, x / scale)))
    if value > -np.inf:
        return value
    z = x / scale
    # Gamma(a, z) ~ z^(a-1) e^-z sum_k (a-1)(a-2)...(a-k) / z^k   (z >> a)
    series, term = 1.0, 1.0
    for k in range(1, 30):
        next_term = term * (shape - k) / z
        if abs(next_term) >= abs(term):
            break
        term = next_term
        series += term
    return (shape - 1.0) * math.log(z) - z - special.gammaln(shape) + math.log(series)


def order_statistic_log_p_value(r_max: float, shape: float, scale: float, num_classes: int) -> float:
    """log(1 - G(r_max)^K) without underflow."""
    log_sf = gamma_log_survival(r_max, shape, scale)
    if log_sf > -700.0:
        sf = math.exp(log_sf)
        if sf >= 1.0:
            return 0.0
        p = -math.expm1(num_classes * math.log1p(-sf))
        if p > 0.0:
            return math.log(p)
    return math.log(num_classes) + log_sf


def fit_null(statistics: np.ndarray) -> tuple[float, float]:
    """Gamma (shape, scale) fitted by maximum likelihood, location fixed at 0."""
    if statistics.size < 2:
        raise LredError(f"the null needs at least two statistics, got {statistics.size}; "
                        "the model must have at least three classes")
    if np.ptp(statistics) <= 1e-12 * float(np.max(statistics)):
        raise LredError("every putative target class gave the same pattern norm; "
                        "the Gamma null cannot be fitted (is the model constant?)")
    shapes, scales = gamma_mle(np.asarray(statistics, dtype=np.float64)[None, :])
    shape, scale = float(shapes[0]), float(scales[0])
    if not (np.isfinite(shape) and np.isfinite(scale) and shape > 0 and scale > 0):
        raise LredError(f"the Gamma null fit failed (shape {shape}, scale {scale})")
    return shape, scale


CALIBRATION_DRAWS = 20000   # null draws: resolution 1/20001 of the calibrated p-value
CALIBRATION_SEED = 20210    # fixed, so the same norms always give the same calibrated p-value


def gamma_mle(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gamma (shape, scale) fits, location 0, of each row of ``samples`` at once.

    The maximum-likelihood shape a solves log a - digamma(a) = log(mean x) - mean(log x)
    (the equation scipy's ``gamma.fit(..., floc=0)`` solves); Newton's method from the usual
    closed-form start converges in a few steps.
    """
    mean = samples.mean(axis=1)
    gap = np.maximum(np.log(mean) - np.log(samples).mean(axis=1), 1e-12)
    shape = (3.0 - gap + np.sqrt((gap - 3.0) ** 2 + 24.0 * gap)) / (12.0 * gap)
    for _ in range(50):
        step = (np.log(shape) - special.digamma(shape) - gap) / (1.0 / shape - special.polygamma(1, shape))
        shape = np.maximum(shape - step, shape / 10.0)
        if np.all(np.abs(step) <= 1e-10 * shape):
            break
    return shape, mean / shape


def null_log_p_values(shape: float, num_classes: int, draws: int = CALIBRATION_DRAWS,
                      seed: int = CALIBRATION_SEED) -> np.ndarray:
    """The paper's log p-value on ``draws`` sets of K statistics drawn i.i.d. from a Gamma null.

    The statistic is scale-free (scaling every r_t scales the fitted null alike), so drawing at
    scale 1 with the fitted shape gives its null distribution.
    """
    rng = np.random.default_rng(seed)
    r = rng.gamma(shape, 1.0, size=(draws, num_classes))
    r.sort(axis=1)
    r_max, rest = r[:, -1], r[:, :-1]
    fitted_shape, fitted_scale = gamma_mle(rest)
    with np.errstate(divide="ignore", invalid="ignore"):
        survival = special.gammaincc(fitted_shape, r_max / fitted_scale)
        log_p = np.log(-np.expm1(num_classes * np.log1p(-survival)))
    return np.where(np.isfinite(log_p), log_p, -np.inf)


def calibrate_log_p_value(log_p_value: float, shape: float, num_classes: int) -> float:
    """log P(paper's p-value <= observed) when the K statistics really are i.i.d. Gamma.

    The order-statistic p-value of Sec. 3.2 treats the Gamma fitted to K - 1 statistics as the
    true null and leaves the largest one out of the fit; with K = 10 its nominal level 0.05
    rejects about a quarter of null draws (docs/method.md "Calibrated p-value"). This Monte Carlo
    p-value, (1 + #{draws at or below}) / (draws + 1), holds its level under that null.
    """
    null = null_log_p_values(shape, num_classes)
    at_or_below = int(np.count_nonzero(null <= log_p_value))
    return math.log((1 + at_or_below) / (null.size + 1))


def detect(pattern_norms: np.ndarray, alpha: float, basis: str = "calibrated") -> DetectionResult:
    """The test of Sec. 3.2 on the K estimated pattern norms ||v_t||_2.

    Both p-values are computed; ``basis`` says which one decides (P_VALUE_BASES).
    """
    if basis not in P_VALUE_BASES:
        raise LredError(f"unknown p-value basis {basis!r}; choose one of {', '.join(P_VALUE_BASES)}")
    norms = np.asarray(pattern_norms, dtype=np.float64)
    if norms.ndim != 1 or not np.all(np.isfinite(norms)) or np.any(norms <= 0):
        raise LredError("pattern norms must be positive and finite for the detection test")
    statistics = 1.0 / norms
    target = int(np.argmax(statistics))
    null = np.delete(statistics, target)
    shape, scale = fit_null(null)
    log_p = order_statistic_log_p_value(float(statistics[target]), shape, scale, norms.size)
    calibrated = calibrate_log_p_value(log_p, shape, norms.size)
    return DetectionResult(tuple(float(s) for s in statistics), target, shape, scale, log_p, calibrated,
                           alpha, basis)


def infer_source_classes(source_weights: np.ndarray, pi: float) -> list[int]:
    """Source classes of a detected attack: the fewest classes holding at least pi of the weight.

    At the stop of Algorithm 1, Q_t = sum_s w_s q_st >= pi; classes are taken in decreasing
    w_s until their weights sum to pi, so a single dominant source is reported alone and an
    attack on every class reports nearly all of them (Sec. 3.1, App. A.5).
    """
    weights = np.asarray(source_weights, dtype=np.float64)
    order = np.argsort(-weights, kind="stable")
    chosen, total = [], 0.0
    for c in order:
        if weights[c] <= 0.0:
            break
        chosen.append(int(c))
        total += float(weights[c])
        if total >= pi - 1e-12:
            break
    return sorted(chosen)
