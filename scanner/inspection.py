"""``lred inspect``: what an auditor wants to know about an unknown ONNX file before scanning it.

Reads the model, lists its interface and operators, converts it, and checks the converted
module against onnxruntime on random inputs in [0, 1] (or on the clean images when given), with
the scan's own comparison (``prepare.run_parity``). Unlike the scan's gate, a failed check is a
finding: the Inspection says what failed, and ``reporters`` renders it.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Any

import numpy as np
import onnx
import torch

import converters

from . import prepare as preparation
from .config import ScanConfig
from .errors import ConversionError, LredError
from .estimation import DifferentiableClassifier
from .model import LoadedModel, load_model
from .preprocess import InputTransform, _guess_layout, resolve_transform
from .report import Inspection
from .runtime import ReferenceClassifier

__all__ = ["Inspection", "inspect_model"]

RANDOM_INPUTS = 8
PARITY_IMAGES = 256     # clean images the parity check compares on (clean accuracy counts them all)


def inspect_model(path: str, data: str | None = None, config: ScanConfig | None = None) -> Inspection:
    """Inspect an ONNX classifier; raises LredError only when the file cannot be read at all."""
    if config is None:
        config = ScanConfig()
    model = load_model(path, config.output_name)
    graph = model.proto.graph
    histogram = collections.Counter(f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
                                    for n in graph.node)
    outputs = tuple((o.name, tuple(d.dim_value if d.HasField("dim_value") else None
                                   for d in o.type.tensor_type.shape.dim),
                     onnx.TensorProto.DataType.Name(o.type.tensor_type.elem_type)
                     if o.type.HasField("tensor_type") else "non-tensor") for o in graph.output)
    try:
        layout = config.layout if config.layout != "auto" else _guess_layout(model.input_shape[1:])
    except LredError:
        layout = None
    base: dict[str, Any]             # the Inspection fields every outcome shares
    base = dict(path=model.path, sha256=model.sha256, producer=model.producer, ir_version=model.proto.ir_version,
                opsets={(o.domain or "ai.onnx"): o.version for o in model.proto.opset_import},
                input_name=model.input_name, input_shape=model.input_shape, input_dtype=model.input_dtype,
                outputs=outputs, score_output=model.output_name, num_classes=model.num_classes, layout=layout,
                op_histogram=tuple(sorted(histogram.items(), key=lambda kv: (-kv[1], kv[0]))),
                parity_inputs=str(data) if data else "random", input_scale=config.input_scale,
                mean=config.mean, std=config.std)
    empty: dict[str, Any] = dict(max_abs_difference=None, tolerance=None, argmax_agreement=None, input_gradient_ok=None)
    try:
        converted = converters.to_torch(model.proto, model.input_name, model.output_name)
    except ConversionError as exc:
        return Inspection(**base, converts=False, conversion_passes=(), problem=str(exc), **empty)
    try:
        transform, pixels, labels = _parity_inputs(model, data, config, layout)
    except LredError as exc:
        return Inspection(**base, converts=True, conversion_passes=converted.passes,
                          problem=f"cannot build inputs for the parity check: {exc}", **empty)
    runtime = ReferenceClassifier(model)
    if labels is not None:                       # every clean image, for the accuracy
        scores = runtime.scores(transform.normalize(pixels))
        base.update(clean_accuracy=round(float((scores.argmax(axis=1) == labels).mean()), 6),
                    clean_images=int(labels.size), clean_problem=_accuracy_problem(scores, labels))
    pixels = pixels[:PARITY_IMAGES]
    reference = runtime.scores(transform.normalize(pixels))
    classifier = DifferentiableClassifier(converted.module, transform, "logits", torch.device("cpu"))
    rtol = converters.parity_rtol(model.proto, config.parity_rtol)
    run = preparation.run_parity(classifier, pixels, reference, rtol, config.parity_atol)
    if run.failure is not None:  # a converted graph that fails to run is a finding, not a crash
        failure = run.failure
        return Inspection(**base, converts=True, conversion_passes=converted.passes,
                          problem=f"the converted module fails to run: {type(failure).__name__}: {failure}", **empty)
    parity = run.parity
    assert parity is not None
    gradient_ok = run.input_gradient_ok()
    problem = None
    if not parity.ok:
        problem = (f"torch and onnxruntime disagree: max |difference| {parity.max_abs_difference:.3g} "
                   f"(tolerance {parity.tolerance:.3g}), argmax agreement {parity.argmax_agreement:.3f}")
    elif not gradient_ok:
        problem = "no usable input gradient (zero or not finite)"
    return Inspection(**base, converts=True, conversion_passes=converted.passes, problem=problem,
                      max_abs_difference=parity.max_abs_difference, tolerance=parity.tolerance,
                      argmax_agreement=parity.argmax_agreement, input_gradient_ok=gradient_ok)


def _accuracy_problem(scores: np.ndarray, labels: np.ndarray) -> str | None:
    """What stops a scan on these clean images (scanner/data.py select_images): a label the model
    does not have, or a class none of whose images it classifies correctly."""
    num_classes = scores.shape[1]
    if labels.max() >= num_classes:
        return f"the clean data has label {int(labels.max())} but the model has {num_classes} classes"
    predictions = scores.argmax(axis=1)
    empty = [c for c in np.unique(labels) if not (predictions[labels == c] == c).any()]
    if not empty:
        return None
    accuracy = float((predictions == labels).mean())
    return (f"the model misclassifies every clean image of class(es) {', '.join(map(str, empty[:10]))} "
            f"(it classifies {accuracy:.0%} of all clean images correctly): check the input convention "
            "(--input-scale 255 for a model that takes 0-255, --mean/--std, --layout) and the labels")


def _parity_inputs(model: LoadedModel, data: str | None, config: ScanConfig,
                   layout: str | None) -> tuple[InputTransform, np.ndarray, np.ndarray | None]:
    """Pixels of the clean images (all of them) with their labels, or random images (no labels)."""
    if data:
        from .data import load_clean_images
        clean = load_clean_images(data)
        transform = resolve_transform(model, config, clean.image_shape)
        return transform, transform.to_pixels(clean.pixels), clean.labels
    dims = tuple(d for d in model.input_shape[1:] if d is not None)
    if len(dims) < len(model.input_shape) - 1 or layout is None:
        raise LredError(f"input shape {model.input_shape} is not fully known; pass --data with clean images")
    image_shape: tuple[int, int, int]
    if layout == "nchw":
        image_shape = (dims[1], dims[2], dims[0])
    elif layout == "nhwc":
        image_shape = (dims[0], dims[1], dims[2])
    elif layout == "nhw":
        image_shape = (dims[0], dims[1], 1)
    else:
        image_shape = (1, dims[0], 1)
    transform = resolve_transform(model, dataclasses.replace(config, layout=layout if layout != "nhw" else "auto"),
                                  image_shape)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (RANDOM_INPUTS,) + image_shape, dtype=np.uint8)
    return transform, transform.to_pixels(images), None
