"""converters/passes/explicit_padding.py and converters/ops/pooling.py: one-node models against onnxruntime.

Habits covered: auto_pad SAME_UPPER/SAME_LOWER (jax2onnx), asymmetric AveragePool pads (Keras
padding="same" through tf2onnx), AveragePool at opsets 19/22, GlobalMaxPool.
"""
import pytest
from onnx import helper

import converters
from converters.passes.explicit_padding import make_padding_explicit
from scanner.errors import UnsupportedOperatorError
from tests.onnx_parity import assert_converts_like_onnxruntime, one_node_model, seeded


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize("size, stride", [(7, 1), (7, 2), (8, 2)])
def test_conv_with_same_auto_pad_becomes_explicit_and_matches(auto_pad, size, stride):
    weight = seeded((3, 2, 3, 3), seed=1)
    node = helper.make_node("Conv", ["x", "w"], ["y"], auto_pad=auto_pad, strides=[stride, stride], name="conv")
    model = one_node_model(node, ["N", 2, size, size], 17, {"w": weight})
    rewritten, count = make_padding_explicit(model)
    assert count == 1 and not any(a.name == "auto_pad" for a in rewritten.graph.node[0].attribute)
    assert_converts_like_onnxruntime(model, seeded((2, 2, size, size)))


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
def test_pooling_with_same_auto_pad_matches(op, auto_pad):
    node = helper.make_node(op, ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2], auto_pad=auto_pad, name="pool")
    assert_converts_like_onnxruntime(one_node_model(node, ["N", 3, 7, 7], 13), seeded((2, 3, 7, 7)))


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("pads, stride", [([0, 0, 1, 1], 1), ([1, 0, 0, 1], 2), ([0, 1, 1, 2], 1)])
def test_average_pool_with_asymmetric_pads_is_split_and_matches(count_include_pad, pads, stride):
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 3], strides=[stride, stride], pads=pads,
                            count_include_pad=count_include_pad, name="keras_same_pool")
    model = one_node_model(node, ["N", 2, 6, 5], 13)
    converted = assert_converts_like_onnxruntime(model, seeded((3, 2, 6, 5)))
    assert any("padding" in step for step in converted.passes)


def test_symmetric_padding_is_left_alone():
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    model = one_node_model(node, ["N", 1, 5, 5], 13)
    assert make_padding_explicit(model) == (model, 0)


@pytest.mark.parametrize("opset", [19, 22])
def test_average_pool_at_new_opsets_converts(opset):
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2], dilations=[1, 1])
    assert_converts_like_onnxruntime(one_node_model(node, ["N", 2, 6, 6], opset), seeded((2, 2, 6, 6)))


def test_dilated_average_pool_is_refused_by_node_name():
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 2], name="dilated")
    with pytest.raises(UnsupportedOperatorError, match="dilated"):
        converters.to_torch(one_node_model(node, ["N", 1, 6, 6], 19), "x", "y")


@pytest.mark.parametrize("opset", [13, 22])
def test_global_max_pool_converts(opset):
    node = helper.make_node("GlobalMaxPool", ["x"], ["y"])
    assert_converts_like_onnxruntime(one_node_model(node, ["N", 4, 5, 5], opset), seeded((2, 4, 5, 5)))


def test_refused_average_pool_is_named_with_opset_and_node():
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], pads=[0, 0, 1, 1], ceil_mode=1,
                            name="ceil_pool")
    with pytest.raises(UnsupportedOperatorError) as error:
        converters.to_torch(one_node_model(node, ["N", 1, 5, 5], 13), "x", "y")
    assert "AveragePool (opset 13) at node 'ceil_pool'" in str(error.value)
    assert "non symmetrical padding" in str(error.value)
