"""Helpers for converter tests: one-node ONNX models and a torch-vs-onnxruntime parity check."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

import converters

IR_VERSION = 8  # onnxruntime 1.31 reads IR <= 13; onnx 1.23 writes 14 (onnxruntime #23602)


def one_node_model(node: onnx.NodeProto, input_shape: list, opset: int,
                   initializers: dict[str, np.ndarray] | None = None,
                   before: tuple[onnx.NodeProto, ...] = ()) -> onnx.ModelProto:
    """A graph holding ``node`` (after the helper nodes ``before``): input 'x' (float32,
    ``input_shape``), output node.output[0] with its inferred shape."""
    graph = helper.make_graph(
        [*before, node], "one_node",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(v, k) for k, v in (initializers or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="lred-tests")
    model.ir_version = IR_VERSION
    model = onnx.shape_inference.infer_shapes(model)  # fills in the output's shape
    onnx.checker.check_model(model)
    return model


def onnxruntime_outputs(model: onnx.ModelProto, x: np.ndarray, output: str | None = None) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = output or session.get_outputs()[0].name
    return session.run([name], {session.get_inputs()[0].name: x})[0]


def assert_converts_like_onnxruntime(model: onnx.ModelProto, x: np.ndarray, atol: float = 1e-5,
                                     output: str | None = None) -> converters.ConvertedModel:
    """Convert ``model``; its output on ``x`` must match onnxruntime's on the ORIGINAL graph within
    ``atol`` and the gradient of a seeded weighted sum of the output with respect to ``x`` must be finite
    and non-zero."""
    output = output or model.graph.output[0].name
    converted = converters.to_torch(model, model.graph.input[0].name, output)
    reference = onnxruntime_outputs(model, x, output)
    inputs = torch.tensor(x, requires_grad=True)
    result = converted.module(inputs)
    np.testing.assert_allclose(result.detach().numpy(), reference, atol=atol, rtol=0)
    weights = torch.from_numpy(seeded(tuple(result.shape), seed=7))  # not a plain sum: softmax rows sum to 1
    (gradient,) = torch.autograd.grad((result * weights).sum(), inputs)
    assert torch.isfinite(gradient).all() and float(gradient.abs().max()) > 1e-6
    return converted


def seeded(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, shape).astype(np.float32)
