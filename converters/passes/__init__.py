"""ONNX graph rewrites run before onnx2torch, in the order of :data:`PASSES` (the only place that
order is written).

Each step takes the graph and the :class:`Target` (image input, score output) and returns the
graph (the same object when nothing changed) and a line for the report's ``conversion_passes``,
or None. ``converters.to_torch`` runs them in this order, then onnx2torch.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import onnx

from ..errors import UnsupportedOperatorError
from ..support import unsupported_nodes
from .constant_aliases import read_weights_directly
from .explicit_padding import make_padding_explicit
from .float32 import widen_float16
from .fold_constants import fold_constants
from .observed_ranks import record_observed_ranks
from .opset import convertible_opset
from .reshape_allowzero import drop_reshape_allowzero
from .shape_targets import fold_shape_targets
from .static_batch import fixed_batch_size, free_batch_dimension
from .subgraph import keep_score_path


@dataclass(frozen=True)
class Target:
    """The path the converted module computes: image input -> class scores."""

    input_name: str
    output_name: str


Step = Callable[[onnx.ModelProto, Target], "tuple[onnx.ModelProto, str | None]"]


def _keep_score_path(graph: onnx.ModelProto, target: Target) -> tuple[onnx.ModelProto, str | None]:
    kept = keep_score_path(graph, target.input_name, target.output_name)
    return kept, (f"kept only the path to output {target.output_name!r}" if kept is not graph else None)


def _widen_float16(graph: onnx.ModelProto, target: Target) -> tuple[onnx.ModelProto, str | None]:
    graph, widened = widen_float16(graph)
    return graph, ("converted the float16 graph to float32 for torch (onnxruntime runs the float16 original)"
                   if widened else None)


def _read_weights_directly(graph: onnx.ModelProto, target: Target) -> tuple[onnx.ModelProto, str | None]:
    graph, aliased = read_weights_directly(graph)
    return graph, (f"read {aliased} weight(s) directly instead of through Identity nodes" if aliased else None)


def _drop_reshape_allowzero(graph: onnx.ModelProto, target: Target) -> tuple[onnx.ModelProto, str | None]:
    graph, changed = drop_reshape_allowzero(graph)
    return graph, (f"dropped allowzero=1 from {changed} Reshape node(s)" if changed else None)


def _free_batch_dimension(graph: onnx.ModelProto, target: Target) -> tuple[onnx.ModelProto, str | None]:
    fixed = fixed_batch_size(graph, target.input_name)
    freed, reshapes = free_batch_dimension(graph, target.input_name)
    return freed, (f"freed the fixed batch size {fixed} (input and {reshapes} Reshape target(s))"
                   if fixed is not None else None)


def _make_padding_explicit(graph: onnx.ModelProto, target: Target) -> tuple[onnx.ModelProto, str | None]:
    graph, padded = make_padding_explicit(graph)
    return graph, (f"made the padding of {padded} convolution/pooling node(s) explicit" if padded else None)


def _convertible_opset(graph: onnx.ModelProto, target: Target) -> tuple[onnx.ModelProto, str | None]:
    graph, new_opset = convertible_opset(graph)
    return graph, (f"converted to opset {new_opset}" if new_opset is not None else None)


def _fold_constants(graph: onnx.ModelProto, target: Target) -> tuple[onnx.ModelProto, str | None]:
    graph, folded = fold_constants(graph)
    return graph, (f"computed {folded} node(s) on constants once, at conversion" if folded else None)


def _fold_shape_targets(graph: onnx.ModelProto, target: Target) -> tuple[onnx.ModelProto, str | None]:
    graph, targets = fold_shape_targets(graph)
    return graph, (f"made {targets} Reshape target(s) computed from shapes constant" if targets else None)


def _require_converters(graph: onnx.ModelProto, target: Target) -> tuple[onnx.ModelProto, str | None]:
    missing = unsupported_nodes(graph)
    if missing:
        first = missing[0]
        more = f" (and {len(missing) - 1} more unsupported node(s))" if len(missing) > 1 else ""
        raise UnsupportedOperatorError(
            f"no torch converter for {first.describe()}{more}; no opset between 11 and 17 covers it either. "
            "Re-export the model without this operator, or register a converter in converters/")
    return graph, None


def _record_observed_ranks(graph: onnx.ModelProto, target: Target) -> tuple[onnx.ModelProto, str | None]:
    graph, observed = record_observed_ranks(graph)
    return graph, (f"recorded the observed rank of {observed} tensor(s) that shape inference left shapeless"
                   if observed else None)


# (name, step), in the order they run
PASSES: list[tuple[str, Step]] = [
    ("keep_score_path", _keep_score_path),                  # drop side outputs (labels, ZipMap, aux heads)
    ("widen_float16", _widen_float16),                      # a float16 graph becomes its float32 twin
    ("read_weights_directly", _read_weights_directly),      # weights read through Identity nodes
    # before freeing the batch: a Reshape target [1, K] with allowzero=1 is moot, [0, K] is not
    ("drop_reshape_allowzero", _drop_reshape_allowzero),    # allowzero=1 (dynamo exporter) where moot
    ("free_batch_dimension", _free_batch_dimension),        # a batch baked into input and Reshapes
    ("make_padding_explicit", _make_padding_explicit),      # auto_pad SAME_*, asymmetric AveragePool pads
    ("convertible_opset", _convertible_opset),              # an opset onnx2torch covers, if it lacks the model's
    ("fold_constants", _fold_constants),                    # bookkeeping on constants computed once
    ("fold_shape_targets", _fold_shape_targets),            # Reshape targets computed from shapes made constant
    ("require_converters", _require_converters),            # the gate: every node has a converter
    ("record_observed_ranks", _record_observed_ranks),      # ranks of shapeless tensors, from one evaluation
]

# the pass whose graph ``to_torch`` falls back from when the freed batch does not run
FREE_BATCH = "free_batch_dimension"


def run_passes(graph: onnx.ModelProto, target: Target,
               steps: list[tuple[str, Step]]) -> tuple[onnx.ModelProto, list[str]]:
    """Run ``steps`` in order; returns the graph and the report lines of the steps that changed it."""
    lines = []
    for _, step in steps:
        graph, line = step(graph, target)
        if line is not None:
            lines.append(line)
    return graph, lines
