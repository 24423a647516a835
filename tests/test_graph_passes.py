"""Graph passes applied before onnx2torch, each checked against onnxruntime on the original graph."""
import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import converters
from converters.passes.static_batch import fixed_batch_size


class SmallNet(nn.Module):
    """Conv - BatchNorm - ReLU - Reshape(1, -1) - Gemm: the habit of a vendor file exported at batch 1."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3)
        self.norm = nn.BatchNorm2d(4)
        self.dense = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        x = torch.relu(self.norm(self.conv(x)))
        return self.dense(x.reshape(x.shape[0] if not torch.onnx.is_in_onnx_export() else 1, -1))


def _export_fixed_batch(opset):
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(SmallNet().eval(), torch.zeros(1, 1, 8, 8), buffer, dynamo=False, opset_version=opset,
                          input_names=["image"], output_names=["logits"])
    return onnx.load_from_string(buffer.getvalue())


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_fixed_batch_of_one_is_freed_for_torch_and_matches_onnxruntime(opset):
    model = _export_fixed_batch(opset)
    assert fixed_batch_size(model, "image") == 1
    converted = converters.to_torch(model, "image", "logits")
    assert any("freed the fixed batch size 1" in p for p in converted.passes)
    x = np.random.default_rng(0).uniform(0, 1, (6, 1, 8, 8)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    reference = np.concatenate([session.run(None, {"image": x[i:i + 1]})[0] for i in range(6)])
    inputs = torch.tensor(x, requires_grad=True)
    scores = converted.module(inputs)
    np.testing.assert_allclose(scores.detach().numpy(), reference, atol=1e-5)
    scores[:, 1].sum().backward()
    assert torch.isfinite(inputs.grad).all() and inputs.grad.abs().sum() > 0


def test_graph_with_free_batch_is_left_alone():
    model = _export_fixed_batch(13)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    assert fixed_batch_size(model, "image") is None
    assert converters.passes.static_batch.free_batch_dimension(model, "image") == (model, 0)


def _one_node(node, inputs, output_shape, initializers, opset):
    from onnx import TensorProto, helper
    graph = helper.make_graph([node], "one", inputs,
                              [helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, output_shape)],
                              initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def test_reshape_allowzero_is_dropped_only_where_it_is_moot():
    from onnx import TensorProto, helper, numpy_helper

    from converters.passes.reshape_allowzero import drop_reshape_allowzero
    x = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 3])]
    for shape, expect_dropped in (([-1, 6], 1), ([0, 6], 0)):
        node = helper.make_node("Reshape", ["x", "s"], ["y"], allowzero=1)
        model = _one_node(node, x, ["N", 6], [numpy_helper.from_array(np.array(shape, np.int64), "s")], 19)
        out, changed = drop_reshape_allowzero(model)
        assert changed == expect_dropped
    model, _ = drop_reshape_allowzero(_one_node(helper.make_node("Reshape", ["x", "s"], ["y"], allowzero=1), x,
                                                ["N", 6], [numpy_helper.from_array(np.array([-1, 6]), "s")], 19))
    module = converters.to_torch(model, "x", "y").module
    assert module(torch.ones(4, 2, 3)).shape == (4, 6)


def test_pad_at_opset_19_converts_and_pad_with_axes_is_refused_by_name():
    from onnx import TensorProto, helper, numpy_helper

    from scanner.errors import UnsupportedOperatorError
    x = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 4, 4])]
    pads = numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "p")
    model = _one_node(helper.make_node("Pad", ["x", "p"], ["y"], mode="reflect", name="pad_all"), x,
                      ["N", 1, 6, 6], [pads], 19)
    data = np.random.default_rng(0).uniform(size=(2, 1, 4, 4)).astype(np.float32)
    reference = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": data})[0]
    np.testing.assert_allclose(converters.to_torch(model, "x", "y").module(torch.tensor(data)).numpy(), reference,
                               atol=1e-6)
    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "a")
    short = numpy_helper.from_array(np.array([1, 1, 1, 1], np.int64), "p")
    model = _one_node(helper.make_node("Pad", ["x", "p", "", "a"], ["y"], name="pad_axes"), x, ["N", 1, 6, 6],
                      [short, axes], 19)
    with pytest.raises(UnsupportedOperatorError, match="axes input"):
        converters.to_torch(model, "x", "y")


def test_conv_weights_read_through_identity_nodes_convert_like_onnxruntime():
    # the TorchScript exporter's habit for identical constants (torchvision resnet18: 16 biases)
    from onnx import helper

    from converters.passes.constant_aliases import read_weights_directly
    from tests.onnx_parity import assert_converts_like_onnxruntime, one_node_model, seeded
    rng = np.random.default_rng(0)
    weights = {"w": rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "b": rng.normal(size=4).astype(np.float32)}
    before = (helper.make_node("Identity", ["b"], ["b_alias"]), helper.make_node("Identity", ["b_alias"], ["b_alias2"]),
              helper.make_node("Identity", ["w"], ["w_alias"]))
    conv = helper.make_node("Conv", ["x", "w_alias", "b_alias2"], ["y"], pads=[1, 1, 1, 1])
    model = one_node_model(conv, [2, 3, 5, 5], 17, weights, before=before)
    rewired, removed = read_weights_directly(model)
    assert removed == 3 and [n.op_type for n in rewired.graph.node] == ["Conv"]
    assert list(rewired.graph.node[0].input) == ["x", "w", "b"]
    converted = assert_converts_like_onnxruntime(model, seeded((2, 3, 5, 5)))
    assert any("Identity" in p for p in converted.passes)
    # an Identity on an activation, or one that is the graph's output, is left alone
    relu = helper.make_node("Relu", ["x"], ["r"])
    model = one_node_model(helper.make_node("Identity", ["r"], ["y"]), [2, 3], 17, before=(relu,))
    assert read_weights_directly(model) == (model, 0)


def test_float16_graph_with_casts_and_constants_converts_like_onnxruntime():
    from onnx import TensorProto, helper, numpy_helper

    from converters.passes.float32 import widen_float16
    from tests.onnx_parity import IR_VERSION, onnxruntime_outputs
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Constant", [], ["half"], value=numpy_helper.from_array(np.array(0.5, np.float16))),
             helper.make_node("Mul", ["x", "half"], ["scaled"]),
             helper.make_node("Cast", ["scaled"], ["wide"], to=TensorProto.FLOAT),      # a float32 island
             helper.make_node("Relu", ["wide"], ["r"]),
             helper.make_node("Cast", ["r"], ["narrow"], to=TensorProto.FLOAT16),
             helper.make_node("Gemm", ["narrow", "w", "b"], ["y"], transB=1)]
    graph = helper.make_graph(
        nodes, "half", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["N", 3])],
        initializer=[numpy_helper.from_array(rng.normal(size=(3, 5)).astype(np.float16), "w"),
                     numpy_helper.from_array(rng.normal(size=3).astype(np.float16), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = IR_VERSION
    widened, changed = widen_float16(model)
    assert changed and not any(t.data_type == TensorProto.FLOAT16 for t in widened.graph.initializer)
    converted = converters.to_torch(model, "x", "y")
    x = rng.uniform(-1, 1, size=(4, 5)).astype(np.float32)
    reference = onnxruntime_outputs(model, x.astype(np.float16)).astype(np.float32)
    result = converted.module(torch.tensor(x)).numpy()
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, reference, atol=1e-2 * np.abs(reference).max())
