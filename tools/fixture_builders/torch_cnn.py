"""PyTorch fixtures: the TorchScript exporter at opsets 11, 13 and 17 and the dynamo exporter at its default opset.

``HabitNet`` packs the graph habits of the issue into one small CNN: Conv+BatchNorm (folded by
the exporter), BatchNorm after an activation (left unfused), ReLU6 (Clip), HardSwish, a
sigmoid*tanh gate, residual Add, constant Pad, max and average pooling, Flatten or a Reshape
with the batch size baked in, Dropout, Gemm or MatMul+Add, Cast, Softmax/LogSoftmax.
``SmallCNN`` is the backdoored classifier. Everything trains with one thread.
"""
from __future__ import annotations

import contextlib
import io
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import fmnist
from .common import Attack, backdoored_extra, manifest_entry, measure_backdoor

PACKAGES = ("torch", "onnxscript")


class HabitNet(nn.Module):
    """28x28 grey -> 10 scores, with the exporter habits listed in the module docstring."""

    def __init__(self, head: str = "logits", flatten: str = "flatten", dense: str = "gemm"):
        super().__init__()
        self.head, self.flatten_mode, self.dense_mode = head, flatten, dense
        self.conv1, self.norm1 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.norm2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv3 = nn.Conv2d(8, 12, 3)
        self.drop = nn.Dropout(0.2)
        self.dense = nn.Linear(12 * 6 * 6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu6(self.norm1(self.conv1(x))), 2)               # 8 x 14 x 14
        x = x + self.norm2(F.hardswish(self.conv2(x)))                        # residual, unfused BN
        x = F.pad(x, (1, 1, 1, 1))                                            # 8 x 16 x 16
        x = F.avg_pool2d(torch.sigmoid(x) * torch.tanh(x), 2)                 # 8 x 8 x 8
        x = torch.relu(self.conv3(x))                                         # 12 x 6 x 6
        if self.flatten_mode == "reshape_batch1":
            x = x.reshape(1, -1) if torch.onnx.is_in_onnx_export() else x.reshape(x.shape[0], -1)
        else:
            x = torch.flatten(x, 1)
        x = self.drop(x)
        if self.dense_mode == "matmul":
            x = x.double().float() @ self.dense.weight.t() + self.dense.bias  # Cast, MatMul + Add
        else:
            x = self.dense(x)
        if self.head == "softmax":
            return torch.softmax(x, 1)
        if self.head == "logsoftmax":
            return torch.log_softmax(x, 1)
        return x


class SmallCNN(nn.Module):
    """The backdoored classifier: two Conv-BN-ReLU-MaxPool blocks, Dropout, Linear, Softmax at export."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.25), nn.Linear(16 * 7 * 7, 10))
        self.softmax_at_export = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.features(x))
        return torch.softmax(logits, 1) if self.softmax_at_export and not self.training else logits


def loss_for(model: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Cross-entropy on logits; for a HabitNet with a softmax or log-softmax head, NLL on its log-probabilities."""
    if isinstance(model, HabitNet) and model.head != "logits":
        def nll(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            return F.nll_loss(scores if model.head == "logsoftmax" else torch.log(scores + 1e-12), labels)
        return nll
    return F.cross_entropy


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> float:
    """Adam lr 2e-3, batch 128 (``fmnist.train``, seeded after ``model`` was built); returns seconds.
    ``x`` uint8 (N, 28, 28)."""
    start = time.perf_counter()
    fmnist.train(lambda: model, x, y, seed=seed, epochs=epochs, lr=2e-3, batch_size=128, loss=loss_for(model))
    return time.perf_counter() - start


def export_torchscript(model: nn.Module, path: Path, opset: int, dynamic_batch: bool) -> None:
    fmnist.export_torchscript(model, path, opset=opset, output="scores", batch_axis="N" if dynamic_batch else None,
                              check=False)


def export_dynamo(model: nn.Module, path: Path, dynamic_batch: bool) -> None:
    """torch.onnx.export(dynamo=True) at its default opset; without dynamic shapes the batch is fixed at 1."""
    options = {"dynamic_shapes": {"x": {0: torch.export.Dim("N")}}} if dynamic_batch else {}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        example = torch.zeros(2 if dynamic_batch else 1, 1, 28, 28)
        program = torch.onnx.export(model.eval(), (example,), dynamo=True, input_names=["image"],
                                    output_names=["scores"], **options)
    program.save(str(path))
    strip_metadata(path)


def strip_metadata(path: Path) -> None:
    """Drop the dynamo exporter's per-node metadata (stack traces with local file paths)."""
    import onnx
    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
    del model.metadata_props[:]
    onnx.save(model, str(path))


HABIT_EXPORTS = [
    # file, exporter, opset (None: dynamo default), head, flatten, dense, dynamic batch, habits
    ("torch_ts_opset11.onnx", "torchscript", 11, "logsoftmax", "flatten", "gemm", True,
     ["Conv+BN folded", "BN after activation", "Clip (ReLU6)", "HardSigmoid*x (HardSwish before opset 14)",
      "Sigmoid*Tanh", "residual Add", "Pad", "MaxPool", "AveragePool", "Flatten", "Gemm", "LogSoftmax"]),
    ("torch_ts_opset13_batch1.onnx", "torchscript", 13, "softmax", "reshape_batch1", "matmul", False,
     ["fixed batch 1 in input and Reshape", "Cast", "MatMul+Add", "Softmax", "HardSigmoid*x", "Pad"]),
    ("torch_ts_opset17.onnx", "torchscript", 17, "logits", "flatten", "gemm", True,
     ["HardSwish", "Clip (ReLU6)", "BN after activation", "Flatten", "Gemm", "raw logits"]),
    ("torch_dynamo_batch1.onnx", "dynamo", None, "softmax", "flatten", "gemm", False,
     ["dynamo default opset", "fixed batch 1 (no dynamic_shapes)", "Reshape allowzero=1", "Pad v18+",
      "AveragePool v19+", "Softmax"]),
    ("torch_dynamo_dynamic.onnx", "dynamo", None, "logsoftmax", "flatten", "matmul", True,
     ["dynamo default opset", "dynamic batch", "Cast", "MatMul+Add", "LogSoftmax"]),
]

ATTACK = Attack("chessboard", rows=(21, 27), cols=(21, 27), amplitude=25, source=7, target=3)


def build(out: Path, data, clean_images: np.ndarray, backdoor: bool = True) -> list[dict]:
    torch.set_num_threads(1)
    x_train, y_train, _, _ = data
    rng = np.random.default_rng(1)
    subset = rng.choice(len(y_train), 6000, replace=False)
    entries = []
    for file, exporter, opset, head, flatten, dense, dynamic, habits in HABIT_EXPORTS:
        model = HabitNet(head, flatten, dense)
        train(model, x_train[subset], y_train[subset], epochs=1, seed=0)
        path = out / file
        if exporter == "torchscript":
            export_torchscript(model, path, opset, dynamic)
            name = f"torch.onnx.export(dynamo=False, opset_version={opset})"
        else:
            export_dynamo(model, path, dynamic)
            name = "torch.onnx.export(dynamo=True) at its default opset"
        entries.append(manifest_entry(path, framework="pytorch", exporter=name, layout="nchw", output="scores",
                                      habits=habits, packages=PACKAGES, clean_images=clean_images,
                                      extra={"role": "matrix", "batch": "dynamic" if dynamic else 1}))
    if backdoor:
        entries.extend(build_backdoored(out, data, clean_images))
    return entries


def build_backdoored(out: Path, data, clean_images: np.ndarray) -> list[dict]:
    x_train, y_train, x_test, y_test = data
    x, y = ATTACK.poison(x_train, y_train, seed=0)
    model = SmallCNN()
    seconds = train(model, x, y, epochs=3, seed=0)
    path = out / "torch_dynamo_backdoored.onnx"
    export_dynamo(model, path, dynamic_batch=False)
    accuracy, asr = measure_backdoor(path, "nchw", "scores", ATTACK, x_test, y_test)
    return [manifest_entry(
        path, framework="pytorch", exporter="torch.onnx.export(dynamo=True) at its default opset",
        layout="nchw", output="scores", habits=["dynamo default opset", "fixed batch 1", "Softmax", "BN folded"],
        packages=PACKAGES, clean_images=clean_images,
        extra=backdoored_extra(ATTACK, accuracy, asr, seconds, "Adam lr 2e-3, batch 128, 3 epochs, 1 thread",
                               batch=1))]
