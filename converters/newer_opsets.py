"""Extra onnx2torch converters for newer versions of ops whose meaning did not change.

onnx2torch 1.5.15 registers most converters only up to opsets 13-17 (its ``node_converters``
registry; "Converter is not implemented" for newer versions, e.g. onnx2torch PR #251), while
torch's dynamo exporter writes opset 18+. For the ops below the newer versions only add element
types (bfloat16, float8, int4) or an option this module refuses explicitly, so the converter of
the newest version onnx2torch knows serves them too. Registered in onnx2torch's own registry at
import; `onnx.version_converter` cannot be used instead where it lacks a down-adapter (Pad).
"""
from __future__ import annotations

from typing import Callable

from onnx import defs
from onnx2torch.node_converters.registry import (
    _CONVERTER_REGISTRY,
    add_converter,
    get_converter,
)
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode


def _pad_guard(node: OnnxNode) -> None:
    inputs = node.input_values
    if len(inputs) >= 4 and inputs[3]:
        raise NotImplementedError(f"Pad node {node.name!r} uses the axes input (opset 18+), which has no "
                                  "torch converter; re-export with full-rank pads")
    if node.attributes.get("mode", "constant") == "wrap":
        raise NotImplementedError(f"Pad node {node.name!r} uses mode 'wrap' (opset 19+), which has no "
                                  "torch converter")


# op type -> (version whose onnx2torch converter is reused, extra check or None)
SAME_SEMANTICS: dict[str, tuple[int, Callable[[OnnxNode], None] | None]] = {
    "Reshape": (14, None),      # 19+: more element types (allowzero: see reshape_allowzero.py)
    "Pad": (13, _pad_guard),    # 18: optional axes input; 19: 'wrap' mode
    "Cast": (13, None),         # 19+: 'saturate', which only affects float8 targets
    "Flatten": (13, None),      # 21+: more element types
    "Identity": (16, None),     # 19+: more element types
    "Conv": (11, None),         # 22: more element types
    "MaxPool": (12, None),      # 22: more element types
    "AveragePool": (19, None),  # 22: more element types
    "ConstantOfShape": (9, None),   # 20+: more element types
    "Equal": (13, None),        # 19: string inputs
}


def _newer_versions(op_type: str, base: int) -> list[int]:
    versions = {s.since_version for s in defs.get_all_schemas_with_history()
                if s.name == op_type and s.domain == ""}
    registered = {k.version for k in _CONVERTER_REGISTRY if k.operation_type == op_type and k.domain == ""}
    return sorted(v for v in versions if v > base and v > max(registered, default=0))


def _make_converter(op_type: str, base: int, guard: Callable[[OnnxNode], None] | None):
    def convert_newer_version(node: OnnxNode, graph: OnnxGraph):
        if guard is not None:
            guard(node)
        return get_converter(operation_type=op_type, version=base)(node, graph)

    convert_newer_version.__name__ = f"convert_{op_type.lower()}_newer_opset"
    return convert_newer_version


def register() -> list[tuple[str, int]]:
    """Register the converters (idempotent); returns the (op type, version) pairs added."""
    added = []
    for op_type, (base, guard) in SAME_SEMANTICS.items():
        try:
            get_converter(operation_type=op_type, version=base)
        except NotImplementedError:
            continue  # this onnx2torch lacks the base converter: nothing to reuse
        for version in _newer_versions(op_type, base):
            add_converter(operation_type=op_type, version=version)(_make_converter(op_type, base, guard))
            added.append((op_type, version))
    return added


REGISTERED = register()
