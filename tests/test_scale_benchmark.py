"""benchmarks/scale.py on its smallest cell: the sample CNN, 28x28 gray, K = 10."""
from __future__ import annotations

import math
from types import ModuleType

import pytest
import torch

from tests.benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def scale() -> ModuleType:
    return load_benchmark("scale", "scale_benchmark")


def test_passes_per_iteration_are_k_times_k_minus_one_times_n(scale: ModuleType) -> None:
    cell = scale.Cell("cnn", "28g", 43)
    assert cell.passes(1) == 43 * 42
    assert cell.passes(8) == 43 * 42 * 8


def test_projection_is_iterations_times_passes_times_raw_pass_plus_overhead(scale: ModuleType) -> None:
    cell = scale.Cell("cnn", "28g", 10, raw_per_image=0.002, engine_iteration=0.05, engine_rows=8)
    overhead = 0.05 - 8 * 0.002
    assert cell.projected_seconds(1) == pytest.approx(scale.ITERATIONS * (90 * 0.002 + overhead))


def test_smallest_cell_is_measured_and_tabled(scale: ModuleType) -> None:
    torch.manual_seed(0)
    cell = scale.measure_cell("cnn", "28g", 10, torch.device("cpu"), batch=4, repeats=1,
                              engine_iterations=1, budget_seconds=None)
    assert cell.status == "measured"
    assert cell.engine_rows == 4
    assert cell.raw_per_image > 0 and cell.engine_iteration > 0 and cell.peak_rss_mib > 0
    rows = scale.table([cell, scale.Cell("resnet50", "224", 1000, status="skipped (budget)")], cuda=False)
    lines = rows.splitlines()
    assert len(lines) == 4
    assert lines[2].startswith("| cnn | 28g | 10 | ") and "| 90 | 720 |" in lines[2]
    assert "skipped (budget)" in lines[3] and "999,000" in lines[3]
    assert math.isfinite(cell.projected_seconds(8))


def test_a_cell_over_budget_is_skipped(scale: ModuleType) -> None:
    cell = scale.measure_cell("cnn", "28g", 10, torch.device("cpu"), batch=4, repeats=1,
                              engine_iterations=1, budget_seconds=0.0)
    assert cell.status == "skipped (budget)"
