"""End-to-end scans of the committed Fashion-MNIST sample models (sample_models/README.md).

To keep the suite fast on 2 CPU cores these scans use N = 4 clean images per class and a
smallest step delta = 1e-2 (ten times the default; the default schedule lengthens it up to
2e-2): about 20 s per model here. The default settings (N = 8, delta = 1e-3) are measured in
docs/benchmarks.md ("Sample models").
"""
import json

import pytest
from click.testing import CliRunner

from scanner.cli import main
from tests.schemas import validate_scan_report

FAST = ["--images-per-class", "4", "--delta", "0.01", "--quiet"]


def _scan(sample_models, name, tmp_path):
    report_path = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["scan", str(sample_models / name), "--data",
                                       str(sample_models / "clean_images"), *FAST, "--json", str(report_path)])
    return result, validate_scan_report(json.loads(report_path.read_text()))


@pytest.mark.slow
def test_backdoored_sample_model_is_detected_with_target_2_and_source_0(sample_models, tmp_path):
    result, report = _scan(sample_models, "fmnist_cnn_backdoored.onnx", tmp_path)
    assert result.exit_code == 1, result.output
    assert report["verdict"] == "backdoor" and report["target_class"] == 2
    assert report["p_value"] < 0.05
    assert 0 in report["source_classes"]
    assert report["parity"]["argmax_agreement"] == 1.0
    assert all(c["status"] == "converged" for c in report["classes"])


@pytest.mark.slow
def test_clean_sample_model_is_not_detected(sample_models, tmp_path):
    result, report = _scan(sample_models, "fmnist_cnn_clean.onnx", tmp_path)
    assert result.exit_code == 0, result.output
    assert report["verdict"] == "clean" and report["p_value"] >= 0.05
