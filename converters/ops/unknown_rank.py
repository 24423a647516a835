"""Converters that do not depend on the input rank that shape inference recorded.

Shape inference loses the rank of a tensor after a Reshape to a shape computed at run time
(TorchScript exports without constant folding, or at opsets 11-13 of attention models), and
onnx2torch then misbehaves in three ops:

* GlobalAveragePool 1: onnx2torch averages over the axes 2.. of the *inferred* rank; an unknown
  rank gives no axes, and ``torch.mean`` over no axes averages everything, so the (N, C, 1, 1)
  output became (1, 1, 1, 1) (torchvision's Swin-T at opsets 11 and 13). Here the axes are taken
  from the input at run time, always (onnx2torch's own rank-free module).
* BatchNormalization 9/14/15 and InstanceNormalization 1/6: onnx2torch picks
  ``nn.BatchNorm1d/2d/3d`` (``nn.InstanceNorm*``) from the input's inferred rank and refuses the
  node when that rank is unknown ("spatial rank == -2": torchvision's ShuffleNet exported by the
  TorchScript exporter without constant folding; an InstanceNorm after a channel shuffle at
  opsets 11-13). In inference ``F.batch_norm`` with the running statistics, and
  ``F.instance_norm``, are the same computation for every rank, so such a node gets onnx2torch's
  own rank-free module; a node whose rank is known keeps onnx2torch's converter.
"""
from __future__ import annotations

from collections.abc import Callable

from onnx2torch.node_converters.batch_norm import OnnxBatchNorm
from onnx2torch.node_converters.global_average_pool import OnnxGlobalAveragePool
from onnx2torch.node_converters.instance_norm import OnnxInstanceNorm
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult, get_shape_from_value_info, onnx_mapping_from_node
from torch import nn

from .. import registry

# op type -> (versions, the rank-free module for a node of unknown input rank)
RANK_FREE: dict[str, tuple[tuple[int, ...], Callable[[OnnxNode], nn.Module]]] = {
    "BatchNormalization": ((9, 14, 15), lambda node: OnnxBatchNorm(
        momentum=1 - node.attributes.get("momentum", 0.9), epsilon=node.attributes.get("epsilon", 1e-5))),
    "InstanceNormalization": ((1, 6), lambda node: OnnxInstanceNorm(
        momentum=0.1, epsilon=node.attributes.get("epsilon", 1e-5))),
}


def _rank_known(node: OnnxNode, graph: OnnxGraph) -> bool:
    value_info = graph.value_info.get(node.input_values[0])
    if value_info is None:
        return False
    try:
        return len(get_shape_from_value_info(value_info)) >= 2
    except Exception:  # noqa: BLE001 - a value_info without a shape: rank unknown
        return False


def _make_converter(original: registry.Converter, rank_free: Callable[[OnnxNode], nn.Module]) -> registry.Converter:
    def convert_rank_free(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
        if _rank_known(node, graph) or len(node.output_values) != 1:
            return original(node, graph)
        return OperationConverterResult(torch_module=rank_free(node), onnx_mapping=onnx_mapping_from_node(node))

    return convert_rank_free


def convert_global_average_pool(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    return OperationConverterResult(torch_module=OnnxGlobalAveragePool(), onnx_mapping=onnx_mapping_from_node(node))


def _wrapping(rank_free: Callable[[OnnxNode], nn.Module]) -> Callable[[registry.Converter], registry.Converter]:
    def make_converter(original: registry.Converter) -> registry.Converter:
        return _make_converter(original, rank_free)

    return make_converter


def register() -> None:
    """Override GlobalAveragePool 1; put the rank-free modules in front of onnx2torch's normalizations."""
    registry.override("GlobalAveragePool", (1,), convert_global_average_pool,
                      "average over the axes 2.. of the input at run time, not of the inferred rank")
    for op_type, (versions, rank_free) in RANK_FREE.items():
        registry.wrap(op_type, versions, _wrapping(rank_free),
                      "input of unknown rank: onnx2torch's rank-free module instead of one picked by the inferred rank")


register()
