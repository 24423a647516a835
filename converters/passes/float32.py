"""Graph pass: a float16 model is converted for torch as its float32 twin.

A model stored in float16 (half-precision deployment exports) gives onnx2torch half-precision
weights, which meet the float32 images of the scan in the first layer ("Input type (float) and
bias type (c10::Half) should be the same"); pattern estimation in float16 would also lose the
small gradients it follows. Here every float16 tensor of the graph becomes float32: weights,
constants, Cast targets and declared types. onnxruntime keeps evaluating the original float16
graph, and the parity gate (with a tolerance widened for float16 rounding, see
``FLOAT16_PARITY_RTOL``) confirms that the twin computes the same scores.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

# float16 keeps 11 significant bits (relative spacing 2^-10 ~ 1e-3); a few layers of rounding
# move the scores by several of those, so the parity check allows 1e-2 of max |score| for these
# models instead of the default 1e-3
FLOAT16_PARITY_RTOL = 1e-2


def _widen_tensor(tensor: onnx.TensorProto) -> bool:
    if tensor.data_type != TensorProto.FLOAT16:
        return False
    tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name))
    return True


def _widen_value(value: onnx.ValueInfoProto) -> None:
    if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type == TensorProto.FLOAT16:
        value.type.tensor_type.elem_type = TensorProto.FLOAT


def uses_float16(model: onnx.ModelProto) -> bool:
    graph = model.graph
    return (any(t.data_type == TensorProto.FLOAT16 for t in graph.initializer)
            or any(v.type.tensor_type.elem_type == TensorProto.FLOAT16 for v in list(graph.input) + list(graph.output)))


def parity_rtol(model: onnx.ModelProto, rtol: float) -> float:
    """The parity check's tolerance relative to max |score| for ``model``: ``rtol``, widened to
    ``FLOAT16_PARITY_RTOL`` for a float16 model (compared through its float32 twin)."""
    return max(rtol, FLOAT16_PARITY_RTOL) if uses_float16(model) else rtol


def widen_float16(model: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
    """The float32 twin of a float16 graph; returns (model, whether anything changed)."""
    if not uses_float16(model):
        return model, False
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    for tensor in graph.initializer:
        _widen_tensor(tensor)
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        _widen_value(value)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR:
                _widen_tensor(attribute.t)
            elif node.op_type == "Cast" and attribute.name == "to" and attribute.i == TensorProto.FLOAT16:
                attribute.i = TensorProto.FLOAT
            elif attribute.name == "dtype" and attribute.i == TensorProto.FLOAT16:   # EyeLike, Random*
                attribute.i = TensorProto.FLOAT
    return model, True
