"""lred: post-training detection of imperceptible backdoors in ONNX image classifiers.

Implements L-RED (Xiang, Miller & Kesidis, "L-RED: Efficient post-training detection of
imperceptible backdoor attacks without access to the training set").

    from scanner import scan, ScanConfig
    outcome = scan("model.onnx", "clean_images/", ScanConfig(images_per_class=8))
    outcome.report.verdict        # "backdoor" or "clean"
"""
__version__ = "0.1.0"

from .config import ScanConfig
from .errors import LredError
from .pipeline import ScanOutcome, scan
from .report import ScanReport

__all__ = ["scan", "ScanConfig", "ScanOutcome", "ScanReport", "LredError", "__version__"]
