"""Slice (opset 10, 11, 13) indexed with a tuple of slices, replacing onnx2torch's converter.

onnx2torch indexes with a *list* of slices (``x[[slice(...), ...]]``), which torch has deprecated
since 2.9 ("Using a non-tuple sequence for multidimensional indexing ... will be interpreted as
tensor index ... which will result either in an error or a different result") and which prints
that warning on every scan of a model with a Slice node (tf2onnx writes one for Keras'
``Flatten``). Here the same slices (onnx2torch's own ``_get_slices``: negative steps by flipping,
negative axes after an Ellipsis) are applied as tuples, which torch reads the same way today and
will keep reading the same way. Opset 9 Slice (attributes instead of inputs) is left to onnx2torch.

When starts, ends, axes and steps are all constants (initializers or Constant nodes, the usual
case), the slices are worked out once, at conversion: reading them from tensors on every pass
is a read back to the host on a GPU, which also keeps the pass from being replayed as a CUDA
graph (scanner/cuda_graphs.py).
"""
from __future__ import annotations

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node
from torch import nn

from .. import registry
from ..registry import slices_from_operands
from .constant_operands import constant_tensor, data_only

VERSIONS = (10, 11, 13)


class TupleSlice(nn.Module):
    """ONNX Slice with starts, ends and optional axes and steps as inputs, or, when ``slices``
    is given (constant operands), with those slices and ``x`` as the only input."""

    def __init__(self, slices: tuple | None = None):
        super().__init__()
        self.slices = slices

    def forward(self, x: torch.Tensor, starts: torch.Tensor | None = None, ends: torch.Tensor | None = None,
                axes: torch.Tensor | None = None, steps: torch.Tensor | None = None) -> torch.Tensor:
        if self.slices is not None:
            flip_dims, positive_axes, negative_axes = self.slices
        else:
            flip_dims, positive_axes, negative_axes = slices_from_operands(starts, ends, axes, steps)
        if flip_dims:
            x = torch.flip(x, dims=flip_dims)
        if positive_axes:
            x = x[tuple(positive_axes)]
        if negative_axes:
            x = x[tuple(negative_axes)]
        return x


def _constant_operands(node: OnnxNode, graph: OnnxGraph) -> list[torch.Tensor | None] | None:
    operands: list[torch.Tensor | None] = []
    for name in node.input_values[1:5]:
        if not name:
            operands.append(None)
            continue
        value = constant_tensor(name, graph)
        if value is None:
            return None
        operands.append(value)
    operands += [None] * (4 - len(operands))
    return operands if operands[0] is not None and operands[1] is not None else None


def convert_slice(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    operands = _constant_operands(node, graph)
    if operands is None:
        return OperationConverterResult(torch_module=TupleSlice(), onnx_mapping=onnx_mapping_from_node(node))
    return data_only(node, TupleSlice(slices_from_operands(*operands)))


registry.override("Slice", VERSIONS, convert_slice,
                  "index with a tuple of slices, not a list (deprecated by torch); constant operands held as ints")
