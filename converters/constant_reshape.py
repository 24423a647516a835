"""Reshape to a constant target shape, held as Python ints (replacing onnx2torch's converter there).

onnx2torch keeps a Reshape's target shape as a tensor (a buffer that moves to the GPU with the
module) and, on every forward pass, tests ``torch.any(shape == 0)`` and builds a ``torch.Size``
from it: on a GPU that is a read back to the host per Reshape per pass. The stall costs time on
every iteration of the engine, and a pass that reads back cannot be replayed as a CUDA graph
(scanner/cuda_graphs.py refuses it). Most exporters other than torch's flatten with a Reshape
to a constant target (Keras through tf2onnx, torch's dynamo exporter, scikit-learn), so here the
target of such a Reshape goes into the module as a tuple of ints. A 0 in the target copies the
input's dimension (ONNX's rule for allowzero = 0), read from the input's shape at run time,
which is host metadata, not a tensor value. A target computed in the graph, and allowzero = 1,
keep onnx2torch's converter (the allowzero pass, reshape_allowzero.py, runs before).
"""
from __future__ import annotations

import torch
from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, get_const_value
from torch import nn

VERSIONS = (5, 13, 14)     # onnx2torch's own; newer_opsets maps 19 and 21 onto 14's converter


class ConstantReshape(nn.Module):
    """ONNX Reshape (allowzero = 0) to a target shape known when the graph is converted."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = shape

    def forward(self, data: torch.Tensor) -> torch.Tensor:
        return torch.reshape(data, tuple(data.shape[i] if d == 0 else d for i, d in enumerate(self.shape)))

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


def _constant_shape(node: OnnxNode, graph: OnnxGraph) -> tuple[int, ...] | None:
    if len(node.input_values) < 2 or node.attributes.get("allowzero", 0) != 0:
        return None
    try:
        value = get_const_value(node.input_values[1], graph)
    except (KeyError, NotImplementedError, ValueError):
        return None                                   # computed in the graph
    if not isinstance(value, torch.Tensor) or value.dim() != 1 or value.dtype != torch.int64:
        return None
    return tuple(int(d) for d in value.tolist())


def _make_converter(original):
    def convert_reshape(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
        shape = _constant_shape(node, graph)
        if shape is None:
            return original(node, graph)
        mapping = OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values)
        return OperationConverterResult(torch_module=ConstantReshape(shape), onnx_mapping=mapping)

    convert_reshape.original = original
    return convert_reshape


def register() -> list[tuple[str, int]]:
    """Wrap onnx2torch's Reshape converters (idempotent); returns the (op type, version) pairs."""
    added = []
    for version in VERSIONS:
        key = OperationDescription("", "Reshape", version)
        original = _CONVERTER_REGISTRY.get(key)
        if original is None or hasattr(original, "original"):
            continue
        _CONVERTER_REGISTRY[key] = _make_converter(original)
        added.append(("Reshape", version))
    return added


REGISTERED = register()
