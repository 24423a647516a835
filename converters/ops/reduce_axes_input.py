"""Converters for the Reduce* operators of opset 18+, where ``axes`` moved from an attribute to an input.

onnx2torch stops at ReduceMean/Max/Min/... version 13 (ReduceSum already takes axes as an input
since 13), so opset-18 graphs from torch's dynamo exporter or from tf2onnx (Keras
GlobalAveragePooling2D at ``--opset 18``) fail, and ``onnx.version_converter`` cannot always go
back. The axes must be a constant (an initializer or a Constant node); negative axes are resolved
against the input's rank at run time. Gradients: amax/amin spread the gradient evenly over ties.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import (
    OnnxMapping,
    OperationConverterResult,
    get_const_value,
)
from torch import nn

from .. import registry


def _reduce_prod(x: torch.Tensor, dims: tuple[int, ...], keepdim: bool) -> torch.Tensor:
    for dim in sorted(dims, reverse=True):
        x = torch.prod(x, dim=dim, keepdim=keepdim)
    return x


def _log_sum(x: torch.Tensor, dims: tuple[int, ...], keepdim: bool) -> torch.Tensor:
    return torch.log(torch.sum(x, dim=dims, keepdim=keepdim))


REDUCTIONS: dict[str, Callable[[torch.Tensor, tuple[int, ...], bool], torch.Tensor]] = {
    "ReduceMean": lambda x, d, k: torch.mean(x, dim=d, keepdim=k),
    "ReduceMax": lambda x, d, k: torch.amax(x, dim=d, keepdim=k),
    "ReduceMin": lambda x, d, k: torch.amin(x, dim=d, keepdim=k),
    "ReduceProd": _reduce_prod,
    "ReduceL1": lambda x, d, k: torch.sum(torch.abs(x), dim=d, keepdim=k),
    "ReduceL2": lambda x, d, k: torch.sqrt(torch.sum(x * x, dim=d, keepdim=k)),
    "ReduceSumSquare": lambda x, d, k: torch.sum(x * x, dim=d, keepdim=k),
    "ReduceLogSum": _log_sum,
    "ReduceLogSumExp": lambda x, d, k: torch.logsumexp(x, dim=d, keepdim=k),
}
# since_version of each operator's "axes as input" form (ReduceMax/Min got more types at 20)
VERSIONS = {op: (18, 20) if op in ("ReduceMax", "ReduceMin") else (18,) for op in REDUCTIONS}


class ReduceOverAxes(nn.Module):
    """One ONNX reduction over constant axes; empty axes mean all axes (or none, if noop)."""

    def __init__(self, operation_type: str, axes: tuple[int, ...], keepdims: bool, noop_with_empty_axes: bool):
        super().__init__()
        self.operation_type = operation_type
        self.axes = axes
        self.keepdims = keepdims
        self.noop_with_empty_axes = noop_with_empty_axes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.axes:
            if self.noop_with_empty_axes:
                return x
            dims = tuple(range(x.dim()))
        else:
            dims = tuple(sorted({a % x.dim() for a in self.axes}))
        return REDUCTIONS[self.operation_type](x, dims, self.keepdims)


def convert_reduce_with_axes_input(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """ReduceX (opset 18+): data, optional constant axes -> ReduceOverAxes."""
    axes: tuple[int, ...] = ()
    if len(node.input_values) > 1 and node.input_values[1]:
        try:
            axes = tuple(int(a) for a in torch.as_tensor(get_const_value(node.input_values[1], graph)).flatten())
        except KeyError as exc:
            raise NotImplementedError(
                f"{node.operation_type} node {node.name!r} takes its axes from a computed tensor; only constant "
                "axes (an initializer or a Constant node) are supported") from exc
    module = ReduceOverAxes(node.operation_type, axes, bool(node.attributes.get("keepdims", 1)),
                            bool(node.attributes.get("noop_with_empty_axes", 0)))
    return OperationConverterResult(
        torch_module=module,
        onnx_mapping=OnnxMapping(inputs=(node.input_values[0],), outputs=node.output_values))


def register() -> None:
    """Add the converter for every reduction and version above."""
    for op_type, versions in VERSIONS.items():
        registry.add(op_type, versions, convert_reduce_with_axes_input,
                     "axes as an input (opset 18+); onnx2torch stops at the version with axes as an attribute")


register()
