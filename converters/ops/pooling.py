"""Pooling converters onnx2torch lacks: AveragePool 19/22 and GlobalMaxPool.

* AveragePool 19 added a ``dilations`` attribute (22 only added element types). Undilated
  pooling (every exporter we tested) is what AveragePool 11 computes, so onnx2torch's own
  converter serves it; dilated average pooling has no torch equivalent and is refused by name.
* GlobalMaxPool (a Keras GlobalMaxPooling2D or a torch AdaptiveMaxPool2d(1) export) has no
  onnx2torch converter at all: the maximum over every spatial axis, keeping them as size 1.
"""
from __future__ import annotations

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node
from torch import nn

from .. import registry


def convert_average_pool_with_dilations(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """AveragePool 19/22: refuse real dilations, otherwise reuse the AveragePool 11 converter."""
    dilations = node.attributes.get("dilations", None)
    if dilations is not None and any(d != 1 for d in dilations):
        raise NotImplementedError(f"AveragePool node {node.name!r} uses dilations {list(dilations)}; torch has no "
                                  "dilated average pooling")
    return registry.converter_for("AveragePool", 11)(node, graph)


class GlobalMaxPool(nn.Module):
    """Maximum over the spatial axes (2, 3, ...) of an (N, C, *spatial) tensor, kept as size 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.amax(x, dim=tuple(range(2, x.dim())), keepdim=True)


def convert_global_max_pool(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """GlobalMaxPool 1/22 -> GlobalMaxPool module."""
    return OperationConverterResult(torch_module=GlobalMaxPool(), onnx_mapping=onnx_mapping_from_node(node))


registry.add("AveragePool", (19, 22), convert_average_pool_with_dilations,
             "undilated pooling is AveragePool 11 (onnx2torch's); dilated pooling is refused by node name")
registry.add("GlobalMaxPool", (1, 22), convert_global_max_pool,
             "Keras GlobalMaxPooling2D / torch AdaptiveMaxPool2d(1) exports; onnx2torch lacks it")
