"""Neural Cleanse (--method nc): its anomaly index, its decision rule, and a scan of a model whose
patch backdoor takes every other class (the case Neural Cleanse assumes)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from scanner import nc
from scanner.cli import main
from scanner.methods import METHODS
from tests import patch_synthetic
from tests.schemas import validate


def test_anomaly_index_is_the_distance_from_the_median_in_units_of_the_scaled_mad():
    norms = np.array([10.0, 11.0, 12.0, 13.0, 14.0, 2.0])
    median, mad = 11.5, 1.4826 * 1.5
    assert nc.anomaly_indices(norms) == pytest.approx(np.abs(norms - median) / mad)
    assert nc.flagged_classes(norms) == [5]


def test_a_large_norm_far_above_the_median_is_not_flagged():
    assert nc.flagged_classes(np.array([10.0, 11.0, 12.0, 13.0, 14.0, 40.0])) == []


def test_the_decision_is_the_anomaly_index_and_has_no_p_value():
    flagged = nc.anomaly_test(np.array([10.0, 11.0, 12.0, 13.0, 14.0, 2.0]), 0.05)
    assert flagged.detected and flagged.inferred_target == 5 and math.isnan(flagged.p_value)
    quiet = nc.anomaly_test(np.array([10.0, 11.0, 12.0, 13.0, 14.0, 9.0]), 0.05)
    assert not quiet.detected and quiet.inferred_target == 5


def test_nc_takes_every_other_class_with_fixed_uniform_weights():
    method = METHODS["nc"]
    jobs = method.jobs(4)
    assert [j.sources for j in jobs] == [(1, 2, 3), (0, 2, 3), (0, 1, 3), (0, 1, 2)]
    assert not any(j.adapt_weights for j in jobs) and method.engine == "patch"


@pytest.mark.slow
def test_nc_flags_the_target_of_a_patch_backdoor_on_every_class(tmp_path):
    model, data = patch_synthetic.write_patch_case(tmp_path, sources=None)
    result = CliRunner().invoke(main, ["scan", str(model), "--data", str(data), "-n", "4", "--method", "nc",
                                       "--quiet", "--json", str(tmp_path / "r.json")])
    report = validate("scan_report", json.loads((tmp_path / "r.json").read_text()))
    assert result.exit_code == 1, result.output
    assert report["method"] == "nc" and report["target_class"] == 2
    assert report["source_classes"] == [0, 1, 3, 4, 5]
    assert report["p_value"] is None and report["log10_p_value"] is None      # no p-value: the index decides
    (test,) = report["tests"]
    assert test["p_value"] is None and test["alpha"] is None and test["anomaly_index"] > 2
    masks = {c["target_class"]: c["mask_l1"] for c in report["classes"]}
    assert masks[2] < 0.5 * min(v for t, v in masks.items() if t != 2)
    assert "anomaly index" in result.output
