"""Graph pass: a Reshape target computed from tensor shapes becomes a constant target.

Keras through tf2onnx flattens with ``Reshape(x, Concat(Slice(Shape(x)), [-1]))`` and torch's
TorchScript exporter writes ``x.view(x.size(0), -1)`` as ``Reshape(x, Concat(Unsqueeze(Gather(
Shape(x), 0)), [-1]))``. Run as written, that arithmetic builds a shape tensor on the host,
copies it to the device and reads it back in the Reshape on every pass: on a GPU a stall per
pass, and a pass that cannot be replayed as a CUDA graph (scanner/cuda_graphs.py).

The target is evaluated here symbolically, from the shapes that ONNX shape inference gives:
each entry is a number or a named dimension ("the batch"). The new constant target keeps the
numbers, puts 0 ("copy this dimension of the input", ONNX Reshape with allowzero = 0) where the
entry is the data input's own dimension at the same position, and -1 for at most one other
named entry (Reshape then infers it from the element count, which gives the same value). Only
Shape, Gather, Slice, Concat, Cast, Unsqueeze, Squeeze and Identity on one-dimensional shape
values and constants are followed; any other arithmetic (a product of dimensions, a shape read
from a second input), allowzero = 1, or an entry that cannot be placed, leaves the Reshape as
it is. Nodes left without a consumer are then removed. The parity check against onnxruntime
on the original graph runs after every pass, as for the others.
"""
from __future__ import annotations

from typing import Any, cast

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .fold_constants import used_names

Dim = int | str          # a number, or a named dimension from shape inference
INT_TYPES = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}
Symbolic = list[Dim | None] | Dim | None   # a value of shape arithmetic: 1-D, 0-D or unknown


def _attribute(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _shapes(model: onnx.ModelProto) -> dict[str, list[Dim | None]]:
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        if not value.type.tensor_type.HasField("shape"):
            continue
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                              for d in value.type.tensor_type.shape.dim]
    return shapes


class _Evaluator:
    """Symbolic values of shape arithmetic: a list of Dim (1-D) or a Dim (0-D), or None."""

    def __init__(self, model: onnx.ModelProto, shapes: dict[str, list[Dim | None]]):
        self.shapes = shapes
        self.constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        self.producer = {}
        for node in model.graph.node:
            for name in node.output:
                self.producer[name] = node
            if node.op_type == "Constant" and _attribute(node, "value") is not None:
                self.constants[node.output[0]] = numpy_helper.to_array(_attribute(node, "value"))
        self.memo: dict[str, Symbolic] = {}

    def value(self, name: str) -> Symbolic:
        if name not in self.memo:
            self.memo[name] = self._evaluate(name)
        return self.memo[name]

    def _constant(self, name: str) -> list[int] | int | None:
        array = self.constants.get(name)
        if array is None or array.dtype.kind not in "iu" or array.ndim > 1:
            return None
        return [int(v) for v in array] if array.ndim == 1 else int(array)

    def _evaluate(self, name: str) -> Symbolic:
        constant = self._constant(name)
        if constant is not None or name in self.constants:
            return cast(Symbolic, constant)   # a list[int] is a list[Dim | None] (never written to)
        node = self.producer.get(name)
        if node is None:
            return None
        op, inputs = node.op_type, list(node.input)
        if op == "Shape":
            shape = self.shapes.get(inputs[0])
            if shape is None or any(d is None for d in shape):
                return None
            start, end = _attribute(node, "start", 0), _attribute(node, "end", None)
            return list(shape[slice(start, end)])
        if op in ("Cast", "Identity"):
            if op == "Cast" and _attribute(node, "to") not in INT_TYPES:
                return None
            return self.value(inputs[0])
        if op == "Gather":
            data, index = self.value(inputs[0]), self._constant(inputs[1])
            if not isinstance(data, list) or index is None or _attribute(node, "axis", 0) != 0:
                return None
            try:
                return [data[i] for i in index] if isinstance(index, list) else data[index]
            except IndexError:
                return None
        if op == "Slice":
            data = self.value(inputs[0])
            if not isinstance(data, list):
                return None
            if len(inputs) >= 3:           # opset 10+: starts, ends, axes, steps as inputs
                bounds = [self._constant(n) if n else None for n in inputs[1:5]]
                starts, ends = bounds[0], bounds[1]
                axes = bounds[2] if len(bounds) > 2 else None
                steps = bounds[3] if len(bounds) > 3 else None
            else:
                starts, ends = _attribute(node, "starts"), _attribute(node, "ends")
                axes, steps = _attribute(node, "axes"), None
            if not (isinstance(starts, list) and isinstance(ends, list) and len(starts) == len(ends) == 1):
                return None
            if axes not in (None, [0], [-1]) or steps not in (None, [1]):
                return None
            return data[starts[0]:ends[0]]        # Python's slice clamps as ONNX does for step 1
        if op == "Concat":
            if _attribute(node, "axis") not in (0, -1):
                return None
            parts = [self.value(n) for n in inputs]
            lists = [p for p in parts if isinstance(p, list)]
            if len(lists) < len(parts):
                return None
            return [d for p in lists for d in p]
        if op == "Unsqueeze":
            data = self.value(inputs[0])
            axes = _attribute(node, "axes") if len(inputs) < 2 else self._constant(inputs[1])
            return [data] if data is not None and not isinstance(data, list) and axes in ([0], [-1]) else None
        if op == "Squeeze":
            data = self.value(inputs[0])
            return data[0] if isinstance(data, list) and len(data) == 1 else None
        return None


def _constant_target(target: list[Dim | None], data_shape: list[Dim | None]) -> list[int] | None:
    result, inferred = [], False
    for i, entry in enumerate(target):
        if isinstance(entry, int):
            result.append(entry)
            inferred = inferred or entry == -1
        elif i < len(data_shape) and data_shape[i] == entry:
            result.append(0)                       # copy the input's dimension i
        elif not inferred:
            result.append(-1)                      # the element count fixes it
            inferred = True
        else:
            return None
    return result


def _prune(graph: onnx.GraphProto) -> int:
    """Remove nodes none of whose outputs is used; returns how many were removed."""
    removed = 0
    while True:
        used = used_names(graph.node, {o.name for o in graph.output})
        dead = [node for node in graph.node if not any(o in used for o in node.output)]
        if not dead:
            return removed
        for node in dead:
            graph.node.remove(node)
        removed += len(dead)


def fold_shape_targets(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` whose Reshape targets computed from shapes are constants (see the
    module docstring); returns (model, number of Reshapes rewritten). The model is returned
    unchanged when there is nothing to rewrite."""
    computed = [n for n in model.graph.node if n.op_type == "Reshape" and len(n.input) > 1
                and _attribute(n, "allowzero", 0) == 0]
    initializers = {t.name for t in model.graph.initializer}
    constants = {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    computed = [n for n in computed if n.input[1] not in initializers | constants]
    if not computed:
        return model, 0
    try:
        shapes = _shapes(model)
    except Exception:                              # shape inference refused the graph: leave it
        return model, 0
    evaluator = _Evaluator(model, shapes)
    replacements = {}
    for node in computed:
        try:
            target = evaluator.value(node.input[1])
        except RecursionError:                     # a chain deeper than Python's stack: leave it
            continue
        data_shape = shapes.get(node.input[0])
        if not isinstance(target, list) or data_shape is None:
            continue
        constant = _constant_target(target, data_shape)
        if constant is not None:
            replacements[node.output[0]] = constant
    if not replacements:
        return model, 0
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    existing = {t.name for t in folded.graph.initializer}
    for node in folded.graph.node:
        if node.op_type != "Reshape" or node.output[0] not in replacements:
            continue
        name, k = f"{node.output[0]}__constant_target", 0
        while name in existing:
            k += 1
            name = f"{node.output[0]}__constant_target{k}"
        existing.add(name)
        folded.graph.initializer.append(numpy_helper.from_array(np.array(replacements[node.output[0]], np.int64), name))
        node.input[1] = name
    _prune(folded.graph)
    return folded, len(replacements)
