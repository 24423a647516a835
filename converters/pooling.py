"""Pooling converters onnx2torch lacks: AveragePool 19/22 and GlobalMaxPool.

* AveragePool 19 added a ``dilations`` attribute (22 only added element types). Undilated
  pooling (every exporter we tested) is what AveragePool 11 computes, so onnx2torch's own
  converter serves it; dilated average pooling has no torch equivalent and is refused by name.
* GlobalMaxPool (a Keras GlobalMaxPooling2D or a torch AdaptiveMaxPool2d(1) export) has no
  onnx2torch converter at all: the maximum over every spatial axis, keeping them as size 1.
"""
from __future__ import annotations

import torch
from onnx2torch.node_converters.registry import (
    _CONVERTER_REGISTRY,
    OperationDescription,
    add_converter,
    get_converter,
)
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node
from torch import nn


def convert_average_pool_with_dilations(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """AveragePool 19/22: refuse real dilations, otherwise reuse the AveragePool 11 converter."""
    dilations = node.attributes.get("dilations", None)
    if dilations is not None and any(d != 1 for d in dilations):
        raise NotImplementedError(f"AveragePool node {node.name!r} uses dilations {list(dilations)}; torch has no "
                                  "dilated average pooling")
    return get_converter(operation_type="AveragePool", version=11)(node, graph)


class GlobalMaxPool(nn.Module):
    """Maximum over the spatial axes (2, 3, ...) of an (N, C, *spatial) tensor, kept as size 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.amax(x, dim=tuple(range(2, x.dim())), keepdim=True)


def convert_global_max_pool(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """GlobalMaxPool 1/22 -> GlobalMaxPool module."""
    return OperationConverterResult(torch_module=GlobalMaxPool(), onnx_mapping=onnx_mapping_from_node(node))


CONVERTERS = {
    ("AveragePool", 19): convert_average_pool_with_dilations,
    ("AveragePool", 22): convert_average_pool_with_dilations,
    ("GlobalMaxPool", 1): convert_global_max_pool,
    ("GlobalMaxPool", 22): convert_global_max_pool,
}


def register() -> list[tuple[str, int]]:
    """Register the converters with onnx2torch (skipping any version it already covers)."""
    added = []
    for (op_type, version), converter in CONVERTERS.items():
        if OperationDescription("", op_type, version) not in _CONVERTER_REGISTRY:
            add_converter(operation_type=op_type, version=version)(converter)
            added.append((op_type, version))
    return added


REGISTERED = register()
