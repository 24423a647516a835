"""The conversion gate: onnx2torch output against onnxruntime, gradients, unsupported operators."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

import converters
from scanner.errors import UnsupportedOperatorError
from tests import synthetic


def _reference(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": x})[0]


@pytest.mark.parametrize("softmax", [False, True])
@pytest.mark.parametrize("opset", [11, 13, 17])
def test_converted_module_matches_onnxruntime_and_passes_gradients(softmax, opset):
    model = synthetic.linear_classifier(6, backdoor_target=2, softmax=softmax, opset=opset)
    output = model.graph.output[0].name
    module = converters.to_torch(model, "image", output).module
    x, _ = synthetic.clean_images(6, 3)
    x = (x[:, None] / 255.0).astype(np.float32)
    inputs = torch.tensor(x, requires_grad=True)
    scores = module(inputs)
    parity = converters.compare_scores(scores.detach().double().numpy(), _reference(model, x).astype(np.float64),
                                       rtol=1e-3, atol=1e-4)
    assert parity.ok and parity.max_abs_difference < 1e-4 and parity.argmax_agreement == 1.0
    scores[:, 2].sum().backward()
    assert torch.isfinite(inputs.grad).all() and inputs.grad.abs().max() > 0
    assert all(not p.requires_grad for p in module.parameters())


def test_parity_flags_disagreeing_argmax():
    reference = np.array([[1.0, 0.0], [0.0, 1.0]])
    parity = converters.compare_scores(reference[:, ::-1].copy(), reference, rtol=1e-3, atol=1e-4)
    assert not parity.ok and parity.argmax_agreement == 0.0


def test_label_side_output_is_dropped_before_conversion():
    model = synthetic.linear_classifier(5, softmax=True)
    model.graph.node.append(helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0,
                                             name="argmax"))
    model.graph.output.insert(0, helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]))
    converted = converters.to_torch(model, "image", "probabilities")
    out = converted.module(torch.zeros(2, 1, 8, 8))
    assert out.shape == (2, 5)
    assert any("kept only the path" in p for p in converted.passes)


def test_unsupported_operator_is_named_with_opset_and_node():
    model = synthetic.linear_classifier(5)
    model.graph.node.append(helper.make_node("Acosh", ["logits"], ["odd"], name="weird_node"))
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("odd", TensorProto.FLOAT, ["N", 5]))
    onnx.checker.check_model(model)
    with pytest.raises(UnsupportedOperatorError, match=r"Acosh \(opset 13\) at node 'weird_node'"):
        converters.to_torch(model, "image", "odd")
