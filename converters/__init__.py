"""ONNX -> differentiable torch module: graph passes, then onnx2torch with our converters.

Layout (lower layer: imports nothing from ``scanner``):

* ``ops/``      op converters, registered with onnx2torch through ``registry`` (the only module
                that touches onnx2torch's private registry); ``python -m converters.support_table``
                prints what they add, override and wrap;
* ``passes/``   ONNX graph rewrites, run in the order of ``passes.PASSES``;
* ``errors``    the conversion branch of the error tree (drawn whole in ``scanner/errors.py``);
* ``support``, ``diagnose``   which nodes have no converter, and which node a converter refuses;
* ``fixed_batch``   evaluating a graph that bakes its batch size in, a fixed batch at a time;
* ``parity``    the gate the scanner runs against onnxruntime before any estimation.

``to_torch`` (``convert.py``) returns the module with every parameter frozen. The package's
public names load on first use: ``import converters.errors`` (what ``scanner.errors`` does) must
not load torch and onnx2torch, so that the command line can refuse bad options at once.
Importing ``converters.ops`` (or using any public name) registers our converters with onnx2torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["ConvertedModel", "Parity", "UnsupportedNode", "compare_scores", "parity_rtol", "to_torch",
           "unsupported_nodes"]

if TYPE_CHECKING:
    from .convert import (
        ConvertedModel,
        Parity,
        UnsupportedNode,
        compare_scores,
        parity_rtol,
        to_torch,
        unsupported_nodes,
    )


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import convert
        return getattr(convert, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
