"""converters/ops/gelu.py: Gelu of opset 20 (torch's dynamo exporter) against onnxruntime."""
import pytest
from onnx import TensorProto, helper

import converters
from scanner.errors import UnsupportedOperatorError
from tests.onnx_parity import (
    IR_VERSION,
    assert_converts_like_onnxruntime,
    one_node_model,
    seeded,
)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_matches_onnxruntime(approximate):
    node = helper.make_node("Gelu", ["x"], ["y"], approximate=approximate)
    assert_converts_like_onnxruntime(one_node_model(node, ["N", 3, 5], 20), seeded((4, 3, 5)) * 3)


def test_unknown_gelu_approximation_is_refused_by_node_name():
    node = helper.make_node("Gelu", ["x"], ["y"], approximate="erf", name="odd_gelu")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = IR_VERSION
    with pytest.raises(UnsupportedOperatorError, match="odd_gelu"):
        converters.to_torch(model, "x", "y")
