"""ONNX -> differentiable torch module, through a fixed sequence of graph passes and onnx2torch.

Extra op converters for newer opsets are registered with onnx2torch by ``newer_opsets``.

Passes, in order (each one small module):
  subgraph.keep_score_path   drop side outputs (labels, ZipMap, auxiliary heads)
  static_batch.free_batch_dimension   a batch size baked into the input and Reshapes becomes free
  reshape_allowzero.drop_reshape_allowzero   Reshape allowzero=1 (dynamo exporter) where it is moot
  opset.convertible_opset    move to an opset onnx2torch covers, when it does not cover the model's

``to_torch`` returns the module with every parameter frozen; ``parity.compare_scores`` is the
gate that the scanner runs against onnxruntime before any estimation.
"""
from __future__ import annotations

from dataclasses import dataclass

import onnx
import torch

from scanner.errors import ConversionError, UnsupportedOperatorError

from . import newer_opsets  # noqa: F401  (registers extra converters with onnx2torch)
from .opset import convertible_opset
from .parity import Parity, compare_scores
from .reshape_allowzero import drop_reshape_allowzero
from .static_batch import fixed_batch_size, free_batch_dimension
from .subgraph import keep_score_path
from .support import UnsupportedNode, unsupported_nodes

__all__ = ["ConvertedModel", "Parity", "compare_scores", "to_torch", "unsupported_nodes", "UnsupportedNode"]


@dataclass(frozen=True, eq=False)
class ConvertedModel:
    """A frozen torch module computing the class scores, and the graph passes that were applied."""

    module: torch.nn.Module
    passes: tuple[str, ...]


def to_torch(model: onnx.ModelProto, input_name: str, output_name: str) -> ConvertedModel:
    """Convert the path input -> class scores of ``model`` into a frozen torch module."""
    from onnx2torch import convert

    passes = []
    graph = keep_score_path(model, input_name, output_name)
    if graph is not model:
        passes.append(f"kept only the path to output {output_name!r}")
    fixed = fixed_batch_size(graph, input_name)
    graph, reshapes = free_batch_dimension(graph, input_name)
    if fixed is not None:
        passes.append(f"freed the fixed batch size {fixed} (input and {reshapes} Reshape target(s))")
    graph, changed = drop_reshape_allowzero(graph)
    if changed:
        passes.append(f"dropped allowzero=1 from {changed} Reshape node(s)")
    graph, new_opset = convertible_opset(graph)
    if new_opset is not None:
        passes.append(f"converted to opset {new_opset}")
    missing = unsupported_nodes(graph)
    if missing:
        first = missing[0]
        more = f" (and {len(missing) - 1} more unsupported node(s))" if len(missing) > 1 else ""
        raise UnsupportedOperatorError(
            f"no torch converter for {first.describe()}{more}; no opset between 11 and 17 covers it either. "
            "Re-export the model without this operator, or register a converter in converters/")
    try:
        module = convert(graph)
    except NotImplementedError as exc:
        raise UnsupportedOperatorError(f"onnx2torch cannot convert the model: {exc}") from exc
    except Exception as exc:
        raise ConversionError(f"onnx2torch failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return ConvertedModel(module, tuple(passes))
