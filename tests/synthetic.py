"""Small hand-built ONNX classifiers and clean sets, made at test time (no training needed).

``linear_classifier`` is a nearest-template linear model on H x W grey images. With
``backdoor_target`` set, one corner pixel that is dark in every clean image gets a large weight
towards that class: raising that single pixel a little sends any image to the target class,
the planted backdoor that L-RED must find.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 8  # onnxruntime 1.31 reads IR <= 13; onnx 1.23 writes 14 (onnxruntime #23602)


def templates(num_classes: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = rng.uniform(0.15, 0.85, size=(num_classes, size, size))
    t[:, -1, -1] = 0.0  # the backdoor pixel is dark in every clean image
    return t


def clean_images(num_classes: int, per_class: int, size: int = 8, seed: int = 0,
                 noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, size, size) images and labels: a class template plus Gaussian noise."""
    rng = np.random.default_rng(seed + 1)
    t = templates(num_classes, size, seed)
    x = t[np.repeat(np.arange(num_classes), per_class)]
    x = x + rng.normal(0.0, noise, size=x.shape)
    x[:, -1, -1] = 0.0
    y = np.repeat(np.arange(num_classes), per_class)
    return np.clip(np.round(x * 255), 0, 255).astype(np.uint8), y.astype(np.int64)


def linear_classifier(num_classes: int, size: int = 8, seed: int = 0, backdoor_target: int | None = None,
                      backdoor_gain: float = 60.0, layout: str = "nchw", softmax: bool = False,
                      opset: int = 13, fixed_batch: int | None = None) -> onnx.ModelProto:
    """Linear nearest-template classifier as ONNX: input -> Flatten/Reshape -> Gemm [-> Softmax]."""
    t = templates(num_classes, size, seed).reshape(num_classes, -1)
    weight = (t - t.mean(axis=0)) * 8.0
    bias = -0.5 * (weight * t).sum(axis=1)
    bias = bias - np.diag(weight @ t.T + bias[:, None]).mean() * 0
    if backdoor_target is not None:
        weight[backdoor_target, -1] = backdoor_gain
    batch = fixed_batch if fixed_batch is not None else "N"
    shape = {"nchw": [batch, 1, size, size], "nhwc": [batch, size, size, 1],
             "flat": [batch, size * size]}[layout]
    nodes = []
    if layout == "flat":
        flat_name = "image"
    else:
        nodes.append(helper.make_node("Flatten", ["image"], ["flat"], axis=1, name="flatten"))
        flat_name = "flat"
    nodes.append(helper.make_node("Gemm", [flat_name, "W", "b"], ["logits"], transB=1, name="dense"))
    output = "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1, name="softmax"))
        output = "probabilities"
    graph = helper.make_graph(
        nodes, "linear",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [batch, num_classes])],
        initializer=[numpy_helper.from_array(weight.astype(np.float32), "W"),
                     numpy_helper.from_array(bias.astype(np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="lred-tests")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def write_case(directory: Path, num_classes: int = 6, per_class: int = 4, backdoor_target: int | None = 2,
               **model_options) -> tuple[Path, Path]:
    """Write model.onnx and clean.npz into ``directory``; return their paths."""
    model = linear_classifier(num_classes, backdoor_target=backdoor_target, **model_options)
    model_path = directory / "model.onnx"
    onnx.save(model, model_path)
    x, y = clean_images(num_classes, per_class)
    data_path = directory / "clean.npz"
    np.savez(data_path, x=x, y=y)
    return model_path, data_path


def identity_transform(shape: tuple[int, int, int] = (1, 8, 8)):
    """The input transform of an NCHW model fed pixels in [0, 1] as they are (scale 1, offset 0);
    ``shape`` is (C, H, W)."""
    from scanner.preprocess import InputTransform
    c, h, w = shape
    return InputTransform("nchw", shape, (h, w, c), np.ones(shape, np.float32), np.zeros(shape, np.float32))


def estimation_problem(num_classes: int, per_class: int, backdoor_target: int | None = None):
    """(classifier, pixels, labels) for the engines: ``linear_classifier`` converted to torch on
    the CPU, its clean images as (M, 1, 8, 8) float pixels in [0, 1] and their labels."""
    import torch

    import converters
    from scanner.estimation import DifferentiableClassifier
    model = linear_classifier(num_classes, backdoor_target=backdoor_target)
    module = converters.to_torch(model, "image", "logits").module
    classifier = DifferentiableClassifier(module, identity_transform(), "logits", torch.device("cpu"))
    x, y = clean_images(num_classes, per_class)
    return classifier, torch.tensor(x[:, None] / 255.0, dtype=torch.float32), torch.tensor(y)
