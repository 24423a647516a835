"""lred: post-training detection of imperceptible backdoors in ONNX image classifiers.

Implements L-RED (Xiang, Miller & Kesidis, "L-RED: Efficient post-training detection of
imperceptible backdoor attacks without access to the training set").

    from scanner import scan, ScanConfig
    outcome = scan("model.onnx", "clean_images/", ScanConfig(images_per_class=8))
    outcome.report.verdict        # "backdoor" or "clean"
"""
__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

__all__ = ["scan", "scan_many", "ScanConfig", "ScanOutcome", "ScanReport", "LredError", "__version__"]

# The public names are imported on first use: `import scanner` (and so the `lred` command, which
# must answer a signal or a usage error at once) does not pay for torch and onnxruntime up front.
_LAZY = {"scan": "pipeline", "scan_many": "batch", "ScanOutcome": "pipeline", "ScanConfig": "config",
         "ScanReport": "report", "LredError": "errors"}

if TYPE_CHECKING:
    from .batch import scan_many
    from .config import ScanConfig
    from .errors import LredError
    from .pipeline import ScanOutcome, scan
    from .report import ScanReport


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
