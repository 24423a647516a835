"""Op converters registered with onnx2torch (through ``converters.registry``) when imported.

The import order is the registration order. It matters for ``newer_opsets``, which adds each
of its ops at every version newer than the newest registered when it runs: a module adding a
newer version of one of those ops goes before it, or the registry refuses the second add at
import. The converters that call another version's converter (Pad 18+ -> Pad 13, Reshape 19+ ->
Reshape 14, AveragePool 19 -> 11, ...) look it up when converting, so they reach the wrapped one.
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
    resize_exact,
    scatter_nd_tuple,
    slice_tuple,
    unknown_rank,
)
