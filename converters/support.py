"""Which nodes of a graph onnx2torch's converter registry can turn into torch modules."""
from __future__ import annotations

from dataclasses import dataclass

import onnx

from .registry import converter_for


@dataclass(frozen=True)
class UnsupportedNode:
    """One node with no converter: op type, its domain, the model's opset for it, the node name."""

    op_type: str
    domain: str
    opset: int
    node_name: str

    def describe(self) -> str:
        domain = f"{self.domain}::" if self.domain not in ("", "ai.onnx") else ""
        return f"{domain}{self.op_type} (opset {self.opset}) at node {self.node_name!r}"


def opset_of(model: onnx.ModelProto, domain: str = "") -> int:
    """Opset version the model imports for ``domain`` (the default ONNX domain if '')."""
    for entry in model.opset_import:
        if entry.domain == domain or (domain in ("", "ai.onnx") and entry.domain in ("", "ai.onnx")):
            return entry.version
    return 0


def unsupported_nodes(model: onnx.ModelProto) -> list[UnsupportedNode]:
    """Nodes of the main graph whose (domain, op type, opset) has no registered converter."""
    missing = []
    for index, node in enumerate(model.graph.node):
        domain = node.domain or ""
        version = opset_of(model, domain)
        try:
            converter_for(node.op_type, version, domain or "")
        except NotImplementedError:
            missing.append(UnsupportedNode(node.op_type, domain, version, node.name or f"#{index}"))
    return missing
