"""ONNX -> differentiable torch module, through a fixed sequence of graph passes and onnx2torch.

Extra op converters for newer opsets are registered with onnx2torch by ``newer_opsets``;
``slice_tuple`` replaces onnx2torch's Slice (list indexing, deprecated by torch);
``constant_reshape`` and ``constant_pads`` its Reshape and Pad where the target or pads are
constant (no read back to the host).

Passes, in order (each one small module):
  subgraph.keep_score_path   drop side outputs (labels, ZipMap, auxiliary heads)
  float32.widen_float16      a float16 graph becomes its float32 twin (weights, constants, Casts)
  constant_aliases.read_weights_directly   weights read through Identity nodes are read directly
  reshape_allowzero.drop_reshape_allowzero   Reshape allowzero=1 (dynamo exporter) where it is moot
  static_batch.free_batch_dimension   a batch size baked into the input and Reshapes becomes free
  explicit_padding.make_padding_explicit   auto_pad SAME_* and asymmetric AveragePool pads made explicit
  opset.convertible_opset    move to an opset onnx2torch covers, when it does not cover the model's
  fold_constants.fold_constants   bookkeeping on constants only (TorchScript's F.pad pads) computed once
  shape_targets.fold_shape_targets   Reshape targets computed from shapes (Flatten of Keras, x.view(x.size(0), -1)) made constant
  observed_ranks.record_observed_ranks   ranks of shapeless tensors, from one reference evaluation

``to_torch`` returns the module with every parameter frozen; ``parity.compare_scores`` is the
gate that the scanner runs against onnxruntime before any estimation.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import onnx
import torch

from .errors import ConversionError, UnsupportedOperatorError

from . import (  # noqa: F401  (importing them registers extra converters with onnx2torch)
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
from .constant_aliases import read_weights_directly
from .diagnose import describe_refusal
from .explicit_padding import make_padding_explicit
from .float32 import parity_rtol, widen_float16
from .fold_constants import fold_constants
from .fixed_batch import FixedBatchModule, batch_independent, runs_on_batch, vectorizes
from .observed_ranks import record_observed_ranks
from .opset import convertible_opset
from .parity import Parity, compare_scores
from .reshape_allowzero import drop_reshape_allowzero
from .shape_targets import fold_shape_targets
from .static_batch import fixed_batch_size, free_batch_dimension
from .subgraph import keep_score_path
from .support import UnsupportedNode, unsupported_nodes

__all__ = ["ConvertedModel", "Parity", "UnsupportedNode", "compare_scores", "parity_rtol", "to_torch",
           "unsupported_nodes"]


@dataclass(frozen=True, eq=False)
class ConvertedModel:
    """A frozen torch module computing the class scores, and the graph passes that were applied."""

    module: torch.nn.Module
    passes: tuple[str, ...]


def to_torch(model: onnx.ModelProto, input_name: str, output_name: str) -> ConvertedModel:
    """Convert the path input -> class scores of ``model`` into a frozen torch module."""
    passes = []
    graph = keep_score_path(model, input_name, output_name)
    if graph is not model:
        passes.append(f"kept only the path to output {output_name!r}")
    graph, widened = widen_float16(graph)
    if widened:
        passes.append("converted the float16 graph to float32 for torch (onnxruntime runs the float16 original)")
    graph, aliased = read_weights_directly(graph)
    if aliased:
        passes.append(f"read {aliased} weight(s) directly instead of through Identity nodes")
    # before freeing the batch: a Reshape target [1, K] with allowzero=1 is moot, [0, K] is not
    graph, changed = drop_reshape_allowzero(graph)
    if changed:
        passes.append(f"dropped allowzero=1 from {changed} Reshape node(s)")
    fixed = fixed_batch_size(graph, input_name)
    freed, reshapes = free_batch_dimension(graph, input_name)
    if fixed is not None:
        passes.append(f"freed the fixed batch size {fixed} (input and {reshapes} Reshape target(s))")
    freeing = len(passes) - 1
    module = _convert(freed, passes)
    if fixed is not None:
        module = _batch_fallback(module, freed, input_name, fixed, passes, original=lambda: _convert(graph, []),
                                 freeing=freeing)
    return ConvertedModel(module, tuple(passes))


def _convert(graph: onnx.ModelProto, passes: list[str]) -> torch.nn.Module:
    """The remaining passes, then onnx2torch; the module comes back frozen, in eval mode."""
    from onnx2torch import convert

    graph, padded = make_padding_explicit(graph)
    if padded:
        passes.append(f"made the padding of {padded} convolution/pooling node(s) explicit")
    graph, new_opset = convertible_opset(graph)
    if new_opset is not None:
        passes.append(f"converted to opset {new_opset}")
    graph, folded = fold_constants(graph)
    if folded:
        passes.append(f"computed {folded} node(s) on constants once, at conversion")
    graph, targets = fold_shape_targets(graph)
    if targets:
        passes.append(f"made {targets} Reshape target(s) computed from shapes constant")
    missing = unsupported_nodes(graph)
    if missing:
        first = missing[0]
        more = f" (and {len(missing) - 1} more unsupported node(s))" if len(missing) > 1 else ""
        raise UnsupportedOperatorError(
            f"no torch converter for {first.describe()}{more}; no opset between 11 and 17 covers it either. "
            "Re-export the model without this operator, or register a converter in converters/")
    graph, observed = record_observed_ranks(graph)
    if observed:
        passes.append(f"recorded the observed rank of {observed} tensor(s) that shape inference left shapeless")
    try:
        module = convert(graph)
    except NotImplementedError as exc:
        raise UnsupportedOperatorError(describe_refusal(graph, exc)) from exc
    except Exception as exc:
        raise ConversionError(f"onnx2torch failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


def _batch_fallback(module: torch.nn.Module, graph: onnx.ModelProto, input_name: str, fixed: int,
                    passes: list[str], original, freeing: int) -> torch.nn.Module:
    """The module itself if it runs on any batch size; else the original graph evaluated ``fixed``
    images at a time.

    ``graph`` is the graph with the batch freed, ``original()`` converts the graph before that
    pass. A freed graph that fails on other batch sizes, or runs on them with different results
    (a Reshape whose input does not start with the batch, as in torch's multi-head attention,
    which keeps tokens first: its freed target copies the wrong dimension), is not used at all:
    the original graph at its own batch size is the exported one. ``passes[freeing]`` is the
    pass list's entry for the freeing."""
    dims = next((tuple(d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim)
                 for v in graph.graph.input if v.name == input_name), ())
    if len(dims) < 2 or any(d is None for d in dims[1:]) or batch_independent(module, fixed, dims[1:]):
        return module
    module = original()
    passes[freeing] = f"kept the fixed batch size {fixed} (the graph does not run on other batch sizes once freed)"
    if not runs_on_batch(module, fixed, dims[1:]):
        raise ConversionError(f"the converted module runs on no batch size (the graph bakes in {fixed})")
    vectorized = vectorizes(module, fixed, dims[1:])
    message = (f"the graph bakes batch size {fixed} in beyond its input and Reshape targets: evaluating "
               f"{fixed} image(s) at a time, " + ("vectorized with torch.func.vmap" if vectorized else
                                                  "in a loop (correct but slower)"))
    logging.getLogger(__name__).warning(message)
    passes.append(message)
    return FixedBatchModule(module, fixed, vectorized)
