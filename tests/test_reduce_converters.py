"""converters/ops/reduce_axes_input.py: Reduce* of opset 18+ (axes as an input) against onnxruntime."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import converters
from converters.ops.reduce_axes_input import REDUCTIONS
from scanner.errors import UnsupportedOperatorError
from tests.onnx_parity import assert_converts_like_onnxruntime, one_node_model, seeded


@pytest.mark.parametrize("op", sorted(REDUCTIONS))
@pytest.mark.parametrize("axes, keepdims", [([2, 3], 1), ([-1, -2], 0), ([1], 0)])
def test_reduce_with_constant_axes_matches(op, axes, keepdims):
    node = helper.make_node(op, ["x", "axes"], ["y"], keepdims=keepdims)
    model = one_node_model(node, ["N", 3, 4, 5], 18, {"axes": np.array(axes, np.int64)})
    x = seeded((2, 3, 4, 5))
    if op in ("ReduceLogSum", "ReduceL2", "ReduceProd"):
        x = np.abs(x) + 0.5  # away from log(0), sqrt'(0) and zero products
    assert_converts_like_onnxruntime(model, x, atol=1e-4)


def test_reduce_mean_without_axes_reduces_everything():
    node = helper.make_node("ReduceMean", ["x"], ["y"], keepdims=0)
    assert_converts_like_onnxruntime(one_node_model(node, ["N", 3, 4], 18), seeded((2, 3, 4)))


@pytest.mark.parametrize("opset", [18, 20])
def test_reduce_max_at_opsets_18_and_20(opset):
    node = helper.make_node("ReduceMax", ["x", "axes"], ["y"], keepdims=1)
    model = one_node_model(node, ["N", 3, 4, 4], opset, {"axes": np.array([2, 3], np.int64)})
    assert_converts_like_onnxruntime(model, seeded((2, 3, 4, 4)))


def test_computed_axes_are_refused_by_node_name():
    # axes = Shape(x)[1:2] - 2 = [1]: computed from the input, so not known at conversion
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Slice", ["shape", "start", "end"], ["width"]),
             helper.make_node("Sub", ["width", "two"], ["axes"]),
             helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="computed_axes")]
    graph = helper.make_graph(nodes, "computed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
                              initializer=[numpy_helper.from_array(np.array([v], np.int64), k)
                                           for k, v in {"start": 1, "end": 2, "two": 2}.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    with pytest.raises(UnsupportedOperatorError, match="computed_axes"):
        converters.to_torch(model, "x", "y")


def test_axes_computed_from_constants_only_convert():
    # Identity(Constant): computed in the graph, but from constants only (fold_constants.py)
    nodes = [helper.make_node("Constant", [], ["one"], value_ints=[1]),
             helper.make_node("Identity", ["one"], ["axes"]),
             helper.make_node("ReduceMean", ["x", "axes"], ["y"], name="constant_axes")]
    graph = helper.make_graph(nodes, "constant", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    assert_converts_like_onnxruntime(model, seeded((2, 3)))
