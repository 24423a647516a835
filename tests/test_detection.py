"""The order-statistic test of Sec. 3.2 and source-class inference."""
import math

import numpy as np
import pytest
from scipy import special, stats

from scanner.detection import (
    detect,
    gamma_log_survival,
    infer_source_classes,
    order_statistic_log_p_value,
)
from scanner.errors import LredError


def test_p_value_matches_direct_scipy_computation():
    norms = np.array([1.3, 0.9, 0.26, 1.15, 1.08, 1.77, 1.2, 0.95, 1.4, 1.1])
    result = detect(norms, alpha=0.05)
    r = 1.0 / norms
    null = np.delete(r, 2)
    shape, loc, scale = stats.gamma.fit(null, floc=0.0)
    expected = 1.0 - stats.gamma.cdf(r[2], shape, loc=0.0, scale=scale) ** 10
    assert result.inferred_target == 2
    assert result.p_value == pytest.approx(expected, rel=1e-6)
    assert result.detected == (expected < 0.05)


def test_clean_looking_norms_are_not_detected():
    norms = np.array([1.3, 0.9, 1.0, 1.15, 1.08, 1.27, 1.2, 0.95, 1.4, 1.1])
    result = detect(norms, alpha=0.05)
    assert not result.detected
    assert 0.05 < result.p_value <= 1.0


def test_extreme_outlier_gives_finite_log_p_where_float64_underflows():
    norms = np.array([1.0, 1.1, 0.9, 1.05, 0.95, 1.02, 0.98, 1.01, 0.99, 1e-4])
    result = detect(norms, alpha=0.05)
    direct = 1.0 - stats.gamma.cdf(1e4, result.gamma_shape, scale=result.gamma_scale) ** 10
    assert direct == 0.0                       # the paper's "u.f."
    assert math.isfinite(result.log10_p_value) and result.log10_p_value < -300
    assert result.detected and result.inferred_target == 9


def test_asymptotic_tail_agrees_with_scipy_where_scipy_is_finite():
    shape, scale = 3.7, 0.2
    for x in (40.0, 80.0, 120.0):
        z = x / scale
        series = sum(np.prod([shape - j for j in range(1, k + 1)]) / z ** k for k in range(6))
        asymptotic = (shape - 1) * math.log(z) - z - special.gammaln(shape) + math.log(series)
        assert asymptotic == pytest.approx(stats.gamma.logsf(x, shape, scale=scale), rel=1e-6)
    assert math.isfinite(gamma_log_survival(1e4, shape, scale))


def test_log_p_value_is_exact_in_the_moderate_range():
    shape, scale, r = 4.0, 0.25, 2.5
    expected = math.log(1 - stats.gamma.cdf(r, shape, scale=scale) ** 10)
    assert order_statistic_log_p_value(r, shape, scale, 10) == pytest.approx(expected, rel=1e-9)


def test_invalid_norms_are_refused():
    with pytest.raises(LredError):
        detect(np.array([1.0, 0.0, 2.0]), alpha=0.05)
    with pytest.raises(LredError):
        detect(np.array([1.0, 1.0, 1.0, 1.0]), alpha=0.05)


def test_sources_are_the_fewest_classes_holding_pi_of_the_weight():
    assert infer_source_classes(np.array([0.97, 0.0, 0.01, 0.01, 0.01]), 0.9) == [0]
    assert infer_source_classes(np.array([0.0, 0.3, 0.31, 0.32, 0.07]), 0.9) == [1, 2, 3]
    assert infer_source_classes(np.array([0.25, 0.25, 0.0, 0.25, 0.25]), 0.9) == [0, 1, 3, 4]
