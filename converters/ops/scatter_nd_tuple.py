"""ScatterND (opset 11, 13, 16, 18; no reduction) indexed with a tuple, replacing onnx2torch's converter.

onnx2torch writes ``output[indices.T.tolist()] = updates``: indexing with a *list* of index
lists, which torch has deprecated (the same warning as for Slice, see ``slice_tuple``) and
printed on every scan of a model with ScatterND (torchvision's Swin-T exported at opsets 11-13
builds its attention mask with it). The same index lists as a tuple mean the same thing to
torch today and will keep it. A ``reduction`` other than 'none' is refused by name.
"""
from __future__ import annotations

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node
from torch import nn

from .. import registry


class TupleScatterND(nn.Module):
    """ONNX ScatterND: a copy of ``data`` with ``updates`` written at ``indices`` (last axis: a
    partial index into ``data``)."""

    def forward(self, data: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
        output = data.clone()
        depth = indices.shape[-1]
        positions = tuple(indices.reshape(-1, depth).T)
        output[positions] = updates.reshape((-1, *updates.shape[indices.dim() - 1:]))
        return output


def convert_scatter_nd(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:  # noqa: ARG001
    reduction = node.attributes.get("reduction", "none")
    if reduction != "none":
        raise NotImplementedError(f"ScatterND node {node.name!r} uses reduction {reduction!r}, which has no "
                                  "torch converter")
    return OperationConverterResult(torch_module=TupleScatterND(), onnx_mapping=onnx_mapping_from_node(node))


# 16 added reduction, 18 its max/min: only "none" converts
registry.override("ScatterND", (11, 13, 16), convert_scatter_nd,
                  "index with a tuple, not a list of index tensors (deprecated by torch)")
registry.add("ScatterND", (18,), convert_scatter_nd,
             "ScatterND 18 adds max/min reductions (refused by node name); onnx2torch stops at 16")
