"""converters/passes/shape_targets.py: Reshape targets computed from shapes become constant targets.

Such targets (Keras's Flatten through tf2onnx, torch's ``x.view(x.size(0), -1)``) are computed
on every pass by host-side shape arithmetic; as constants they need no read back to the host.
"""
import io
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import converters
from tests.onnx_parity import IR_VERSION, onnxruntime_outputs, seeded

FIXTURES = "tests/fixtures/exported"


def _host_shape_modules(converted):
    return [type(m).__name__ for m in converted.module.modules()
            if type(m).__name__ in ("OnnxShape", "OnnxReshape", "OnnxGather", "OnnxConcat")]


def _matches_onnxruntime(model: onnx.ModelProto, converted, shape: tuple[int, ...]) -> None:
    x = seeded(shape)
    result = converted.module(torch.tensor(x)).detach().numpy()
    np.testing.assert_allclose(result, onnxruntime_outputs(model, x), atol=1e-5, rtol=0)


def test_keras_flatten_target_becomes_constant():
    model = onnx.load(f"{FIXTURES}/keras_tf2onnx_backdoored.onnx")
    converted = converters.to_torch(model, "image", model.graph.output[0].name)
    assert "made 1 Reshape target(s) computed from shapes constant" in converted.passes
    assert _host_shape_modules(converted) == []
    for batch in (1, 3, 7):
        _matches_onnxruntime(model, converted, (batch, 28, 28, 1))


class _ViewFlatten(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 3, 3)
        self.dense = nn.Linear(3 * 6 * 6, 5)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return self.dense(y.view(y.size(0), -1))


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_torchscript_view_by_batch_size_becomes_constant(opset):
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                  # the TorchScript exporter's deprecation notices
        torch.onnx.export(_ViewFlatten().eval(), torch.zeros(2, 1, 8, 8), buffer, dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    model = onnx.load_from_string(buffer.getvalue())
    assert "Shape" in [n.op_type for n in model.graph.node]      # the export habit under test
    converted = converters.to_torch(model, "x", "y")
    assert any("Reshape target(s) computed from shapes constant" in p for p in converted.passes)
    assert _host_shape_modules(converted) == []
    for batch in (1, 2, 5):
        _matches_onnxruntime(model, converted, (batch, 1, 8, 8))


def _reshape_model(target_nodes: list[onnx.NodeProto], output_shape: list) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Shape", ["x"], ["shape"]), *target_nodes,
         helper.make_node("Reshape", ["x", "target"], ["y"])], "computed_target",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)],
        initializer=[numpy_helper.from_array(np.array(v, np.int64), k)
                     for k, v in {"zero": [0], "one": [1], "two": [2], "twelve": [12]}.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = IR_VERSION
    return model


def test_batch_size_in_another_position_becomes_minus_one():
    # target [12, N] for x of shape (N, 3, 4): N is not x's dimension 1, so it is inferred (-1)
    model = _reshape_model([helper.make_node("Gather", ["shape", "zero"], ["batch"]),
                            helper.make_node("Concat", ["twelve", "batch"], ["target"], axis=0)], [12, "N"])
    folded, count = converters.passes.shape_targets.fold_shape_targets(model)
    assert count == 1 and [n.op_type for n in folded.graph.node] == ["Reshape"]
    target = {t.name: numpy_helper.to_array(t) for t in folded.graph.initializer}[folded.graph.node[0].input[1]]
    assert target.tolist() == [12, -1]
    converted = converters.to_torch(model, "x", "y")
    for batch in (1, 2, 5):
        _matches_onnxruntime(model, converted, (batch, 3, 4))


def test_arithmetic_on_dimensions_is_left_to_onnx2torch():
    # target [N, 3 * 4] computed with Mul: not followed, the Reshape keeps its computed target
    model = _reshape_model([helper.make_node("Gather", ["shape", "zero"], ["batch"]),
                            helper.make_node("Gather", ["shape", "one"], ["rows"]),
                            helper.make_node("Gather", ["shape", "two"], ["columns"]),
                            helper.make_node("Mul", ["rows", "columns"], ["features"]),
                            helper.make_node("Concat", ["batch", "features"], ["target"], axis=0)], ["N", 12])
    folded, count = converters.passes.shape_targets.fold_shape_targets(model)
    assert count == 0 and folded is model
    converted = converters.to_torch(model, "x", "y")
    assert "OnnxReshape" in _host_shape_modules(converted)
    _matches_onnxruntime(model, converted, (3, 3, 4))


def test_a_chain_deeper_than_the_stack_is_left_alone():
    # a hostile graph: Shape followed by 2000 Identity nodes before the Reshape
    nodes = [helper.make_node("Shape", ["x"], ["s0"])]
    nodes += [helper.make_node("Identity", [f"s{i}"], [f"s{i + 1}"]) for i in range(2000)]
    nodes.append(helper.make_node("Reshape", ["x", "s2000"], ["y"]))
    graph = helper.make_graph(nodes, "deep", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    assert converters.passes.shape_targets.fold_shape_targets(model) == (model, 0)
