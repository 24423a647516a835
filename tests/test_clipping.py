"""The clipping [x + v]_c of eq. (1) and its gradient for ascent."""
import torch

from scanner.clipping import clip_pixels


def _grad(values, upstream):
    v = torch.tensor(values, requires_grad=True)
    (clip_pixels(v) * torch.tensor(upstream)).sum().backward()
    return v.grad.tolist()


def test_forward_clamps_to_unit_interval():
    assert clip_pixels(torch.tensor([-0.5, 0.0, 0.25, 1.0, 1.7])).tolist() == [0.0, 0.0, 0.25, 1.0, 1.0]


def test_gradient_passes_inside():
    assert _grad([0.3, 0.7], [2.0, -3.0]) == [2.0, -3.0]


def test_gradient_at_zero_passes_only_upwards():
    # a black pixel can be raised (the single-pixel backdoor of App. A.7) but not lowered
    assert _grad([0.0, 0.0], [1.5, -1.5]) == [1.5, 0.0]


def test_gradient_at_one_passes_only_downwards():
    assert _grad([1.0, 1.0], [1.5, -1.5]) == [0.0, -1.5]


def test_gradient_outside_the_range_is_zero():
    assert _grad([-0.2, 1.2], [1.0, -1.0]) == [0.0, 0.0]
