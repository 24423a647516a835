"""converters/ops/constant_reshape.py: a Reshape to a constant target holds it as ints, not a tensor.

onnx2torch's own Reshape reads its target tensor on every pass (on a GPU: a read back to the
host, which also keeps the pass from being captured as a CUDA graph).
"""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from converters.ops.constant_reshape import ConstantReshape
from tests.onnx_parity import IR_VERSION, assert_converts_like_onnxruntime, one_node_model, seeded


def _reshapes(converted):
    return [m for m in converted.module.modules() if type(m).__name__ in ("ConstantReshape", "OnnxReshape")]


@pytest.mark.parametrize("opset", [11, 13, 14, 19])
@pytest.mark.parametrize("target", [[0, -1], [-1, 12], [0, 3, 0, 2, 2], [0, 0, 16]])
def test_constant_target_matches_onnxruntime_and_is_held_as_ints(opset, target):
    model = one_node_model(helper.make_node("Reshape", ["x", "shape"], ["y"]), ["N", 3, 4, 4], opset,
                           {"shape": np.array(target, np.int64)})
    converted = assert_converts_like_onnxruntime(model, seeded((2, 3, 4, 4)))
    (reshape,) = _reshapes(converted)
    assert isinstance(reshape, ConstantReshape) and reshape.shape == tuple(target)


def test_constant_node_target_is_held_as_ints_too():
    constant = helper.make_node("Constant", [], ["shape"],
                                value=helper.make_tensor("v", 7, [2], [0, -1]))
    model = one_node_model(helper.make_node("Reshape", ["x", "shape"], ["y"]), ["N", 3, 4, 4], 13,
                           before=(constant,))
    converted = assert_converts_like_onnxruntime(model, seeded((2, 3, 4, 4)))
    assert [type(m) for m in _reshapes(converted)] == [ConstantReshape]


def test_computed_target_keeps_the_onnx2torch_converter():
    # Shape(x) * 1: arithmetic that shape_targets.py does not follow, so the target stays computed
    nodes = [helper.make_node("Shape", ["x"], ["shape"]), helper.make_node("Mul", ["shape", "ones"], ["target"]),
             helper.make_node("Reshape", ["x", "target"], ["y"])]
    graph = helper.make_graph(nodes, "computed_target",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 4, 4])],
                              initializer=[numpy_helper.from_array(np.ones(4, np.int64), "ones")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = IR_VERSION
    converted = assert_converts_like_onnxruntime(model, seeded((2, 3, 4, 4)))
    assert [type(m).__name__ for m in _reshapes(converted)] == ["OnnxReshape"]
