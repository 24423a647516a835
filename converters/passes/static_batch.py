"""Graph pass: free a batch size baked into the graph (typically 1, common in vendor files).

The image input's fixed first dimension becomes symbolic, and every Reshape whose target
shape starts with that fixed batch gets 0 there instead ("copy this dimension from the
input", the ONNX Reshape default, allowzero = 0), so the graph runs on any batch. Only the
torch side is rewritten: onnxruntime keeps evaluating the original graph, one fixed-size batch
at a time, and the parity gate compares the two on the clean images.
"""
from __future__ import annotations

import onnx
from onnx import numpy_helper

BATCH_NAME = "batch"


def fixed_batch_size(model: onnx.ModelProto, input_name: str) -> int | None:
    """The fixed first dimension of input ``input_name``, or None when it is symbolic."""
    for value in model.graph.input:
        if value.name == input_name:
            dims = value.type.tensor_type.shape.dim
            if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
                return int(dims[0].dim_value)
    return None


def free_batch_dimension(model: onnx.ModelProto, input_name: str) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` with a symbolic batch; returns (model, number of Reshapes rewritten)."""
    batch = fixed_batch_size(model, input_name)
    if batch is None:
        return model, 0
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    for value in list(graph.input) + list(graph.output):
        if value.name == input_name or value in graph.output:
            dims = value.type.tensor_type.shape.dim
            if dims and dims[0].HasField("dim_value") and dims[0].dim_value == batch:
                dims[0].dim_param = BATCH_NAME
    del graph.value_info[:]            # shapes are re-inferred by the converter

    constants = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    constants[node.output[0]] = attribute.t
    rewritten = 0
    for index, node in enumerate(graph.node):
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in constants:
            continue
        if any(a.name == "allowzero" and a.i == 1 for a in node.attribute):
            continue
        shape = numpy_helper.to_array(constants[node.input[1]]).copy()
        if shape.ndim != 1 or shape.size < 2 or int(shape[0]) != batch:
            continue
        shape[0] = 0
        name = f"{node.input[1]}__free_batch_{index}"
        graph.initializer.append(numpy_helper.from_array(shape, name))
        node.input[1] = name
        rewritten += 1
    return model, rewritten
