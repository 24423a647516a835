"""Extra onnx2torch converters for newer versions of ops whose meaning did not change.

onnx2torch 1.5.15 registers most converters only up to opsets 13-17 (its ``node_converters``
registry; "Converter is not implemented" for newer versions, e.g. onnx2torch PR #251), while
torch's dynamo exporter writes opset 18+. For the ops below the newer versions only add element
types (bfloat16, float8, int4) or an option this module refuses explicitly, so the converter of
the newest version onnx2torch knows serves them too. Registered in onnx2torch's own registry at
import; `onnx.version_converter` cannot be used instead where it lacks a down-adapter (Pad).
"""
from __future__ import annotations

from collections.abc import Callable

from onnx import defs
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

from .. import registry


def _pad_guard(node: OnnxNode) -> None:
    inputs = node.input_values
    if len(inputs) >= 4 and inputs[3]:
        raise NotImplementedError(f"Pad node {node.name!r} uses the axes input (opset 18+), which has no "
                                  "torch converter; re-export with full-rank pads")
    if node.attributes.get("mode", "constant") == "wrap":
        raise NotImplementedError(f"Pad node {node.name!r} uses mode 'wrap' (opset 19+), which has no "
                                  "torch converter")


# op type -> (version whose onnx2torch converter is reused, extra check or None, what changed since)
SAME_SEMANTICS: dict[str, tuple[int, Callable[[OnnxNode], None] | None, str]] = {
    "Reshape": (14, None, "19+ add element types (allowzero: passes/reshape_allowzero.py)"),
    "Pad": (13, _pad_guard, "18 adds an axes input, 19 'wrap' mode: both refused by node name"),
    "Cast": (13, None, "19+ add 'saturate', which only affects float8 targets"),
    "Flatten": (13, None, "21+ add element types"),
    "Identity": (16, None, "19+ add element types"),
    "Conv": (11, None, "22 adds element types"),
    "MaxPool": (12, None, "22 adds element types"),
    "AveragePool": (19, None, "22 adds element types"),
    "ConstantOfShape": (9, None, "20+ add element types"),
    "Equal": (13, None, "19 adds string inputs"),
}


def _newer_versions(op_type: str, base: int) -> list[int]:
    versions = {s.since_version for s in defs.get_all_schemas_with_history()
                if s.name == op_type and s.domain == ""}
    registered = registry.registered_versions(op_type)
    return sorted(v for v in versions if v > base and v > max(registered, default=0))


def _make_converter(op_type: str, base: int, guard: Callable[[OnnxNode], None] | None) -> registry.Converter:
    def convert_newer_version(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
        if guard is not None:
            guard(node)
        return registry.converter_for(op_type, base)(node, graph)

    convert_newer_version.__name__ = f"convert_{op_type.lower()}_newer_opset"
    return convert_newer_version


def register() -> None:
    """Add, for each op above, one converter for its versions newer than any registered, when this
    onnx2torch has the base converter to reuse."""
    for op_type, (base, guard, change) in SAME_SEMANTICS.items():
        try:
            registry.converter_for(op_type, base)
        except NotImplementedError:
            continue  # this onnx2torch lacks the base converter: nothing to reuse
        versions = tuple(_newer_versions(op_type, base))
        if versions:
            registry.add(op_type, versions, _make_converter(op_type, base, guard),
                         f"onnx2torch's {op_type} {base} serves it: {change}")


register()
