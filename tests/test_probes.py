"""Probe inputs off the 8-bit grid and the score comparison used at them (scanner/probes.py)."""
from __future__ import annotations

import numpy as np

from scanner.probes import decided, disagreement, probe_pixels


def test_probes_are_off_grid_in_range_and_reproducible():
    clean = np.round(np.random.default_rng(1).uniform(0, 1, (5, 1, 8, 8)) * 255) / 255
    probes = probe_pixels(clean, count=10, seed=3)
    assert probes.shape == (10, 1, 8, 8) and probes.dtype == np.float32
    assert probes.min() >= 0.0 and probes.max() <= 1.0
    off_grid = np.abs(probes * 255 - np.round(probes * 255)) > 1e-3
    assert off_grid.mean() > 0.9
    np.testing.assert_array_equal(probes, probe_pixels(clean, count=10, seed=3))


def test_scores_beyond_tolerance_are_a_disagreement():
    reference = np.array([[0.0, 5.0, 1.0], [3.0, 0.0, 0.0]])
    assert disagreement(reference + 1e-5, reference, 1e-4) is None
    moved = reference.copy()
    moved[1, 2] += 0.01
    assert "max |difference| 0.01" in disagreement(moved, reference, 1e-4)


def test_another_class_counts_only_where_the_reference_has_a_clear_top_class():
    reference = np.array([[1.0, 1.0 + 1e-6, 0.0], [0.0, 4.0, 1.0]])
    tied = reference.copy()
    tied[0] = [1.0 + 1e-6, 1.0, 0.0]                   # a near tie flips by rounding: allowed
    assert decided(reference, 1e-4).tolist() == [False, True]
    assert disagreement(tied, reference, 1e-4) is None
    assert "non-finite" in disagreement(np.full_like(reference, np.nan), reference, 1e-4)
