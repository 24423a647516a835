"""Graph habits of PyTorch's TorchScript exporter at opsets 11, 13 and 17: every exported
model must convert, match onnxruntime and pass finite, non-zero input gradients.

The models are tiny and built at test time; weights are random (seeded): only conversion is
under test here.
"""
import contextlib
import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import converters


class Habits(nn.Module):
    """One small classifier per habit, switched by name."""

    def __init__(self, habit: str):
        super().__init__()
        torch.manual_seed(0)
        self.habit = habit
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.dense = nn.Linear(4 * 4 * 4, 6)
        self.drop = nn.Dropout(0.5)
        with torch.no_grad():
            self.norm.running_mean.uniform_(-0.1, 0.1)
            self.norm.running_var.uniform_(0.5, 1.5)

    def forward(self, x):
        h = self.habit
        if h == "pad":
            x = F.pad(x, (1, 1, 1, 1), mode="reflect")[:, :, 1:-1, 1:-1]
        y = self.conv(x)
        if h == "batchnorm":
            y = self.norm(y)
        activation = {"relu6": F.relu6, "hardswish": F.hardswish, "sigmoid": torch.sigmoid,
                      "tanh": torch.tanh, "clip": lambda t: torch.clamp(t, -0.5, 0.5)}.get(h, torch.relu)
        y = activation(y)
        if h == "residual":
            y = y + torch.relu(self.conv2(y))
        y = F.avg_pool2d(y, 2) if h == "avgpool" else F.max_pool2d(y, 2)
        y = F.max_pool2d(y, 2) if h != "adaptive" else F.adaptive_avg_pool2d(y, 2)
        if h == "adaptive":
            y = F.interpolate(y, size=(4, 4), mode="nearest")
        y = y.flatten(1) if h != "reshape" else y.reshape(y.shape[0], -1)
        if h == "cast":
            y = y.double().float()
        y = self.drop(y)
        if h == "matmul":
            logits = y @ self.dense.weight.t() + self.dense.bias
        else:
            logits = self.dense(y)
        if h == "softmax":
            return torch.softmax(logits, dim=1)
        if h == "logsoftmax":
            return torch.log_softmax(logits, dim=1)
        return logits


HABITS = ["plain", "batchnorm", "relu6", "hardswish", "sigmoid", "tanh", "clip", "residual", "avgpool",
          "reshape", "cast", "matmul", "softmax", "logsoftmax", "pad", "adaptive"]


# the operator each habit must put into the graph (so that the test covers what it names)
EXPECTED_OP = {"plain": "Gemm", "batchnorm": "Conv", "relu6": "Clip", "hardswish": "Hard", "sigmoid": "Sigmoid",
               "tanh": "Tanh", "clip": "Clip", "residual": "Add", "avgpool": "AveragePool", "reshape": "Reshape",
               "cast": "Cast", "matmul": "MatMul", "softmax": "Softmax", "logsoftmax": "LogSoftmax", "pad": "Pad",
               "adaptive": "Resize"}


def _export(habit: str, opset: int, fold: bool = True) -> onnx.ModelProto:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Habits(habit).eval(), torch.zeros(2, 1, 16, 16), buffer, dynamo=False,
                          opset_version=opset, do_constant_folding=fold, input_names=["image"],
                          output_names=["scores"], dynamic_axes={"image": {0: "N"}, "scores": {0: "N"}})
    return onnx.load_from_string(buffer.getvalue())


def _check(model: onnx.ModelProto) -> None:
    converted = converters.to_torch(model, "image", "scores")
    x = np.random.default_rng(1).uniform(0, 1, (5, 1, 16, 16)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    reference = session.run(None, {"image": x})[0].astype(np.float64)
    inputs = torch.tensor(x, requires_grad=True)
    scores = converted.module(inputs)
    parity = converters.compare_scores(scores.detach().double().numpy(), reference, rtol=1e-3, atol=1e-4)
    assert parity.ok, parity
    scores[:, 0].sum().backward()
    assert torch.isfinite(inputs.grad).all() and inputs.grad.abs().sum() > 0


@pytest.mark.parametrize("opset", [11, 13, 17])
@pytest.mark.parametrize("habit", HABITS)
def test_torchscript_export_converts_and_matches(habit, opset):
    model = _export(habit, opset)
    assert any(n.op_type.startswith(EXPECTED_OP[habit]) for n in model.graph.node)
    _check(model)


@pytest.mark.parametrize("opset", [11, 17])
def test_unfused_batchnorm_converts_and_matches(opset):
    model = _export("batchnorm", opset, fold=False)
    assert any(n.op_type == "BatchNormalization" for n in model.graph.node)
    _check(model)


def _export_dynamo(habit: str) -> onnx.ModelProto:
    pytest.importorskip("onnxscript")  # in the test extra; the dynamo exporter needs it
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(Habits(habit).eval(), (torch.zeros(2, 1, 16, 16),), dynamo=True,
                                    input_names=["image"], output_names=["scores"],
                                    dynamic_shapes={"x": {0: torch.export.Dim("N")}})
    return program.model_proto


@pytest.mark.parametrize("habit", HABITS)
def test_dynamo_export_at_its_default_opset_converts_and_matches(habit):
    model = _export_dynamo(habit)
    assert model.opset_import[0].version >= 18
    _check(model)
