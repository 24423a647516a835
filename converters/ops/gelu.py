"""Converter for Gelu (opset 20), which torch's dynamo exporter writes for ``F.gelu`` and onnx2torch lacks.

``approximate = "none"`` is x * Phi(x) with the exact normal CDF; ``"tanh"`` is the tanh
approximation; both are torch's own ``F.gelu`` modes, so values and gradients agree.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node
from torch import nn

from .. import registry


class Gelu(nn.Module):
    """torch.nn.functional.gelu with ONNX's ``approximate`` attribute ("none" or "tanh")."""

    def __init__(self, approximate: str):
        super().__init__()
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate=self.approximate)


def convert_gelu(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Gelu 20 -> Gelu module; an unknown approximation is refused by node name."""
    approximate = node.attributes.get("approximate", "none")
    approximate = approximate.decode() if isinstance(approximate, bytes) else approximate
    if approximate not in ("none", "tanh"):
        raise NotImplementedError(f"Gelu node {node.name!r} uses approximate={approximate!r}")
    return OperationConverterResult(torch_module=Gelu(approximate), onnx_mapping=onnx_mapping_from_node(node))


registry.add("Gelu", (20,), convert_gelu, "torch's dynamo exporter writes it for F.gelu; onnx2torch lacks it")
