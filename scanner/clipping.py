"""The clipping [x + v]_c of eq. (1), with c = [0, 1], and the gradient used to ascend through it.

torch.clamp passes no gradient at the bounds themselves. Clean images are full of pixels that
are exactly 0 or 1 (a black background, saturated highlights), and v starts at 0, so with
torch.clamp the pattern could never grow on those pixels: exactly where the single-pixel
backdoor of App. A.7 lives. ``clip_pixels`` passes the gradient at a bound whenever a step of
gradient ascent would move the pixel back inside [0, 1], i.e. the one-sided derivative in the
ascent direction: at 0 when the gradient is positive, at 1 when it is negative. Strictly
outside the bounds the clipped value does not change with v, so the gradient there is 0.
"""
from __future__ import annotations

from typing import Any

import torch


class _ClipForAscent(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, values: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(values)
        return values.clamp(0.0, 1.0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        # The pass-through rule in float arithmetic on signs (comparisons producing bool
        # tensors, torch.where and masked_fill cost 2-10x more per element on the CPU; the
        # result is equal element for element, tests/test_clipping.py):
        #   lower bound passes  <=> v > 0, or v == 0 and grad > 0  <=> 2 sign(v) + sign(grad) >= 1
        #   upper bound passes  <=> v < 1, or v == 1 and grad < 0  <=> 2 sign(1 - v) - sign(grad) >= 1
        # (the sign of 1 - v is exact in IEEE arithmetic: 1 - v == 0 only when v == 1).
        (values,) = ctx.saved_tensors
        direction = grad.sign()
        lower = torch.add(direction, values.sign(), alpha=2).clamp_(0.0, 1.0)
        upper = torch.rsub(values, 1.0).sign_().mul_(2.0).sub_(direction).clamp_(0.0, 1.0)
        return lower.mul_(upper).mul_(grad)


def clip_pixels(values: torch.Tensor) -> torch.Tensor:
    """[values]_c: clamp to [0, 1]; gradient as documented above (for gradient ascent)."""
    return _ClipForAscent.apply(values)
