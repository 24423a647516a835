"""One fast real scan of the bundled backdoored sample model with --html, shared by the HTML tests
(tests/test_html_report.py, tests/test_html_browser.py); registered in tests/conftest.py."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from scanner.cli import main
from tests.conftest import FAST_OPTIONS, SAMPLES

FASHION_MNIST = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"]


@dataclass(frozen=True)
class HtmlScan:
    result: Result
    html_path: Path
    html: str
    report: dict


@pytest.fixture(scope="session")
def backdoored_html_scan(tmp_path_factory: pytest.TempPathFactory) -> HtmlScan:
    """``lred scan`` of sample_models/fmnist_cnn_backdoored.onnx at FAST_OPTIONS with --html, --json and
    the Fashion-MNIST class names (sample_models/README.md)."""
    if not (SAMPLES / "fmnist_cnn_backdoored.onnx").is_file():
        pytest.skip("sample models are not built (python sample_models/build_samples.py)")
    directory = tmp_path_factory.mktemp("html_scan")
    names = directory / "classes.txt"
    names.write_text("\n".join(FASHION_MNIST) + "\n", encoding="utf-8")
    html_path, json_path = directory / "report.html", directory / "report.json"
    model, data = (os.path.relpath(SAMPLES / name) for name in ("fmnist_cnn_backdoored.onnx", "clean_images"))
    result = CliRunner().invoke(main, ["scan", model, "--data", data, *FAST_OPTIONS, "--class-names", str(names),
                                       "--html", str(html_path), "--json", str(json_path)])
    assert html_path.is_file(), result.output
    return HtmlScan(result, html_path, html_path.read_text(encoding="utf-8"), json.loads(json_path.read_text()))
