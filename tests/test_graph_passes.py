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
from converters.static_batch import fixed_batch_size


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
    assert converters.static_batch.free_batch_dimension(model, "image") == (model, 0)
