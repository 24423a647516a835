"""Name the node behind an onnx2torch refusal.

A converter that exists but refuses a node's attributes raises a bare NotImplementedError
('AvgPool with non symmetrical padding is not implemented.') that names neither the node nor
the opset. ``describe_refusal`` runs each node's converter alone to find the first one that
refuses and builds a one-line message: op type, opset, node, the refusal, what to do.
"""
from __future__ import annotations

import onnx
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.utils.safe_shape_inference import safe_shape_inference

from .registry import converter_for
from .support import UnsupportedNode, opset_of

ADVICE = ("re-export the model without this operator or option, or register a converter in converters/ "
          "(see converters/registry.py)")


def refusing_node(model: onnx.ModelProto) -> tuple[UnsupportedNode, str] | None:
    """The first node whose converter raises NotImplementedError, with the converter's message."""
    graph = OnnxGraph(safe_shape_inference(model).graph)
    for index, node in enumerate(graph.nodes.values()):
        domain = node.domain or ""
        opset = opset_of(model, domain)
        try:
            converter_for(node.operation_type, opset, domain)(node, graph)
        except NotImplementedError as exc:
            where = UnsupportedNode(node.operation_type, domain, opset, node.name or f"#{index}")
            return where, str(exc).strip().rstrip(".")
        except Exception:  # noqa: BLE001, S112 - other failures are reported by the full conversion
            continue
    return None


def describe_refusal(model: onnx.ModelProto, error: NotImplementedError) -> str:
    """One line naming the refused node when it can be found, else onnx2torch's own message."""
    try:
        found = refusing_node(model)
    except Exception:  # noqa: BLE001 - diagnosis must never hide the original refusal
        found = None
    if found is None:
        return f"onnx2torch cannot convert the model: {error}; {ADVICE}"
    node, reason = found
    return f"onnx2torch refuses {node.describe()}: {reason}; {ADVICE}"
