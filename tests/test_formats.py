"""What stdout carries (``--format``, ``--json -``), error reports on stdout, and the permissions
of report files (the umask's, not a temporary file's 0600)."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from scanner import files
from scanner.cli import main
from scanner.files import atomic_write, current_umask
from tests.schemas import validate, validate_scan_report

REPO = Path(__file__).resolve().parent.parent
FAST = ["--images-per-class", "4", "--delta", "0.01"]          # conftest's FAST_OPTIONS without --quiet


def _invoke(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def test_json_dash_puts_only_the_report_on_stdout_and_files_get_the_umask(clean_case, tmp_path, umask_027):
    model, data = clean_case
    patterns = tmp_path / "patterns"
    result = _invoke("scan", model, "--data", data, *FAST, "--json", "-", "--save-patterns", patterns)
    assert result.exit_code == 0, result.output
    report = validate_scan_report(json.loads(result.stdout))          # nothing but the JSON report
    assert report["verdict"] == "clean" and report["model"]["path"] == str(model)
    assert "lred [estimate]" in result.stderr and "no backdoor detected" not in result.stdout
    assert not Path("-").exists()
    saved = sorted(patterns.glob("pattern_class_*.npy"))
    assert len(saved) == 6 and {_mode(p) for p in saved} == {0o640}


def test_format_json_prints_the_report_also_written_to_the_file(backdoored_case, tmp_path, umask_027):
    model, data = backdoored_case
    path = tmp_path / "report.json"
    result = _invoke("scan", model, "--data", data, *FAST, "--quiet", "--format", "json", "--json", path)
    assert result.exit_code == 1, result.output
    assert result.stdout == path.read_text() and result.stderr == ""
    assert validate_scan_report(json.loads(result.stdout))["target_class"] == 2
    assert _mode(path) == 0o640


@pytest.mark.parametrize("options", [["--json", "-"], ["--format", "json"], ["--json", "-", "--format", "json"]])
def test_a_failed_scan_prints_the_error_report_on_stdout(tmp_path, options):
    result = _invoke("scan", tmp_path / "missing.onnx", "--data", tmp_path, *options)
    assert result.exit_code == 2
    error = validate_scan_report(json.loads(result.stdout))
    assert error["verdict"] == "error" and error["error_type"] == "ModelError" and error["exit_code"] == 2
    assert "model file not found" in error["error"] and "lred: error: model file not found" in result.stderr
    assert not Path("-").exists()


def test_a_failed_scan_with_text_output_prints_nothing_on_stdout(tmp_path):
    result = _invoke("scan", tmp_path / "missing.onnx", "--data", tmp_path, "--json", tmp_path / "r.json")
    assert result.exit_code == 2 and result.stdout == ""
    assert validate_scan_report(json.loads((tmp_path / "r.json").read_text()))["verdict"] == "error"


@pytest.mark.parametrize("options", [["--json", "-", "--format", "sarif"], ["--json", "-", "--sarif", "-"],
                                     ["--sarif", "-", "--format", "text"]])
def test_two_formats_cannot_share_stdout(backdoored_case, options):
    model, data = backdoored_case
    result = _invoke("scan", model, "--data", data, *options)
    assert result.exit_code == 2 and "stdout carries one report" in result.stderr


def test_a_usage_error_prints_the_error_report_on_stdout_when_json_is_asked(backdoored_case):
    model, data = backdoored_case
    process = subprocess.run([sys.executable, "-m", "scanner", "scan", str(model), "--data", str(data),
                              "--format=json", "--alpha", "abc"], cwd=REPO, capture_output=True, text=True,
                             timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert process.returncode == 2 and "Traceback" not in process.stderr
    error = validate_scan_report(json.loads(process.stdout))
    assert error["verdict"] == "error" and "--alpha" in error["error"]


def test_inspect_prints_json_with_format_json_or_json_dash(backdoored_case, tmp_path):
    model, _ = backdoored_case
    path = tmp_path / "inspection.json"
    result = _invoke("inspect", model, "--format", "json", "--json", path)
    assert result.exit_code == 0, result.output
    inspection = validate("inspect_report", json.loads(result.stdout))
    assert inspection["ok"] is True and result.stdout == path.read_text()
    dash = _invoke("inspect", model, "--json", "-")
    assert dash.exit_code == 0 and validate("inspect_report", json.loads(dash.stdout))["sha256"] == inspection["sha256"]
    text = _invoke("inspect", model)
    assert "converts faithfully" in text.stdout and not text.stdout.startswith("{")


def test_inspect_prints_the_error_report_on_stdout(tmp_path):
    result = _invoke("inspect", tmp_path / "missing.onnx", "--format", "json")
    assert result.exit_code == 2
    assert validate("error_report", json.loads(result.stdout))["error_type"] == "ModelError"
    assert _invoke("inspect", tmp_path / "m.onnx", "--format", "sarif").exit_code == 2   # not an inspect format


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_write_gives_the_umask_permissions(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        atomic_write(tmp_path / "new" / "report.json", b"{}")
        assert current_umask() == mask                          # read without changing it
    finally:
        os.umask(old)
    assert _mode(tmp_path / "new" / "report.json") == mode
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["report.json"]   # no temporary file left


def test_atomic_write_replaces_a_private_file_with_the_umask_permissions(tmp_path, umask_027):
    path = tmp_path / "report.json"
    path.write_text("old")
    path.chmod(0o600)
    atomic_write(path, b"new")
    assert path.read_bytes() == b"new" and _mode(path) == 0o640


def test_the_umask_is_read_by_setting_it_where_proc_is_missing(monkeypatch, umask_027):
    def no_proc(*args, **kwargs):
        raise FileNotFoundError("/proc/self/status")
    monkeypatch.setattr(files, "open", no_proc, raising=False)
    assert current_umask() == 0o027
    assert os.umask(0o027) == 0o027                             # and left as it was

