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
keep onnx2torch's converter (the allowzero pass, passes/reshape_allowzero.py, runs before).
"""
from __future__ import annotations

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from torch import nn

from .constant_operands import constant_tensor, wrap_registered

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


def reshape_to_constant_target(node: OnnxNode, graph: OnnxGraph) -> ConstantReshape | None:
    """A ConstantReshape for a Reshape whose target is constant (allowzero = 0), else None."""
    if len(node.input_values) < 2 or node.attributes.get("allowzero", 0) != 0:
        return None
    value = constant_tensor(node.input_values[1], graph)        # None: computed in the graph
    if value is None or value.dim() != 1 or value.dtype != torch.int64:
        return None
    return ConstantReshape(tuple(int(d) for d in value.tolist()))


wrap_registered("Reshape", VERSIONS, reshape_to_constant_target,
                "a constant target shape held as Python ints: no read back to the host per Reshape")
