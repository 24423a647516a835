"""Converters for ops that torch's dynamo exporter writes at opset 18+ and onnx2torch lacks or
converts only for fully known shapes.

* Split 18: the number of pieces may come as the ``num_outputs`` attribute instead of a
  ``split`` input (torchvision's ShuffleNet: ``chunk``). Pieces have ceil(d / n) elements, the
  last one fewer (the ONNX definition), which is what ``torch.split`` with that size gives.
  With a ``split`` input it is Split 13, reused.
* Resize 18 and 19 add ``antialias``, ``axes``, ``keep_aspect_ratio_policy`` (18) and the
  ``half_pixel_symmetric`` coordinate mode (19): a node that uses none of them means what
  Resize 13 means, and onnx2torch's Resize 13 converter serves it; one that does is refused
  by name. (``onnx.version_converter`` has no down-adapter from 18 for either op.)
* Mish 18: x * tanh(softplus(x)).
* LayerNormalization 17, replacing onnx2torch's: it sizes ``nn.LayerNorm`` from the shape that
  shape inference recorded for the input, and an unknown dimension there (a dynamic token
  count, as the TorchScript exporter leaves it after a ``flatten``) becomes 0, so the module
  fails on every input. Here the normalized dimensions are taken from the input at run time,
  and scale and bias are applied with ONNX's broadcasting.
Every converted graph still has to match onnxruntime before a scan uses it.
"""
from __future__ import annotations

import math

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, onnx_mapping_from_node
from torch import nn

from .. import registry


class SplitEvenly(nn.Module):
    """Split 18 with ``num_outputs``: pieces of ceil(d / n) along ``axis``."""

    def __init__(self, axis: int, pieces: int):
        super().__init__()
        self.axis, self.pieces = axis, pieces

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        size = math.ceil(x.shape[self.axis] / self.pieces)
        parts = torch.split(x, size, dim=self.axis)
        if len(parts) != self.pieces:
            raise RuntimeError(f"Split into {self.pieces} pieces of {size} along axis {self.axis} of a "
                               f"dimension {x.shape[self.axis]} gives {len(parts)} pieces")
        return parts


def convert_split_18(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    inputs = node.input_values
    if len(inputs) > 1 and inputs[1]:
        return registry.converter_for("Split", 13)(node, graph)
    pieces = node.attributes.get("num_outputs", len(node.output_values))
    module = SplitEvenly(node.attributes.get("axis", 0), pieces)
    return OperationConverterResult(torch_module=module,
                                    onnx_mapping=OnnxMapping(inputs=(inputs[0],), outputs=node.output_values))


def convert_resize_18(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    attributes = node.attributes
    used = []
    if attributes.get("antialias", 0):
        used.append("antialias=1")
    if attributes.get("axes") is not None:
        used.append("axes")
    if attributes.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        used.append(f"keep_aspect_ratio_policy={attributes['keep_aspect_ratio_policy']}")
    if attributes.get("coordinate_transformation_mode") == "half_pixel_symmetric":
        used.append("coordinate_transformation_mode=half_pixel_symmetric")
    if used:
        raise NotImplementedError(f"Resize node {node.name!r} uses {', '.join(used)} (opset 18+), which has "
                                  "no torch converter")
    return registry.converter_for("Resize", 13)(node, graph)


class Mish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.mish(x)


def convert_mish(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    return OperationConverterResult(torch_module=Mish(), onnx_mapping=onnx_mapping_from_node(node))


class LayerNormalization(nn.Module):
    """ONNX LayerNormalization (one output): normalize over dims axis..-1, then * scale + bias."""

    def __init__(self, axis: int, epsilon: float):
        super().__init__()
        self.axis, self.epsilon = axis, epsilon

    def forward(self, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        shape = x.shape[self.axis:]
        if scale.shape == shape and (bias is None or bias.shape == shape):
            return torch.nn.functional.layer_norm(x, shape, scale, bias, self.epsilon)
        y = torch.nn.functional.layer_norm(x, shape, None, None, self.epsilon) * scale
        return y if bias is None else y + bias


def convert_layer_normalization(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    if len([o for o in node.output_values if o]) > 1:
        raise NotImplementedError(f"LayerNormalization node {node.name!r} also outputs its mean or inverse "
                                  "standard deviation, which has no torch converter")
    module = LayerNormalization(node.attributes.get("axis", -1), node.attributes.get("epsilon", 1e-5))
    mapping = OnnxMapping(inputs=tuple(node.input_values), outputs=node.output_values[:1])
    return OperationConverterResult(torch_module=module, onnx_mapping=mapping)


registry.add("Split", (18,), convert_split_18,
             "the number of pieces may be the num_outputs attribute (torch.chunk); with a split input it is Split 13")
registry.add("Resize", (18, 19), convert_resize_18,
             "the exact Resize 13 converter (ops/resize_exact.py) serves it; "
             "the options added in 18 and 19 are refused by node name")
registry.add("Mish", (18,), convert_mish, "x * tanh(softplus(x)); onnx2torch lacks it")
registry.override("LayerNormalization", (17,), convert_layer_normalization,
                  "normalized shape taken from the input at run time, not from shape inference (0 where unknown)")
