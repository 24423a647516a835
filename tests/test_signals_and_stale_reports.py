"""The `lred` process ends every failed run the same way: exit 2, an error report, no traceback.

Run as real processes (``python -m scanner``, what the ``lred`` script runs), because signals,
the heavy imports and click's own usage errors happen outside what CliRunner can see.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests import synthetic
from tests.schemas import validate_scan_report

REPO = Path(__file__).resolve().parent.parent
STALE = {"schema_version": 3, "verdict": "clean", "target_class": None}


def start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "scanner", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stale_report(tmp_path: Path) -> Path:
    path = tmp_path / "report.json"
    path.write_text(json.dumps(STALE))
    return path


def assert_error_run(process: subprocess.Popen, report: Path, error_type: str) -> str:
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2, stderr
    assert "Traceback" not in stderr
    assert "this is not a clean verdict" in stderr
    written = validate_scan_report(json.loads(report.read_text()))
    assert written["verdict"] == "error" and written["error_type"] == error_type, written
    return stderr


def test_a_usage_error_replaces_an_old_report(tmp_path):
    model, data = synthetic.write_case(tmp_path)
    report = stale_report(tmp_path)
    process = start(["scan", str(model), "--data", str(data), "--json", str(report), "--alpha", "abc"])
    stderr = assert_error_run(process, report, "LredError")
    assert "--alpha" in stderr


def test_sigterm_during_the_scan_ends_in_an_error_report(tmp_path):
    model, data = synthetic.write_case(tmp_path)
    report = stale_report(tmp_path)
    process = start(["scan", str(model), "--data", str(data), "--json", str(report), "--max-iterations", "100000000",
                     "--delta", "1e-9", "--fixed-step"])
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:                        # wait for the estimation to start
        line = process.stderr.readline()
        if "[estimate]" in line or not line:
            break
    process.send_signal(signal.SIGTERM)
    assert_error_run(process, report, "InterruptedScanError")


def test_sigint_during_start_up_gives_no_traceback(tmp_path):
    model, data = synthetic.write_case(tmp_path)
    report = stale_report(tmp_path)
    process = start(["scan", str(model), "--data", str(data), "--json", str(report)])
    deadline = time.monotonic() + 60
    # the handlers are in place once the stale report is replaced by the "unfinished" one; the
    # heavy imports (click, torch, onnx) come after that, so the signal lands among them
    while time.monotonic() < deadline and json.loads(report.read_text() or "{}").get("verdict") != "error":
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    assert_error_run(process, report, "InterruptedScanError")


def test_an_unwritable_report_path_fails_before_the_scan(tmp_path):
    model, data = synthetic.write_case(tmp_path)
    started = time.monotonic()
    process = start(["scan", str(model), "--data", str(data), "--json", "/proc/lred-report.json"])
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2 and "Traceback" not in stderr
    assert "/proc/lred-report.json" in stderr or "lred-report.json" in stderr
    assert "[estimate]" not in stderr
    assert time.monotonic() - started < 60
