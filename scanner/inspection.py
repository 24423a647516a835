"""``lred inspect``: what an auditor wants to know about an unknown ONNX file before scanning it.

Reads the model, lists its interface and operators, converts it, and checks the converted
module against onnxruntime on random inputs in [0, 1] (or on the clean images when given).
"""
from __future__ import annotations

import collections
import dataclasses
import json
from dataclasses import dataclass

import numpy as np
import onnx
import torch

import converters

from .config import ScanConfig
from .errors import ConversionError, LredError
from .estimation import DifferentiableClassifier
from .model import load_model
from .preprocess import InputTransform, _guess_layout, resolve_transform
from .runtime import ReferenceClassifier

RANDOM_INPUTS = 8


@dataclass(frozen=True)
class Inspection:
    path: str
    sha256: str
    producer: str
    ir_version: int
    opsets: dict[str, int]
    input_name: str
    input_shape: tuple[int | None, ...]
    input_dtype: str
    outputs: tuple[tuple[str, tuple[int | None, ...], str], ...]   # name, shape, element type
    score_output: str
    num_classes: int | None
    layout: str | None
    op_histogram: tuple[tuple[str, int], ...]
    converts: bool
    conversion_passes: tuple[str, ...]
    problem: str | None                     # why it does not convert or match, one line
    parity_inputs: str                      # "random" or the clean data path
    max_abs_difference: float | None
    tolerance: float | None
    argmax_agreement: float | None
    input_gradient_ok: bool | None

    @property
    def ok(self) -> bool:
        return self.converts and self.problem is None


def inspect_model(path: str, data: str | None = None, config: ScanConfig = ScanConfig()) -> Inspection:
    """Inspect an ONNX classifier; raises LredError only when the file cannot be read at all."""
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
    base = dict(path=model.path, sha256=model.sha256, producer=model.producer, ir_version=model.proto.ir_version,
                opsets={(o.domain or "ai.onnx"): o.version for o in model.proto.opset_import},
                input_name=model.input_name, input_shape=model.input_shape, input_dtype=model.input_dtype,
                outputs=outputs, score_output=model.output_name, num_classes=model.num_classes, layout=layout,
                op_histogram=tuple(sorted(histogram.items(), key=lambda kv: (-kv[1], kv[0]))),
                parity_inputs=str(data) if data else "random")
    empty = dict(max_abs_difference=None, tolerance=None, argmax_agreement=None, input_gradient_ok=None)
    try:
        converted = converters.to_torch(model.proto, model.input_name, model.output_name)
    except ConversionError as exc:
        return Inspection(**base, converts=False, conversion_passes=(), problem=str(exc), **empty)
    try:
        transform, pixels = _parity_inputs(model, data, config, layout)
    except LredError as exc:
        return Inspection(**base, converts=True, conversion_passes=converted.passes,
                          problem=f"cannot build inputs for the parity check: {exc}", **empty)
    reference = ReferenceClassifier(model).scores(transform.normalize(pixels))
    classifier = DifferentiableClassifier(converted.module, transform, "logits", torch.device("cpu"))
    inputs = torch.as_tensor(pixels).requires_grad_(True)
    problem = None
    try:
        scores = classifier.scores(inputs)
    except Exception as exc:  # a converted graph that fails to run is a finding, not a crash
        return Inspection(**base, converts=True, conversion_passes=converted.passes,
                          problem=f"the converted module fails to run: {type(exc).__name__}: {exc}", **empty)
    rtol = converters.parity_rtol(model.proto, config.parity_rtol)
    parity = converters.compare_scores(scores.detach().double().numpy(), reference, rtol, config.parity_atol)
    gradient_ok = classifier.gradient_reaches_input(inputs, scores)
    if not parity.ok:
        problem = (f"torch and onnxruntime disagree: max |difference| {parity.max_abs_difference:.3g} "
                   f"(tolerance {parity.tolerance:.3g}), argmax agreement {parity.argmax_agreement:.3f}")
    elif not gradient_ok:
        problem = "no usable input gradient (zero or not finite)"
    return Inspection(**base, converts=True, conversion_passes=converted.passes, problem=problem,
                      max_abs_difference=parity.max_abs_difference, tolerance=parity.tolerance,
                      argmax_agreement=parity.argmax_agreement, input_gradient_ok=gradient_ok)


def _parity_inputs(model, data, config: ScanConfig, layout: str | None) -> tuple[InputTransform, np.ndarray]:
    if data:
        from .data import load_clean_images
        clean = load_clean_images(data)
        transform = resolve_transform(model, config, clean.image_shape)
        return transform, transform.to_pixels(clean.pixels[:256])
    dims = model.input_shape[1:]
    if any(d is None for d in dims) or layout is None:
        raise LredError(f"input shape {model.input_shape} is not fully known; pass --data with clean images")
    if layout == "nchw":
        image_shape = (dims[1], dims[2], dims[0])
    elif layout == "nhwc":
        image_shape = tuple(dims)
    elif layout == "nhw":
        image_shape = (dims[0], dims[1], 1)
    else:
        image_shape = (1, dims[0], 1)
    transform = resolve_transform(model, dataclasses.replace(config, layout=layout if layout != "nhw" else "auto"),
                                  image_shape)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (RANDOM_INPUTS,) + image_shape, dtype=np.uint8)
    return transform, transform.to_pixels(images)


def render_inspection_text(report: Inspection) -> str:
    shape = lambda dims: "x".join("?" if d is None else str(d) for d in dims)  # noqa: E731
    lines = [f"{report.path}  (sha256 {report.sha256[:12]}...)",
             f"  producer     {report.producer}; IR {report.ir_version}; opsets "
             + ", ".join(f"{k} {v}" for k, v in report.opsets.items()),
             f"  input        {report.input_name!r} {shape(report.input_shape)} {report.input_dtype}, "
             f"layout {report.layout or 'unknown (pass --layout)'}"]
    for name, dims, kind in report.outputs:
        mark = "  <- class scores" if name == report.score_output else ""
        lines.append(f"  output       {name!r} {shape(dims)} {kind}{mark}")
    lines.append(f"  classes      {report.num_classes if report.num_classes is not None else 'unknown'}")
    lines.append("  operators    " + ", ".join(f"{op} {n}" for op, n in report.op_histogram))
    for step in report.conversion_passes:
        lines.append(f"  graph pass   {step}")
    if report.max_abs_difference is not None:
        lines.append(f"  parity       max |torch - onnxruntime| {report.max_abs_difference:.3g} (tolerance "
                     f"{report.tolerance:.3g}), argmax agreement {report.argmax_agreement:.3f} on "
                     f"{report.parity_inputs} inputs; input gradient {'ok' if report.input_gradient_ok else 'BAD'}")
    lines.append("  verdict      " + ("converts faithfully: ready to scan" if report.ok
                                       else f"NOT scannable: {report.problem}"))
    return "\n".join(lines) + "\n"


def render_inspection_json(report: Inspection) -> str:
    data = dataclasses.asdict(report)
    data["ok"] = report.ok
    return json.dumps(data, indent=2, allow_nan=False, default=str) + "\n"
