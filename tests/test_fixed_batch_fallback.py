"""converters/fixed_batch.py: a batch size baked in where the free-batch pass cannot reach it."""
import logging

import numpy as np
import torch
from onnx import TensorProto, helper, numpy_helper

import converters
from tests.onnx_parity import IR_VERSION, onnxruntime_outputs


def _hidden_fixed_batch_model(batch: int):
    """x (batch, 2, 3) -> Reshape to Concat([batch], [6]) -> Gemm: the target is not one constant."""
    weight = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    nodes = [helper.make_node("Concat", ["n", "k"], ["shape"], axis=0, name="assemble_shape"),
             helper.make_node("Reshape", ["x", "shape"], ["flat"], name="reshape"),
             helper.make_node("Gemm", ["flat", "w"], ["scores"], name="dense")]
    graph = helper.make_graph(
        nodes, "hidden_batch", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 2, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, 4])],
        initializer=[numpy_helper.from_array(np.array([batch], np.int64), "n"),
                     numpy_helper.from_array(np.array([6], np.int64), "k"),
                     numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = IR_VERSION
    return model


def test_hidden_fixed_batch_falls_back_to_chunks_with_a_warning(caplog):
    model = _hidden_fixed_batch_model(2)
    with caplog.at_level(logging.WARNING, logger="converters"):
        converted = converters.to_torch(model, "x", "scores")
    assert any("2 image(s) at a time" in step for step in converted.passes)
    assert "at a time" in caplog.text
    x = np.random.default_rng(1).uniform(size=(5, 2, 3)).astype(np.float32)
    padded = np.concatenate([x, x[-1:]])
    reference = np.concatenate([onnxruntime_outputs(model, padded[i:i + 2]) for i in range(0, 6, 2)])[:5]
    inputs = torch.tensor(x, requires_grad=True)
    scores = converted.module(inputs)
    np.testing.assert_allclose(scores.detach().numpy(), reference, atol=1e-5)
    scores[:, 0].sum().backward()
    assert torch.isfinite(inputs.grad).all() and inputs.grad.abs().sum() > 0


def test_batch_of_one_that_the_pass_frees_needs_no_fallback():
    model = _hidden_fixed_batch_model(1)
    model.graph.node[1].input[1] = "constant_shape"
    model.graph.initializer.append(numpy_helper.from_array(np.array([1, 6], np.int64), "constant_shape"))
    converted = converters.to_torch(model, "x", "scores")
    assert not any("at a time" in step for step in converted.passes)
    assert converted.module(torch.zeros(3, 2, 3)).shape == (3, 4)


def test_a_freeing_that_breaks_the_graph_falls_back_to_the_original_at_its_batch_size():
    # (1, 2, 3) -> Transpose -> (2, 1, 3) -> Reshape [1, 6]: the target starts with the batch size,
    # but the Reshape's input does not start with the batch (torch's multi-head attention keeps
    # tokens first), so the freed target [0, 6] would copy the 2 and fail on every batch
    weight = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    nodes = [helper.make_node("Transpose", ["x"], ["tokens_first"], perm=[1, 0, 2]),
             helper.make_node("Reshape", ["tokens_first", "shape"], ["flat"]),
             helper.make_node("Gemm", ["flat", "w"], ["scores"])]
    graph = helper.make_graph(
        nodes, "tokens_first", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 4])],
        initializer=[numpy_helper.from_array(np.array([1, 6], np.int64), "shape"),
                     numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = IR_VERSION
    converted = converters.to_torch(model, "x", "scores")
    assert any(step.startswith("kept the fixed batch size 1") for step in converted.passes)
    assert any("1 image(s) at a time" in step for step in converted.passes)
    x = np.random.default_rng(1).uniform(size=(3, 2, 3)).astype(np.float32)
    reference = np.concatenate([onnxruntime_outputs(model, x[i:i + 1]) for i in range(3)])
    np.testing.assert_allclose(converted.module(torch.tensor(x)).numpy(), reference, atol=1e-5)


def test_fixed_batch_evaluation_is_vectorized_only_where_vmap_gives_the_loops_values():
    from converters.fixed_batch import FixedBatchModule, vectorizes

    class BakedPair(torch.nn.Module):           # accepts exactly 2 inputs, like a graph with 2 baked in
        def forward(self, x):
            return torch.reshape(x, (2, 6)) @ torch.ones(6, 3) * torch.arange(1.0, 4.0)

    class DataDependent(BakedPair):             # reads a value on the host: vmap cannot batch that
        def forward(self, x):
            return super().forward(x) * (2.0 if float(x.detach().sum()) > 0 else 1.0)

    x = torch.rand(5, 2, 3)
    loop = FixedBatchModule(BakedPair(), 2)(x)
    assert vectorizes(BakedPair(), 2, (2, 3))
    np.testing.assert_allclose(FixedBatchModule(BakedPair(), 2, vectorized=True)(x).numpy(), loop.numpy(), rtol=1e-6)
    assert loop.shape == (5, 3)
    assert not vectorizes(DataDependent(), 2, (2, 3))
