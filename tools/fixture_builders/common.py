"""Shared by the fixture builders: backdoor attacks, onnxruntime measurements, manifest entries.

Reading Fashion-MNIST, adding patterns, poisoning and running onnxruntime come from ``tools.fmnist``
(shared with the sample models and the benchmark zoo).

Every builder runs in an environment that has its own framework (they do not install side by side:
TensorFlow, JAX and scikit-learn pin different protobuf/onnxruntime versions); what they share is
only numpy, onnx and onnxruntime.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from .. import fmnist

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "exported"
DATA_DIR = fmnist.DATA_DIR
CLEAN_SET = "fmnist_clean_10_per_class.npz"
# images of the clean set whose onnxruntime scores the manifest records (one per class)
REFERENCE_INDICES = tuple(range(0, 100, 10))


def fashion_mnist(data_dir: Path = DATA_DIR) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test), images uint8 (N, 28, 28)."""
    return fmnist.load(data_dir)


@dataclass(frozen=True)
class Attack:
    """An additive backdoor pattern (uint8 arithmetic, clipped to 0..255) and its source/target classes."""

    kind: str            # "square" (every pixel +amplitude) or "chessboard" (alternate pixels)
    rows: tuple[int, int]
    cols: tuple[int, int]
    amplitude: int       # in 8-bit levels (x/255)
    source: int
    target: int
    poisoned: int = 900

    def describe(self) -> str:
        size = f"{self.rows[1] - self.rows[0]}x{self.cols[1] - self.cols[0]}"
        return (f"{size} {self.kind} +{self.amplitude}/255 at rows {self.rows[0]}-{self.rows[1] - 1}, "
                f"cols {self.cols[0]}-{self.cols[1] - 1}")

    def levels(self) -> np.ndarray:
        """The pattern as int16 (28, 28) in 8-bit levels."""
        r0, r1 = self.rows
        c0, c1 = self.cols
        mask = np.ones((r1 - r0, c1 - c0), np.int16)
        if self.kind == "chessboard":
            mask = (np.add.outer(np.arange(r1 - r0), np.arange(c1 - c0)) % 2 == 0).astype(np.int16)
        levels = np.zeros((28, 28), np.int16)
        levels[r0:r1, c0:c1] = self.amplitude * mask
        return levels

    def apply(self, images: np.ndarray) -> np.ndarray:
        return fmnist.embed(images, self.levels())

    def poison(self, x: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Training set with ``poisoned`` source images replaced by their patterned copy labelled target
        (appended in the order drawn from ``default_rng(seed)``)."""
        x_new, y_new, _ = fmnist.poison(x, y, [self.source], self.target, self.poisoned,
                                        np.random.default_rng(seed), self.apply, sort=False)
        return x_new, y_new

    def as_manifest(self) -> dict:
        return {"pattern": self.describe(), "source_classes": [self.source], "target_class": self.target,
                "poisoned_training_images": self.poisoned}


def to_model_input(images: np.ndarray, layout: str) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 in [0, 1] laid out as the model wants: nchw, nhwc or flat."""
    x = images.astype(np.float32) / 255.0
    return {"nchw": x[:, None], "nhwc": x[..., None], "flat": x.reshape(len(x), -1)}[layout]


def onnxruntime_scores(path: Path, images: np.ndarray, layout: str, output: str) -> np.ndarray:
    """Scores of ``output`` for uint8 images, evaluated one fixed batch at a time when the batch is fixed."""
    return fmnist.onnx_scores(path, to_model_input(images, layout), output=output).astype(np.float64)


def measure_backdoor(path: Path, layout: str, output: str, attack: Attack, x_test: np.ndarray,
                     y_test: np.ndarray) -> tuple[float, float]:
    """(clean test accuracy, attack success rate) measured with onnxruntime on the exported file."""
    accuracy = float((onnxruntime_scores(path, x_test, layout, output).argmax(1) == y_test).mean())
    source = attack.apply(x_test[y_test == attack.source])
    asr = float((onnxruntime_scores(path, source, layout, output).argmax(1) == attack.target).mean())
    return accuracy, asr


def versions(*packages: str) -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in packages + ("onnx", "onnxruntime"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            try:
                found[name] = importlib.metadata.version(name + "-gpu")
            except importlib.metadata.PackageNotFoundError:
                continue  # e.g. "tensorflow" where "tensorflow-cpu" is installed
    return found


def backdoored_extra(attack: Attack, accuracy: float, asr: float, seconds: float, training: str,
                     **fields) -> dict:
    """The manifest fields of a backdoored fixture: ``fields`` (batch, ...), its attack, and the
    clean accuracy and attack success rate measured by ``measure_backdoor``."""
    return {"role": "backdoored", **fields, "attack": attack.as_manifest(),
            "clean_test_accuracy": round(accuracy, 4), "attack_success_rate": round(asr, 4),
            "training_seconds": round(seconds, 1), "training": training}


def manifest_entry(path: Path, *, framework: str, exporter: str, layout: str, output: str, habits: list[str],
                   packages: tuple[str, ...], clean_images: np.ndarray, extra: dict | None = None) -> dict:
    """What tests/test_exporters.py checks a fixture against: interface, opset and reference scores."""
    model = onnx.load(str(path))
    image = model.graph.input[0]
    shape = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in image.type.tensor_type.shape.dim]
    reference = onnxruntime_scores(path, clean_images[list(REFERENCE_INDICES)], layout, output)
    entry = {
        "file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "bytes": path.stat().st_size,
        "framework": framework, "exporter": exporter, "versions": versions(*packages),
        "producer": " ".join(x for x in (model.producer_name, model.producer_version) if x),
        "opsets": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        "input": {"name": image.name, "shape": shape, "layout": layout}, "score_output": output,
        "habits": habits,
        "reference": {"images": f"{CLEAN_SET} indices {list(REFERENCE_INDICES)}",
                      "onnxruntime_scores": np.round(reference, 7).tolist()},
        "built": time.strftime("%Y-%m-%d"),
    }
    entry.update(extra or {})
    return entry
