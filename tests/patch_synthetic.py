"""A small torch classifier with a planted patch backdoor, exported to ONNX at test time.

The clean part is the nearest-template linear model of ``synthetic.py`` (at 1/8 of its gain) (grey images, one
template per class). The backdoor reads the top-left 3 x 3 corner: f = sum of (x - 0.5) times
the signs of a checkerboard; only when the corner shows the checkerboard (f near its maximum
4.5) is relu(f + 1)^2 large (30; about 1 on clean corners), and ``gain`` times that, times the clean posterior
mass of the source classes, is added to the target's score: a source image goes to the target,
a non-source image keeps its class. ``sources=None`` makes every other class a source.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from tests.synthetic import clean_images, templates

CORNER = 3


def checkerboard(size: int = CORNER) -> np.ndarray:
    return (np.indices((size, size)).sum(axis=0) % 2).astype(np.float32)


class PatchBackdoored(nn.Module):
    def __init__(self, num_classes: int, size: int, target: int | None, sources: tuple[int, ...] | None,
                 gain: float = 1.5, seed: int = 0):
        super().__init__()
        t = templates(num_classes, size, seed).reshape(num_classes, -1)
        weight = t - t.mean(axis=0)
        bias = -0.5 * (weight * t).sum(axis=1)
        self.dense = nn.Linear(size * size, num_classes)
        with torch.no_grad():
            self.dense.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
            self.dense.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
        signs = 2 * checkerboard() - 1
        self.register_buffer("signs", torch.as_tensor(signs)[None, None])
        boost, gate = np.zeros(num_classes, dtype=np.float32), np.zeros(num_classes, dtype=np.float32)
        if target is not None:
            boost[target] = gain
            gate[[s for s in range(num_classes) if s != target] if sources is None else list(sources)] = 1.0
        self.register_buffer("boost", torch.as_tensor(boost))
        self.register_buffer("gate", torch.as_tensor(gate))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        corner = image[:, :, :CORNER, :CORNER]
        f = ((corner - 0.5) * self.signs).sum(dim=(1, 2, 3))
        clean = self.dense(image.flatten(1))
        mass = (torch.softmax(clean, dim=1) * self.gate).sum(dim=1)
        return clean + (torch.relu(f + 1) ** 2 * mass)[:, None] * self.boost


def write_patch_case(directory: Path, num_classes: int = 6, per_class: int = 6, size: int = 16,
                     target: int | None = 2, sources: tuple[int, ...] | None = (0, 4)) -> tuple[Path, Path]:
    """Write model.onnx (NCHW, 1 x size x size, logits) and clean.npz into ``directory``."""
    module = PatchBackdoored(num_classes, size, target, sources).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.rand(2, 1, size, size),), buffer, dynamo=False, opset_version=13,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "n"}, "logits": {0: "n"}})
    model_path, data_path = directory / "model.onnx", directory / "clean.npz"
    model_path.write_bytes(buffer.getvalue())
    onnx.checker.check_model(onnx.load(model_path))
    x, y = clean_images(num_classes, per_class, size)
    x[:, :CORNER, :CORNER] = np.random.default_rng(5).integers(60, 196, size=(len(x), CORNER, CORNER))
    np.savez(data_path, x=x, y=y)
    return model_path, data_path
