"""``to_torch``: the graph passes, then onnx2torch with our converters (see the package docstring)."""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import onnx
import torch

from . import ops  # noqa: F401  (importing it registers our converters with onnx2torch)
from .diagnose import describe_refusal
from .errors import ConversionError, UnsupportedOperatorError
from .fixed_batch import FixedBatchModule, batch_independent, runs_on_batch, vectorizes
from .parity import Parity, compare_scores
from .passes import FREE_BATCH, PASSES, Target, run_passes
from .passes.float32 import parity_rtol
from .passes.static_batch import fixed_batch_size
from .support import UnsupportedNode, unsupported_nodes

__all__ = ["ConvertedModel", "Parity", "UnsupportedNode", "compare_scores", "parity_rtol", "to_torch",
           "unsupported_nodes"]


@dataclass(frozen=True, eq=False)
class ConvertedModel:
    """A frozen torch module computing the class scores, and the graph passes that were applied."""

    module: torch.nn.Module
    passes: tuple[str, ...]


def to_torch(model: onnx.ModelProto, input_name: str, output_name: str) -> ConvertedModel:
    """Convert the path input -> class scores of ``model`` into a frozen torch module.

    Runs ``passes.PASSES`` in order, then onnx2torch. When the pass that frees a fixed batch size
    leaves a graph that does not run on other batch sizes, the passes after it are run again on
    the graph it received (see ``_batch_fallback``)."""
    target = Target(input_name, output_name)
    split = [name for name, _ in PASSES].index(FREE_BATCH)
    unfreed, passes = run_passes(model, target, PASSES[:split])
    freed, freeing = run_passes(unfreed, target, PASSES[split:split + 1])
    passes += freeing
    freeing_index = len(passes) - 1
    graph, later = run_passes(freed, target, PASSES[split + 1:])
    passes += later
    module = _onnx2torch(graph)
    fixed = fixed_batch_size(unfreed, input_name)
    if fixed is not None:
        module = _batch_fallback(module, freed, input_name, fixed, passes,
                                 original=lambda: _onnx2torch(run_passes(unfreed, target, PASSES[split + 1:])[0]),
                                 freeing=freeing_index)
    return ConvertedModel(module, tuple(passes))


def _onnx2torch(graph: onnx.ModelProto) -> torch.nn.Module:
    """onnx2torch on a graph every pass has run on; the module comes back frozen, in eval mode."""
    from onnx2torch import convert

    try:
        module = convert(graph)
    except NotImplementedError as exc:
        raise UnsupportedOperatorError(describe_refusal(graph, exc)) from exc
    except Exception as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        raise ConversionError(f"onnx2torch failed: {type(exc).__name__}: {first_line}") from exc
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


def _batch_fallback(module: torch.nn.Module, graph: onnx.ModelProto, input_name: str, fixed: int,
                    passes: list[str], original: Callable[[], torch.nn.Module], freeing: int) -> torch.nn.Module:
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
    sample = tuple(d for d in dims[1:] if d is not None)   # the image shape, when every axis is known
    if len(dims) < 2 or len(sample) < len(dims) - 1 or batch_independent(module, fixed, sample):
        return module
    module = original()
    passes[freeing] = f"kept the fixed batch size {fixed} (the graph does not run on other batch sizes once freed)"
    if not runs_on_batch(module, fixed, sample):
        raise ConversionError(f"the converted module runs on no batch size (the graph bakes in {fixed})")
    vectorized = vectorizes(module, fixed, sample)
    message = (f"the graph bakes batch size {fixed} in beyond its input and Reshape targets: evaluating "
               f"{fixed} image(s) at a time, " + ("vectorized with torch.func.vmap" if vectorized else
                                                  "in a loop (correct but slower)"))
    logging.getLogger(__name__).warning(message)
    passes.append(message)
    return FixedBatchModule(module, fixed, vectorized)
