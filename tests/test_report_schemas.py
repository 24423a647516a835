"""Every JSON report validates against the JSON Schema the package ships (scanner/schemas/), a
report with a missing, renamed or mistyped field does not, and the scan report's audit trail."""
from __future__ import annotations

import copy
import hashlib
import json
import re
import socket
import subprocess
import sys

import jsonschema
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from scanner import audit
from scanner.cli import main
from scanner.data import folder_sha256, load_clean_images
from scanner.reporters import INSPECT_SCHEMA_VERSION, JSON_SCHEMA_VERSION, SCHEMAS, schema
from tests import synthetic
from tests.conftest import FAST_OPTIONS
from tests.schemas import validate, validate_scan_report


def _run(*args: object) -> tuple[int, dict]:
    """Run ``lred ARGS`` in-process (CliRunner); the exit status and the report at the last argument."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, json.loads(open(str(args[-1])).read())


def _sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.mark.parametrize("name", SCHEMAS)
def test_the_shipped_schemas_are_valid_draft_2020_12(name):
    document = schema(name)
    jsonschema.Draft202012Validator.check_schema(document)
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_an_unknown_schema_name_is_refused():
    with pytest.raises(ValueError, match="no schema"):
        schema("nonsense")


def test_backdoored_scan_report_validates_with_its_audit_trail(backdoored_case, tmp_path):
    model, data = backdoored_case
    code, report = _run("scan", model, "--data", data, *FAST_OPTIONS, "--json", tmp_path / "r.json")
    assert code == 1 and report["verdict"] == "backdoor"
    validate("scan_report", report)
    assert report["schema_version"] == JSON_SCHEMA_VERSION == 5
    trail = report["audit"]
    assert trail["started_at"] <= trail["finished_at"]
    assert trail["data_sha256"] == _sha256(data) and trail["data_files"] == []   # .npz: the file's sha256
    assert trail["gpu"] is None and trail["gpu_driver"] is None                   # the CPU ran it
    assert trail["python"] == sys.version.split()[0]
    host = socket.gethostname()
    assert not host or host not in json.dumps(trail)


def test_clean_scan_of_a_folder_reports_each_file_sha256(clean_case, tmp_path):
    model, _ = clean_case
    x, y = synthetic.clean_images(6, 4)
    folder = tmp_path / "clean"
    for i, (image, label) in enumerate(zip(x, y)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[..., 0] if image.ndim == 3 else image).save(folder / str(label) / f"{i:02d}.png")
    code, report = _run("scan", model, "--data", folder, *FAST_OPTIONS, "--json", tmp_path / "r.json")
    assert code == 0 and report["verdict"] == "clean"
    validate("scan_report", report)
    files = report["audit"]["data_files"]
    assert [name for name, _ in files] == sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
    assert all(digest == _sha256(folder / name) for name, digest in files)
    expected = hashlib.sha256("".join(f"{d}  {n}\n" for n, d in files).encode()).hexdigest()
    assert report["audit"]["data_sha256"] == expected == folder_sha256([tuple(f) for f in files])
    (folder / files[0][0]).write_bytes((folder / files[1][0]).read_bytes())   # one file changed: a new hash
    assert load_clean_images(folder).sha256 != expected


def test_pred_scan_report_validates(backdoored_case, tmp_path):
    model, data = backdoored_case
    code, report = _run("scan", model, "--data", data, *FAST_OPTIONS, "--method", "pred", "--json", tmp_path / "r.json")
    assert code in (0, 1) and report["method"] == "pred" and len(report["pairs"]) == 6 * 5
    validate_scan_report(report)


def test_inspect_report_validates(backdoored_case, tmp_path):
    model, data = backdoored_case
    code, report = _run("inspect", model, "--data", data, "--json", tmp_path / "i.json")
    assert code == 0 and report["ok"] is True
    assert report["schema_version"] == INSPECT_SCHEMA_VERSION
    validate("inspect_report", report)


def test_error_report_of_a_missing_file_validates(tmp_path):
    x, y = synthetic.clean_images(6, 4)
    np.savez(tmp_path / "c.npz", x=x, y=y)
    code, report = _run("scan", tmp_path / "absent.onnx", "--data", tmp_path / "c.npz", "--json", tmp_path / "r.json")
    assert code == 2 and report["verdict"] == "error"
    validate("error_report", report)
    with pytest.raises(jsonschema.ValidationError):
        validate("scan_report", report)


def test_error_report_of_a_usage_error_validates(backdoored_case, tmp_path):
    model, data = backdoored_case
    path = tmp_path / "r.json"
    run = subprocess.run([sys.executable, "-m", "scanner", "scan", str(model), "--data", str(data),
                          "--alpha", "abc", "--json", str(path)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    report = validate_scan_report(json.loads(path.read_text()))
    assert report["verdict"] == "error" and "usage error" in report["error"]


@pytest.fixture(scope="module")
def scan_report(tmp_path_factory) -> dict:
    directory = tmp_path_factory.mktemp("scan")
    model, data = synthetic.write_case(directory, backdoor_target=2)
    return _run("scan", model, "--data", data, *FAST_OPTIONS, "--json", directory / "r.json")[1]


@pytest.mark.parametrize("breakage", [
    lambda r: r.pop("verdict"),
    lambda r: r.pop("audit"),
    lambda r: r["audit"].pop("data_sha256"),
    lambda r: r["classes"][0].pop("status"),
    lambda r: r["model"].__setitem__("sha_256", r["model"].pop("sha256")),     # renamed
    lambda r: r.__setitem__("verdict", "maybe"),
    lambda r: r.__setitem__("method", "nc"),
    lambda r: r["classes"][1].__setitem__("status", "done"),
    lambda r: r.__setitem__("schema_version", 3),
    lambda r: r.__setitem__("extra_field", 1),
    lambda r: r["audit"].__setitem__("started_at", "2026-12-01 04:00:00"),     # not UTC ISO 8601 with Z
    lambda r: r["parity"].__setitem__("images", "24"),
], ids=["no-verdict", "no-audit", "no-data-sha256", "no-status", "renamed-sha256", "verdict-enum",
        "method-enum", "status-enum", "old-version", "unknown-field", "local-time", "string-count"])
def test_a_broken_scan_report_fails_validation(scan_report, breakage):
    validate("scan_report", scan_report)
    broken = copy.deepcopy(scan_report)
    breakage(broken)
    with pytest.raises(jsonschema.ValidationError):
        validate("scan_report", broken)


def test_a_broken_inspect_or_error_report_fails_validation():
    error = {"schema_version": JSON_SCHEMA_VERSION, "verdict": "error", "error": "x", "error_type": "DataError",
             "exit_code": 2}
    validate("error_report", error)
    for field in error:
        with pytest.raises(jsonschema.ValidationError):
            validate("error_report", {k: v for k, v in error.items() if k != field})


def test_utc_now_and_cpu_model():
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", audit.utc_now())
    cpu = audit.cpu_model()
    assert cpu and "\n" not in cpu


def test_an_inspection_that_does_not_convert_validates():
    from scanner.report import Inspection
    from scanner.reporters import render_inspection_json
    refused = Inspection(path="m.onnx", sha256="0" * 64, producer="p", ir_version=8, opsets={"ai.onnx": 13},
                         input_name="x", input_shape=(None, 3, 32, 32), input_dtype="float32",
                         outputs=(("y", (None, 10), "FLOAT"),), score_output="y", num_classes=None, layout=None,
                         op_histogram=(("Conv", 2),), converts=False, conversion_passes=(),
                         problem="operator Foo has no converter", parity_inputs="random", max_abs_difference=None,
                         tolerance=None, argmax_agreement=None, input_gradient_ok=None)
    report = validate("inspect_report", json.loads(render_inspection_json(refused)))
    assert report["ok"] is False


def test_the_audit_trail_names_the_gpu_and_cuda_when_the_scan_ran_on_cuda(monkeypatch):
    import torch

    from scanner.data import CleanImages
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA Test GPU")
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    clean = CleanImages(np.zeros((1, 2, 2, 1), np.uint8), np.zeros(1, np.int64), ("x[0]",), "c.npz", "a" * 64)
    trail = audit.audit_trail(audit.utc_now(), torch.device("cuda", 0), clean)
    assert (trail.gpu, trail.gpu_driver) == ("NVIDIA Test GPU", "CUDA 12.8")
    assert trail.started_at <= trail.finished_at and trail.data_sha256 == "a" * 64
    on_cpu = audit.audit_trail(None, torch.device("cpu"), clean)
    assert on_cpu.gpu is None and on_cpu.started_at == on_cpu.finished_at
