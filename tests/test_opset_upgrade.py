"""converters/passes/opset.py on old graphs: onnx2torch has no converter for Gemm 7, BatchNormalization 7,
Flatten 1 or Dropout 7, so an opset-8 classifier is moved up with onnx.version_converter."""
import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tests.onnx_parity import IR_VERSION, assert_converts_like_onnxruntime, seeded


def _opset8_classifier():
    rng = np.random.default_rng(0)
    arrays = {"scale": rng.uniform(0.5, 1.5, 2), "bias": rng.normal(size=2), "mean": rng.normal(size=2) * 0.1,
              "var": rng.uniform(0.5, 1.5, 2), "w": rng.normal(size=(5, 2 * 4 * 4)), "b": rng.normal(size=5)}
    nodes = [helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["normed"], epsilon=1e-5,
                              name="bn7"),
             helper.make_node("Flatten", ["normed"], ["flat"], axis=1, name="flatten1"),
             helper.make_node("Dropout", ["flat"], ["dropped"], ratio=0.5, name="dropout7"),
             helper.make_node("Gemm", ["dropped", "w", "b"], ["logits"], transB=1, name="gemm7"),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1, name="softmax1")]
    graph = helper.make_graph(
        nodes, "opset8", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 4, 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 5])],
        initializer=[numpy_helper.from_array(v.astype(np.float32), k) for k, v in arrays.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 8)])
    model.ir_version = IR_VERSION
    return model


def test_opset_8_classifier_is_upgraded_and_matches_onnxruntime():
    converted = assert_converts_like_onnxruntime(_opset8_classifier(), seeded((4, 2, 4, 4)), atol=1e-6)
    assert any(step.startswith("converted to opset") for step in converted.passes)
