"""Committed models from other exporters (tests/fixtures/exported/, built by
tools/make_exported_models.py): they convert, match onnxruntime, and their backdoor is found."""
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from scanner.cli import main
from tests.schemas import validate_scan_report

FIXTURES = Path(__file__).parent / "fixtures" / "exported"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
CLEAN = FIXTURES / "fmnist_clean_10_per_class.npz"


@pytest.mark.parametrize("entry", MANIFEST["models"], ids=lambda e: e["file"])
def test_exported_model_is_inspected_as_scannable(entry):
    result = CliRunner().invoke(main, ["inspect", str(FIXTURES / entry["file"]), "--data", str(CLEAN)])
    assert result.exit_code == 0, result.output
    assert "ready to scan" in result.output


@pytest.mark.slow
@pytest.mark.parametrize("entry", [m for m in MANIFEST["models"] if "attack" in m], ids=lambda e: e["file"])
def test_exported_backdoored_model_is_detected_with_its_target(entry, tmp_path):
    report_path = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["scan", str(FIXTURES / entry["file"]), "--data", str(CLEAN), "-q",
                                       "--images-per-class", "4", "--delta", "0.01", "--json", str(report_path)])
    report = validate_scan_report(json.loads(report_path.read_text()))
    assert result.exit_code == 1, result.output
    assert report["target_class"] == entry["attack"]["target_class"]
    assert set(entry["attack"]["source_classes"]) <= set(report["source_classes"])
