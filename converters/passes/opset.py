"""Graph pass: move the model to an opset at which onnx2torch has a converter for every node.

onnx2torch registers most converters only up to opsets 13-17 (e.g. no Reshape v19 or
ReduceMean v18 from torch's dynamo exporter). ``onnx.version_converter`` rewrites the graph to
another opset with the same semantics; the parity check against onnxruntime then confirms it.
"""
from __future__ import annotations

import onnx
from onnx import version_converter

from ..support import opset_of, unsupported_nodes

CANDIDATE_OPSETS = (17, 16, 15, 14, 13, 12, 11)


def convertible_opset(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int | None]:
    """The model itself if every node converts; otherwise the first candidate opset that does.

    Returns (model, new opset) where new opset is None when nothing was changed.
    """
    if not unsupported_nodes(model):
        return model, None
    current = opset_of(model)
    for target in CANDIDATE_OPSETS:
        if target == current:
            continue
        try:
            candidate = version_converter.convert_version(model, target)
        except Exception:  # version_converter raises RuntimeError and others per adapter
            continue
        if not unsupported_nodes(candidate):
            return candidate, target
    return model, None
