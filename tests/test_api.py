"""The Python API: the names ``import scanner`` exposes, the README's example, and the allocator
setting the CLI applies, which ``scanner.scan`` applies too (once per process)."""
from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import scanner
from scanner import allocator
from scanner.cli import main

REPO = Path(__file__).resolve().parent.parent
README_MODEL, README_DATA = "sample_models/fmnist_cnn_backdoored.onnx", "sample_models/clean_images"
README_CONFIG = "scanner.ScanConfig(images_per_class=8)"


def readme_example() -> str:
    """The Python block of the README's "From Python" section."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## From Python"):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "no python block under 'From Python'"
    return match.group(1)


def run_example(code: str) -> str:
    """Run ``code`` as a fresh module; what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    return printed.getvalue()


def test_every_public_name_is_there_and_documented():
    expected = {"scan", "scan_many", "inspect_model", "ScanConfig", "ScanOutcome", "ScanReport", "FailedScan",
                "Inspection",
                "render_text", "render_json", "render_sarif", "render_inspection_text", "render_inspection_json",
                "render_error_json", "LredError", "__version__"}
    assert set(scanner.__all__) == expected
    for name in expected:
        assert getattr(scanner, name) is not None and name in dir(scanner)
    assert issubclass(scanner.LredError, Exception)
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        scanner.nonsense  # noqa: B018


def test_import_scanner_and_its_renderers_do_not_load_torch():
    code = ("import sys, scanner; scanner.render_sarif, scanner.render_text, scanner.FailedScan, scanner.LredError; "
            "print('torch' in sys.modules, 'onnxruntime' in sys.modules)")
    process = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert process.stdout.split() == ["False", "False"], process.stderr


def test_the_readme_example_runs(backdoored_case):
    """The README's example as written, on the synthetic planted backdoor at fast settings."""
    model, data = backdoored_case
    code = readme_example()
    for old in (README_MODEL, README_DATA, README_CONFIG):
        assert code.count(old) == 1, f"the README's example no longer says {old!r}"
    code = (code.replace(README_MODEL, str(model)).replace(README_DATA, str(data))
            .replace(README_CONFIG, "scanner.ScanConfig(images_per_class=4, delta=0.01)"))
    printed = run_example(code)
    assert printed.startswith("backdoor 2 (")
    assert '"ruleId": "LRED001"' in printed and '"level": "error"' in printed


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("LRED_SLOW"), reason="the README's scan at the paper's settings; LRED_SLOW=1")
def test_the_readme_example_prints_what_it_says_on_the_sample_model(sample_models, monkeypatch):
    monkeypatch.chdir(REPO)
    printed = run_example(readme_example())
    assert printed.startswith("backdoor 2 (0, 3)\n")


def test_inspect_model_is_the_inspect_command(clean_case):
    model, _ = clean_case
    inspection = scanner.inspect_model(str(model))
    assert inspection.ok and inspection.num_classes == 6
    assert scanner.render_inspection_text(inspection) == CliRunner().invoke(main, ["inspect", str(model)]).stdout


@pytest.fixture
def mallopt_calls(monkeypatch) -> list[int]:
    """Count the allocator settings made, in a process where none was made yet."""
    calls: list[int] = []
    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setattr(allocator, "_set_mallopt", lambda: calls.append(1) or True)
    return calls


def test_the_api_scan_sets_the_allocator_once(mallopt_calls, tmp_path):
    for _ in range(2):
        with pytest.raises(scanner.LredError):
            scanner.scan(tmp_path / "missing.onnx", tmp_path)
    assert mallopt_calls == [1]


def test_the_cli_still_sets_the_allocator(mallopt_calls, tmp_path):
    result = CliRunner().invoke(main, ["scan", str(tmp_path / "missing.onnx"), "--data", str(tmp_path)])
    assert result.exit_code == 2 and mallopt_calls == [1]


def test_without_glibc_mallopt_nothing_happens(monkeypatch):
    monkeypatch.setattr(allocator, "_applied", None)

    def no_libc(name):
        raise OSError("no C library")
    monkeypatch.setattr(allocator.ctypes, "CDLL", no_libc)
    assert allocator.reuse_freed_memory() is False
    assert allocator.reuse_freed_memory() is False


MALLINFO = """
import ctypes, sys
from scanner.allocator import reuse_freed_memory
fields = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in fields]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "set":
    assert reuse_freed_memory() and reuse_freed_memory()
block = bytearray(64 << 20)
print(libc.mallinfo2().hblkhd)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallinfo2")
def test_the_setting_serves_large_blocks_from_the_heap():
    mapped = {}
    for mode in ("default", "set"):
        process = subprocess.run([sys.executable, "-c", MALLINFO, mode], cwd=REPO, capture_output=True, text=True,
                                 timeout=120)
        if process.returncode != 0 and "mallinfo2" in process.stderr:
            pytest.skip("no mallinfo2 (glibc < 2.33 or another C library)")
        assert process.returncode == 0, process.stderr
        mapped[mode] = int(process.stdout)
    assert mapped["default"] >= 64 << 20                  # glibc maps a 64 MB block on its own
    assert mapped["set"] < 64 << 20                       # with the setting it comes from the heap
