"""converters/ops/opset18_ops.py: Split 18, Resize 18/19, Mish 18 and LayerNormalization against onnxruntime."""
import numpy as np
import pytest
from onnx import TensorProto, helper

import converters
from scanner.errors import UnsupportedOperatorError
from tests.onnx_parity import IR_VERSION, assert_converts_like_onnxruntime, one_node_model, seeded


def _split_then_concat(split_node, input_shape, opset, initializers=None):
    """Split, then the pieces concatenated in reverse (every piece reaches the output)."""
    concat = helper.make_node("Concat", list(reversed(split_node.output)), ["y"], axis=1)
    graph = helper.make_graph(
        [split_node, concat], "split", [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[helper.make_tensor(k, TensorProto.INT64, v.shape, v) for k, v in (initializers or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = IR_VERSION
    return model


@pytest.mark.parametrize("channels, pieces", [(6, 2), (6, 3), (7, 3)])   # 7 / 3: pieces of 3, 3, 1
def test_split_18_with_num_outputs(channels, pieces):
    node = helper.make_node("Split", ["x"], [f"p{i}" for i in range(pieces)], axis=1, num_outputs=pieces)
    assert_converts_like_onnxruntime(_split_then_concat(node, ["N", channels, 2], 18), seeded((2, channels, 2)))


def test_split_18_with_a_split_input():
    node = helper.make_node("Split", ["x", "sizes"], ["a", "b"], axis=1)
    model = _split_then_concat(node, ["N", 5, 2], 18, {"sizes": np.array([2, 3], np.int64)})
    assert_converts_like_onnxruntime(model, seeded((2, 5, 2)))


@pytest.mark.parametrize("opset", [18, 19])
@pytest.mark.parametrize("attributes", [dict(mode="nearest", coordinate_transformation_mode="asymmetric",
                                             nearest_mode="floor"),
                                        dict(mode="linear", coordinate_transformation_mode="half_pixel")])
def test_resize_18_and_19_without_new_options(opset, attributes):
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], **attributes)
    model = one_node_model(node, ["N", 2, 4, 4], opset, {"scales": np.array([1, 1, 2, 2], np.float32)})
    assert_converts_like_onnxruntime(model, seeded((2, 2, 4, 4)))


def test_resize_with_antialias_is_refused_by_node_name():
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="linear", antialias=1, name="smooth")
    model = one_node_model(node, ["N", 2, 4, 4], 18, {"scales": np.array([1, 1, 0.5, 0.5], np.float32)})
    with pytest.raises(UnsupportedOperatorError, match="smooth.*antialias"):
        converters.to_torch(model, "x", "y")


def test_mish_18():
    assert_converts_like_onnxruntime(one_node_model(helper.make_node("Mish", ["x"], ["y"]), ["N", 5], 18),
                                     seeded((3, 5)) * 4)


@pytest.mark.parametrize("scale_shape", [(4,), (1,)])        # (1,): broadcast over the normalized axis
def test_layer_normalization_with_an_unknown_token_count(scale_shape):
    # onnx2torch's own converter sized nn.LayerNorm from the inferred input shape, in which an
    # unknown dimension is 0, and then failed on every input
    rng = np.random.default_rng(0)
    weights = {"scale": rng.normal(size=scale_shape).astype(np.float32),
               "bias": rng.normal(size=scale_shape).astype(np.float32)}
    node = helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["y"], axis=-1, epsilon=1e-5)
    model = one_node_model(node, ["N", "T", 4], 17, weights)
    assert_converts_like_onnxruntime(model, seeded((2, 3, 4)), atol=1e-4)


def test_layer_normalization_over_two_axes():
    rng = np.random.default_rng(1)
    weights = {"scale": rng.normal(size=(3, 4)).astype(np.float32)}
    node = helper.make_node("LayerNormalization", ["x", "scale"], ["y"], axis=1)
    assert_converts_like_onnxruntime(one_node_model(node, ["N", 3, 4], 17, weights), seeded((2, 3, 4)), atol=1e-4)
