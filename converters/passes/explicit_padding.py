"""Graph pass: make convolution and pooling padding explicit and symmetric where onnx2torch needs it.

Two exporter habits that onnx2torch refuses:

* ``auto_pad = SAME_UPPER / SAME_LOWER`` (jax2onnx, some tf2onnx graphs): onnx2torch raises
  '"SAME_UPPER" auto_pad is not implemented'. With the input's spatial size known (shape
  inference), the ONNX definition gives the pads: output = ceil(in / stride), total pad =
  max((output - 1) * stride + (kernel - 1) * dilation + 1 - in, 0), the odd pixel at the end
  (UPPER) or at the beginning (LOWER). They are written as explicit ``pads``.
* ``AveragePool`` with asymmetric pads (Keras ``padding="same"`` pooling through tf2onnx):
  onnx2torch raises 'AvgPool with non symmetrical padding is not implemented'. The node becomes
  ``Pad`` (zeros) -> ``AveragePool`` without pads and, when padded zeros must not count
  (count_include_pad = 0, the default), ``Mul`` by the constant map kernel area / number of real
  pixels under each window.

Conv and MaxPool with asymmetric explicit pads are left to onnx2torch, which pads them itself.
Every rewrite keeps the ONNX semantics; the parity gate checks the result against onnxruntime
on the original graph.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..support import opset_of

PADDED_OPS = ("Conv", "MaxPool", "AveragePool", "LpPool")


def make_padding_explicit(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` with explicit, convertible padding; returns (model, nodes rewritten)."""
    if not any(_needs_rewrite(node) for node in model.graph.node):
        return model, 0
    try:
        model = onnx.shape_inference.infer_shapes(onnx.ModelProto.FromString(model.SerializeToString()))
    except Exception:  # noqa: BLE001 - without shapes nothing is rewritten; onnx2torch then names the node
        return model, 0
    graph = model.graph
    shapes = _known_shapes(graph)
    initializers = {t.name: t for t in graph.initializer}
    opset = opset_of(model)
    rewritten = 0
    new_nodes: list[onnx.NodeProto] = []
    for index, node in enumerate(graph.node):
        spatial = shapes.get(node.input[0], ())[2:] if node.input else ()
        known = tuple(d for d in spatial if d is not None)
        complete = bool(spatial) and len(known) == len(spatial)   # every spatial size known
        if node.op_type in PADDED_OPS and _attribute(node, "auto_pad", b"NOTSET") in (b"SAME_UPPER", b"SAME_LOWER"):
            kernel = _kernel_shape(node, shapes, initializers)
            if kernel is not None and complete:
                _set_same_pads(node, known, kernel)
                rewritten += 1
        if node.op_type == "AveragePool" and _asymmetric_average_pool(node) and complete:
            new_nodes.extend(_split_average_pool(node, known, graph, opset, index))
            rewritten += 1
            continue
        new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.value_info[:]  # re-inferred by the converter
    return model, rewritten


def _needs_rewrite(node: onnx.NodeProto) -> bool:
    if node.op_type not in PADDED_OPS:
        return False
    if _attribute(node, "auto_pad", b"NOTSET") in (b"SAME_UPPER", b"SAME_LOWER"):
        return True
    return node.op_type == "AveragePool" and _asymmetric_average_pool(node)


def _attribute(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _replace_attribute(node: onnx.NodeProto, name: str, value: Any) -> None:
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept)
    if value is not None:
        node.attribute.append(helper.make_attribute(name, value))


def _known_shapes(graph: onnx.GraphProto) -> dict[str, tuple[int | None, ...]]:
    shapes = {}
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            shapes[value.name] = tuple(d.dim_value if d.HasField("dim_value") else None
                                       for d in value.type.tensor_type.shape.dim)
    for tensor in graph.initializer:
        shapes[tensor.name] = tuple(tensor.dims)
    return shapes


def _kernel_shape(node: onnx.NodeProto, shapes: dict[str, tuple[int | None, ...]],
                  initializers: dict[str, onnx.TensorProto]) -> list[int] | None:
    kernel = _attribute(node, "kernel_shape", None)
    if kernel:
        return list(kernel)
    if node.op_type == "Conv" and len(node.input) > 1:
        weight = shapes.get(node.input[1]) or (tuple(initializers[node.input[1]].dims)
                                               if node.input[1] in initializers else None)
        if weight and all(d is not None for d in weight[2:]):
            return [d for d in weight[2:] if d is not None]   # every one (checked above)
    return None


def _set_same_pads(node: onnx.NodeProto, spatial: tuple[int, ...], kernel: list[int]) -> None:
    """auto_pad SAME_* -> explicit pads, as defined by the ONNX operator specification."""
    rank = len(kernel)
    strides = list(_attribute(node, "strides", [1] * rank))
    dilations = list(_attribute(node, "dilations", [1] * rank))
    upper = _attribute(node, "auto_pad", b"") == b"SAME_UPPER"
    begins, ends = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        output = math.ceil(size / s)
        total = max((output - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begins.append(small if upper else large)
        ends.append(large if upper else small)
    _replace_attribute(node, "auto_pad", None)
    _replace_attribute(node, "pads", begins + ends)


def _asymmetric_average_pool(node: onnx.NodeProto) -> bool:
    pads = list(_attribute(node, "pads", []))
    if not pads or _attribute(node, "auto_pad", b"NOTSET") != b"NOTSET":
        return False
    if _attribute(node, "ceil_mode", 0) or any(d != 1 for d in _attribute(node, "dilations", [])):
        return False  # left to onnx2torch, which names what it does not support
    half = len(pads) // 2
    return pads[:half] != pads[half:]


def _split_average_pool(node: onnx.NodeProto, spatial: tuple[int, ...], graph: onnx.GraphProto, opset: int,
                        index: int) -> list[onnx.NodeProto]:
    """AveragePool(asymmetric pads) -> Pad, AveragePool(no pads) [, Mul by the count correction]."""
    pads = list(_attribute(node, "pads", []))
    rank = len(pads) // 2
    kernel = list(_attribute(node, "kernel_shape", []))
    strides = list(_attribute(node, "strides", [1] * rank))
    count_pad = bool(_attribute(node, "count_include_pad", 0))
    prefix = f"{node.name or node.op_type}__explicit_pad_{index}"
    full_pads = [0, 0] + pads[:rank] + [0, 0] + pads[rank:]
    padded = f"{prefix}_padded"
    if opset >= 11:
        pads_name = f"{prefix}_pads"
        graph.initializer.append(numpy_helper.from_array(np.array(full_pads, np.int64), pads_name))
        pad = helper.make_node("Pad", [node.input[0], pads_name], [padded], mode="constant",
                               name=f"{prefix}_pad")
    else:
        pad = helper.make_node("Pad", [node.input[0]], [padded], mode="constant", pads=full_pads,
                               name=f"{prefix}_pad")
    pooled = node.output[0] if count_pad else f"{prefix}_pooled"
    pool = onnx.NodeProto()
    pool.CopyFrom(node)
    del pool.input[:]
    pool.input.append(padded)
    del pool.output[:]
    pool.output.append(pooled)
    _replace_attribute(pool, "pads", None)
    _replace_attribute(pool, "count_include_pad", None)
    if count_pad:
        return [pad, pool]
    factor_name = f"{prefix}_count_correction"
    factor = _count_correction(spatial, kernel, strides, pads)
    graph.initializer.append(numpy_helper.from_array(factor, factor_name))
    correct = helper.make_node("Mul", [pooled, factor_name], [node.output[0]], name=f"{prefix}_correct")
    return [pad, pool, correct]


def _count_correction(spatial: tuple[int, ...], kernel: list[int], strides: list[int], pads: list[int]) -> np.ndarray:
    """(1, 1, *output) float32: kernel area / real (unpadded) pixels under each window."""
    rank = len(kernel)
    mask = np.pad(np.ones(spatial, np.float64), [(pads[i], pads[rank + i]) for i in range(rank)])
    out_shape = [(mask.shape[i] - kernel[i]) // strides[i] + 1 for i in range(rank)]
    counts = np.zeros(out_shape)
    for position in np.ndindex(*out_shape):
        window = tuple(slice(p * s, p * s + k) for p, s, k in zip(position, strides, kernel))
        counts[position] = mask[window].sum()
    area = float(np.prod(kernel))
    return (area / np.maximum(counts, 1.0)).astype(np.float32).reshape((1, 1) + tuple(out_shape))
