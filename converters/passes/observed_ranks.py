"""Graph pass: record the rank of tensors that shape inference leaves without a shape.

Shape inference cannot follow a Reshape to a shape computed at run time (a GroupNorm that the
TorchScript exporter decomposes into Reshape, InstanceNormalization and a Reshape back to
``Shape(x)``, at opsets 11-13), and every tensor after it has no recorded shape. Several
onnx2torch converters choose their torch module by the input's rank (MaxPool, AveragePool,
BatchNormalization, InstanceNormalization) and refuse a node whose rank is unknown ("spatial
rank == -2"). Here the graph is evaluated once with onnx's reference evaluator on one probe
image, and each shapeless tensor gets a value_info entry with the observed element type and rank
(every dimension symbolic: only the rank is asserted). The graph's computation is unchanged, and
the converted module must still match onnxruntime on the clean images.
"""
from __future__ import annotations

from typing import Any, cast

import numpy as np
import onnx
from onnx import helper

_PROBE_SEED = 0


def _probe_input(model: onnx.ModelProto) -> tuple[str, np.ndarray] | None:
    initializers = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    if len(inputs) != 1:
        return None
    dims = []
    for position, dim in enumerate(inputs[0].type.tensor_type.shape.dim):
        if dim.HasField("dim_value") and dim.dim_value > 0:
            dims.append(dim.dim_value)
        elif position == 0:
            dims.append(1)                     # a symbolic batch: one probe image
        else:
            return None                        # a symbolic image size: nothing to probe with
    elem = helper.tensor_dtype_to_np_dtype(inputs[0].type.tensor_type.elem_type)
    return inputs[0].name, np.random.default_rng(_PROBE_SEED).uniform(size=dims).astype(elem)


def record_observed_ranks(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """``model`` with value_info for the tensors inference leaves shapeless; returns (model, count)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - onnx2torch runs its own inference; nothing to add here
        return model, 0
    known = {v.name for v in list(inferred.graph.value_info) + list(inferred.graph.output)
             if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")}
    known |= {t.name for t in inferred.graph.initializer} | {v.name for v in inferred.graph.input}
    shapeless = [o for n in inferred.graph.node for o in n.output if o and o not in known]
    if not shapeless:
        return model, 0
    probe = _probe_input(inferred)
    if probe is None:
        return model, 0
    try:
        from onnx.reference import ReferenceEvaluator
        # intermediate=True: a dict of every named value (a list only without it)
        values = cast(dict[str, Any], ReferenceEvaluator(inferred).run(None, {probe[0]: probe[1]},
                                                                        intermediate=True))
    except Exception:  # noqa: BLE001 - an op the reference evaluator lacks: leave the graph as it was
        return model, 0
    entries = {v.name: v for v in inferred.graph.value_info}
    recorded = 0
    for name in shapeless:
        value = values.get(name)
        if not isinstance(value, np.ndarray) or value.dtype == object:
            continue
        try:
            elem = helper.np_dtype_to_tensor_dtype(value.dtype)
        except Exception:  # noqa: BLE001 - a dtype ONNX has no tensor type for
            continue
        entries[name] = helper.make_tensor_value_info(name, elem, [f"{name}__dim{i}" for i in range(value.ndim)])
        recorded += 1
    del inferred.graph.value_info[:]
    inferred.graph.value_info.extend(entries.values())
    return inferred, recorded
