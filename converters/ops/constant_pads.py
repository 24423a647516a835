"""Pad (opset 11, 13) with constant pads held as Python ints (replacing onnx2torch's converter there).

onnx2torch converts Pad 11+ to a module that calls ``pads.tolist()`` on every forward pass (and
passes a tensor fill value to ``F.pad``): on a GPU a read back to the host per Pad per pass,
which also keeps the pass from being replayed as a CUDA graph (scanner/cuda_graphs.py). Keras
through tf2onnx and torch's dynamo exporter give Pad an initializer as pads; torch's
TorchScript exporter computes them from constants (folded first by passes/fold_constants.py). When
the pads and the fill value are constants, the node becomes onnx2torch's own static Pad (the one
it uses for Pad 2, where pads are an attribute). Pad 18+ reaches this through newer_opsets.py.
Anything computed at run time keeps onnx2torch's converter.
"""
from __future__ import annotations

import torch
from onnx2torch.node_converters.pad import OnnxPadStatic
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode

from .constant_operands import constant_tensor, wrap_registered

VERSIONS = (11, 13)


def static_pad(node: OnnxNode, graph: OnnxGraph) -> OnnxPadStatic | None:
    """onnx2torch's static Pad for a Pad whose pads (and fill value) are constants, else None."""
    inputs = node.input_values
    if len(inputs) > 3 and inputs[3]:
        return None                                   # axes (opset 18): newer_opsets refuses it by name
    pads = constant_tensor(inputs[1], graph)
    if pads is None or pads.dim() != 1 or pads.dtype != torch.int64:
        return None
    fill = 0.0
    if len(inputs) > 2 and inputs[2]:
        value = constant_tensor(inputs[2], graph)
        if value is None or value.numel() != 1:
            return None
        fill = float(value.reshape(()))
    return OnnxPadStatic.create_from_onnx_params(onnx_pads=[int(p) for p in pads.tolist()],
                                                 onnx_mode=node.attributes.get("mode", "constant"),
                                                 constant_value=fill)


wrap_registered("Pad", VERSIONS, static_pad,
                "constant pads held as Python ints: no pads.tolist() read back per forward pass")
