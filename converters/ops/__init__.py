"""Op converters registered with onnx2torch (through ``converters.registry``) when imported.

The import order is the registration order, and it matters: ``newer_opsets`` adds versions newer
than every version registered before it (so it comes after the wraps of Pad and Reshape, whose
newer versions call the wrapped converters, and before ``pooling``, which adds AveragePool 19).
"""
from __future__ import annotations

from . import (  # noqa: F401  (importing them registers the converters)
    constant_pads,
    constant_reshape,
    gelu,
    newer_opsets,
    opset18_ops,
    pooling,
    reduce_axes_input,
    scatter_nd_tuple,
    slice_tuple,
    unknown_rank,
)
