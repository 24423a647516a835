"""Common image-classifier architectures, exported by torch's two exporters: every file must
convert, match onnxruntime and pass gradients to the input (``lred inspect``'s checks).

Weights are random (seeded) and inputs 3x32x32: only conversion is under test. Each case is
one habit that once stopped a conversion:
* resnet18 (TorchScript): identical folded biases shared through Identity nodes;
* shufflenet_v2 (dynamo, opset 18+): Split with ``num_outputs``; (TorchScript, opset 13, no constant
  folding): BatchNormalization after a Reshape to a computed shape, whose rank is not inferred;
* squeezenet1_1: scores after a ReLU, some exactly 0 (the gradient check looked at class 0 only);
* a small ViT-like net: LayerNormalization over a dynamic token count (TorchScript), and with
  the dynamo exporter's fixed batch of 1, multi-head attention Reshapes whose batch is not
  the first dimension (the freed batch gave wrong shapes);
* a net of assorted ops: Resize 18+ (Upsample), Mish 18, GroupNorm, grouped/dilated convs,
  channel shuffle, ConvTranspose, PReLU, ELU.
"""
import contextlib
import io
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

import converters
from scanner.model import load_model

torchvision_models = pytest.importorskip("torchvision.models")


class TinyViT(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 32, 4, 4)
        self.norm = nn.LayerNorm(32)
        self.attention = nn.MultiheadAttention(32, 4, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        h = self.norm(tokens)
        tokens = tokens + self.attention(h, h, h, need_weights=False)[0]
        tokens = tokens + self.mlp(self.norm(tokens))
        return self.head(tokens.mean(1))


class AssortedOps(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=2, dilation=2)
        self.gn = nn.GroupNorm(4, 16)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.inorm = nn.InstanceNorm2d(16, affine=True)
        self.prelu = nn.PReLU()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.down = nn.Conv2d(32, 16, 3, stride=2, padding=1)
        self.ct = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(8 * 16, 10)

    def forward(self, x):
        a = nn.functional.silu(self.gn(self.c1(x)))
        b = self.prelu(self.inorm(self.c2(a)))
        b = b.reshape(b.shape[0], 4, 4, *b.shape[2:]).transpose(1, 2).reshape(b.shape)   # channel shuffle
        c = torch.cat([nn.functional.elu(b), nn.functional.leaky_relu(a, 0.1)], 1)
        c = nn.functional.mish(self.ct(self.down(self.up(c))))
        return self.fc(self.pool(nn.functional.max_pool2d(c, 2)).flatten(1))


ARCHITECTURES = {
    "resnet18": lambda: torchvision_models.resnet18(num_classes=10),
    "shufflenet_v2": lambda: torchvision_models.shufflenet_v2_x0_5(num_classes=10),
    "squeezenet1_1": lambda: torchvision_models.squeezenet1_1(num_classes=10),
    "tiny_vit": TinyViT,
    "assorted_ops": AssortedOps,
}
CASES = [("resnet18", "torchscript"), ("shufflenet_v2", "torchscript13_unfolded"), ("shufflenet_v2", "dynamo"),
         ("squeezenet1_1", "torchscript"),
         ("tiny_vit", "torchscript"), ("tiny_vit", "dynamo"), ("assorted_ops", "dynamo")]


def _export(module: nn.Module, exporter: str) -> bytes:
    buffer = io.BytesIO()
    x = torch.rand(1, 3, 32, 32)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if exporter.startswith("torchscript"):
            options = dict(opset_version=13, do_constant_folding=False) if exporter == "torchscript13_unfolded" \
                else dict(opset_version=17)
            torch.onnx.export(module, (x,), buffer, dynamo=False, input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}}, **options)
        else:
            pytest.importorskip("onnxscript")
            program = torch.onnx.export(module, (x,), dynamo=True, input_names=["input"], output_names=["logits"])
            program.save(buffer)    # batch fixed at 1: the export habit without dynamic_shapes
    return buffer.getvalue()


@pytest.mark.parametrize("name, exporter", CASES)
def test_architecture_converts_like_onnxruntime(name, exporter):
    torch.manual_seed(0)
    module = ARCHITECTURES[name]().eval()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        path.write_bytes(_export(module, exporter))
        model = load_model(path)
    converted = converters.to_torch(model.proto, model.input_name, model.output_name)
    x = np.random.default_rng(0).uniform(size=(3, 3, 32, 32)).astype(np.float32)
    session = ort.InferenceSession(model.proto.SerializeToString(), providers=["CPUExecutionProvider"])
    batch = model.input_shape[0]
    reference = np.concatenate([session.run(None, {model.input_name: x[i:i + (batch or 3)]})[0]
                                for i in range(0, 3, batch or 3)])
    inputs = torch.tensor(x, requires_grad=True)
    scores = converted.module(inputs)
    np.testing.assert_allclose(scores.detach().numpy(), reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())
    assert scores.argmax(1).tolist() == reference.argmax(1).tolist()
    log_p = torch.log_softmax(scores, dim=1)
    (gradient,) = torch.autograd.grad((log_p * torch.linspace(1, 2, log_p.shape[1])).sum(), inputs)
    assert torch.isfinite(gradient).all() and float(gradient.abs().max()) > 0
