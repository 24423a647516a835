"""Graph pass: small computations on constants only are done once, at conversion.

torch's TorchScript exporter writes ``F.pad`` (and other shape bookkeeping) as a chain of
ConstantOfShape, Concat, Reshape, Slice, Transpose and Cast on constants. onnx2torch would
run that chain on every pass, ending in a read back to the host where the Pad reads its pads
(a stall on a GPU, and no CUDA graph: scanner/cuda_graphs.py). Here every node of the kinds
below whose inputs are all constants (initializers, Constant nodes, or nodes folded before it)
is evaluated once with onnx's reference evaluator and replaced by an initializer, so that the
converters for constant operands (ops/constant_pads.py, ops/constant_reshape.py) apply. Only
bookkeeping ops are folded, and only results of at most FOLD_LIMIT elements (a folded result
is stored in the graph). The parity check against onnxruntime on the original graph runs after
all passes.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

FOLDABLE = {"Constant", "ConstantOfShape", "Concat", "Reshape", "Slice", "Transpose", "Cast", "Unsqueeze",
            "Squeeze", "Gather", "Identity", "Range", "Add", "Sub", "Mul", "Div", "Neg", "Expand", "Tile",
            "Equal", "Where", "Flatten", "Shape", "Size"}
FOLD_LIMIT = 1 << 16


def fold_constants(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` with its foldable constant computations replaced by initializers;
    returns (model, number of nodes folded), the model itself when there is nothing to fold."""
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    graph_inputs = {i.name for i in model.graph.input}
    graph_outputs = {o.name for o in model.graph.output}
    opsets = list(model.opset_import)
    folded_nodes = set()
    for index, node in enumerate(model.graph.node):
        if node.op_type not in FOLDABLE or node.domain not in ("", "ai.onnx"):
            continue
        if any(name and (name not in values or name in graph_inputs) for name in node.input):
            continue
        if any(o in graph_outputs for o in node.output):
            continue
        results = _evaluate(node, {name: values[name] for name in node.input if name}, opsets)
        if results is None:
            continue
        values.update(results)
        folded_nodes.add(index)
    if not folded_nodes:
        return model, 0
    kept = [node for i, node in enumerate(model.graph.node) if i not in folded_nodes]
    used = used_names(kept, graph_outputs)
    existing = {t.name for t in model.graph.initializer}
    new_initializers = [numpy_helper.from_array(values[name], name)
                        for i in sorted(folded_nodes) for name in model.graph.node[i].output
                        if name in used and name not in existing]
    result = onnx.ModelProto()
    result.CopyFrom(model)
    del result.graph.node[:]
    result.graph.node.extend(kept)
    result.graph.initializer.extend(new_initializers)
    return result, len(folded_nodes)


def used_names(nodes: Iterable[onnx.NodeProto], graph_outputs: set[str]) -> set[str]:
    """The tensor names that ``nodes`` read (also inside their subgraphs: If, Loop bodies) or
    that are graph outputs."""
    used = {name for node in nodes for name in node.input} | graph_outputs
    for node in nodes:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                used |= {name for sub in attribute.g.node for name in sub.input}
    return used


def _size_bound(node: onnx.NodeProto, inputs: dict) -> float:
    """An upper bound on the elements of the node's output, from its inputs alone, so that a
    model cannot make the evaluator build a huge tensor (ConstantOfShape to 10^12, say)."""
    # np.ndarray, None for an omitted optional input (never one the size rules below read;
    # an error there is caught as for any other unreadable operand)
    arrays: list[Any] = [inputs[name] if name else None for name in node.input]
    sizes = [a.size for a in arrays if a is not None]
    op = node.op_type
    try:
        if op == "ConstantOfShape":
            return float(np.prod(arrays[0].astype(np.float64))) if arrays and arrays[0] is not None else 1.0
        if op == "Range":
            start, limit, delta = (float(np.asarray(a).reshape(-1)[0]) for a in arrays[:3])
            return abs((limit - start) / delta) + 1 if delta else np.inf
        if op == "Tile":
            return float(arrays[0].size) * float(np.prod(arrays[1].astype(np.float64)))
        if op == "Expand":
            shape = np.broadcast_shapes(arrays[0].shape, tuple(int(d) for d in arrays[1].reshape(-1)))
            return float(np.prod(shape, dtype=np.float64))
        if op in ("Add", "Sub", "Mul", "Div", "Equal", "Where"):
            return float(np.prod(np.broadcast_shapes(*(a.shape for a in arrays if a is not None)), dtype=np.float64))
        if op == "Gather":
            return float(arrays[0].size) * max(1.0, float(arrays[1].size))
    except (ValueError, TypeError, IndexError, OverflowError):
        return np.inf
    return float(sum(sizes)) if sizes else 1.0


def _evaluate(node: onnx.NodeProto, inputs: dict, opsets: Any) -> dict | None:
    """The node's outputs on constant ``inputs``, or None when evaluation fails or is too big."""
    if _size_bound(node, inputs) > FOLD_LIMIT:
        return None
    try:
        graph = helper.make_graph(
            [node], "fold",
            [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(array.dtype), array.shape)
             for name, array in inputs.items()],
            [helper.make_empty_tensor_value_info(name) for name in node.output if name])
        wrapper = helper.make_model(graph, opset_imports=opsets)
        outputs = ReferenceEvaluator(wrapper).run(None, inputs)
    except Exception:                              # an op or type the evaluator lacks: leave it
        return None
    names = [name for name in node.output if name]
    if len(outputs) != len(names) or any(getattr(o, "size", FOLD_LIMIT + 1) > FOLD_LIMIT for o in outputs):
        return None
    return dict(zip(names, outputs))
