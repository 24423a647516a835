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


def _rule(values, upstream):
    """The pass-through rule as the module docstring states it, with boolean masks."""
    inside = (values > 0.0) & (values < 1.0)
    can_rise = (values == 0.0) & (upstream > 0)
    can_fall = (values == 1.0) & (upstream < 0)
    return upstream * (inside | can_rise | can_fall).to(upstream.dtype)


def test_gradient_equals_the_rule_on_every_edge_case():
    # bounds, signed zeros, the floats next to 0 and 1 (subnormal and 1 - 2^-24), outside
    # values, combined with every sign of the upstream gradient, then a random bulk
    f32 = torch.float32
    edges = torch.tensor([0.0, -0.0, 1.0, torch.finfo(f32).tiny, 1e-45, -1e-45,
                          torch.nextafter(torch.tensor(1.0), torch.tensor(0.0)).item(),
                          torch.nextafter(torch.tensor(1.0), torch.tensor(2.0)).item(),
                          0.5, -0.3, 1.3, 1e-8, 1 - 1e-7], dtype=f32)
    signs = torch.tensor([2.5, -2.5, 0.0, -0.0, 1e-30, -1e-30], dtype=f32)
    values = edges.repeat_interleave(signs.numel())
    upstream = signs.repeat(edges.numel())
    generator = torch.Generator().manual_seed(0)
    bulk = torch.rand(10000, generator=generator) * 1.4 - 0.2
    bulk[torch.rand(10000, generator=generator) < 0.3] = 0.0
    bulk[torch.rand(10000, generator=generator) < 0.1] = 1.0
    values = torch.cat([values, bulk])
    upstream = torch.cat([upstream, torch.randn(10000, generator=generator)])
    v = values.clone().requires_grad_(True)
    (clip_pixels(v) * upstream).sum().backward()
    assert torch.equal(v.grad, _rule(values, upstream))
