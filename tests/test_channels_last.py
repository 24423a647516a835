"""Channels-last weights on the CPU (DifferentiableClassifier.use_channels_last): kept only
where the module runs and gives the same scores, and then the same patterns."""
import numpy as np
import pytest
import torch
from torch import nn

from scanner.estimation import DifferentiableClassifier
from scanner.lred import estimate_patterns
from scanner.schedules import FixedStep
from tests import synthetic

CPU = torch.device("cpu")


def transform(shape=(3, 8, 8)):
    return synthetic.identity_transform(shape)


def conv_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3), nn.ReLU(),
                         nn.Flatten(), nn.Linear(6 * 6 * 6, 4))


class ViewAfterConv(nn.Module):
    """Flattens with .view, which needs the default order of the convolution's output."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 5, 3)
        self.fc = nn.Linear(5 * 6 * 6, 4)

    def forward(self, x):
        z = self.conv(x)
        return self.fc(z.view(z.shape[0], -1))


def images(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, 3, 8, 8), generator=g), torch.arange(n) % 4


def test_conv_net_is_kept_channels_last_with_the_same_scores():
    x, _ = images()
    module = conv_net()
    before = module(x).detach()
    classifier = DifferentiableClassifier(module, transform(), "logits", CPU)
    assert classifier.use_channels_last(x[:8])
    assert module[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not module[0].weight.is_contiguous()
    torch.testing.assert_close(classifier.scores(x).detach(), before, rtol=1e-5, atol=1e-5)


def test_channels_last_gives_the_same_patterns():
    x, y = images()
    settings = dict(pi=0.9, schedule=FixedStep(0.05), max_iterations=300, batch_images=4096)
    default = DifferentiableClassifier(conv_net(), transform(), "logits", CPU)
    channels_last = DifferentiableClassifier(conv_net(), transform(), "logits", CPU)
    assert channels_last.use_channels_last(x[:8])
    a = estimate_patterns(default, x, y, 4, **settings)
    b = estimate_patterns(channels_last, x, y, 4, **settings)
    for ea, eb in zip(a, b):
        assert ea.status == eb.status
        assert ea.iterations == eb.iterations
        np.testing.assert_allclose(eb.pattern, ea.pattern, atol=1e-4)


def test_a_module_that_needs_the_default_order_is_put_back():
    x, _ = images()
    module = ViewAfterConv()
    before = module(x).detach()
    classifier = DifferentiableClassifier(module, transform(), "logits", CPU)
    assert not classifier.use_channels_last(x[:8])
    assert module.conv.weight.is_contiguous()
    torch.testing.assert_close(classifier.scores(x).detach(), before)


@pytest.mark.parametrize("module, shape", [
    (nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)), (3, 8, 8)),     # no 4-D weights
])
def test_models_without_convolution_weights_are_left_alone(module, shape):
    x, _ = images()
    classifier = DifferentiableClassifier(module, transform(shape), "logits", CPU)
    assert not classifier.use_channels_last(x[:8])


def test_a_module_whose_weights_cannot_all_be_converted_is_put_back():
    # a 5-D weight cannot be held channels-last (torch raises midway through the conversion)
    torch.manual_seed(2)
    module = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.Unflatten(1, (1, 3)), nn.Conv3d(1, 2, (1, 3, 3)),
                           nn.Flatten(), nn.Linear(2 * 3 * 6 * 6, 4))
    x, _ = images()
    before = module(x).detach()
    classifier = DifferentiableClassifier(module, transform(), "logits", CPU)
    assert not classifier.use_channels_last(x[:8])
    assert module[0].weight.is_contiguous()
    torch.testing.assert_close(classifier.scores(x).detach(), before)


class Broken(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        raise RuntimeError("this module cannot run")


def test_a_module_that_does_not_run_is_left_to_the_parity_check():
    x, _ = images()
    classifier = DifferentiableClassifier(Broken(), transform(), "logits", CPU)
    assert not classifier.use_channels_last(x[:8])
