"""lred: post-training detection of imperceptible backdoors in ONNX image classifiers.

Implements L-RED (Xiang, Miller & Kesidis, "L-RED: Efficient post-training detection of
imperceptible backdoor attacks without access to the training set").

    import scanner
    outcome = scanner.scan("model.onnx", "clean_images/", scanner.ScanConfig(images_per_class=8))
    outcome.report.verdict        # "backdoor" or "clean"
    scanner.render_sarif([outcome.report])   # or render_text, render_json

The first scan of a process sets glibc's allocator to keep freed memory for reuse, as the
``lred`` command does (``scanner/allocator.py``: faster scans; the process keeps its peak heap).
"""
__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

__all__ = ["scan", "scan_many", "inspect_model", "ScanConfig", "ScanOutcome", "ScanReport", "FailedScan", "Inspection",
           "render_text", "render_json", "render_sarif", "render_inspection_text", "render_inspection_json",
           "render_error_json", "LredError", "__version__"]

# The public names are imported on first use: `import scanner` (and so the `lred` command, which
# must answer a signal or a usage error at once) does not pay for torch and onnxruntime up front.
_LAZY = {"scan": "pipeline", "scan_many": "batch", "ScanOutcome": "pipeline", "inspect_model": "inspection",
         "ScanConfig": "config",
         "ScanReport": "report", "FailedScan": "report", "Inspection": "report", "LredError": "errors",
         "render_text": "reporters", "render_json": "reporters", "render_inspection_text": "reporters",
         "render_inspection_json": "reporters", "render_error_json": "reporters", "render_sarif": "sarif"}

if TYPE_CHECKING:
    from .batch import scan_many
    from .config import ScanConfig
    from .errors import LredError
    from .inspection import inspect_model
    from .pipeline import ScanOutcome, scan
    from .report import FailedScan, Inspection, ScanReport
    from .reporters import (
        render_error_json,
        render_inspection_json,
        render_inspection_text,
        render_json,
        render_text,
    )
    from .sarif import render_sarif


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
