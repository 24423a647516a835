"""Fallback for graphs whose batch size stays baked in after ``static_batch.free_batch_dimension``.

The free-batch pass rewrites the input and constant Reshape targets; a batch size hidden
elsewhere (an Expand or ConstantOfShape target, a Reshape target assembled from constants) still
makes any other batch size fail. ``runs_on_batch`` probes the converted module with
a batch of a different size; when it fails, ``FixedBatchModule`` evaluates the original
conversion ``batch`` images at a time (the last chunk padded by repeating its last image and
cut back), exactly as onnxruntime does in scanner/runtime.py: vectorized with
``torch.func.vmap`` where that gives the same values (measured 25-40x faster than the loop on
a small ViT and ConvNeXt-T exported by torch's dynamo exporter with batch 1), else in a loop.
"""
from __future__ import annotations

import torch
from torch import nn


def _probe(size: int, sample_shape: tuple[int, ...]) -> torch.Tensor:
    """``size`` seeded random inputs in [0, 1) of ``sample_shape``: the same probe on every call."""
    return torch.rand((size,) + tuple(sample_shape), generator=torch.Generator().manual_seed(0))


class FixedBatchModule(nn.Module):
    """Runs ``module``, which accepts exactly ``batch`` inputs, on any number of inputs.

    ``vectorized``: the inputs, padded to a multiple of ``batch``, are evaluated as groups of
    ``batch`` under ``torch.func.vmap``, which runs the module once on all groups (every
    operation sees one group, so sizes baked into the graph still hold); otherwise group by
    group in a Python loop. ``vectorizes`` decides which is used; both give the same values.
    """

    def __init__(self, module: nn.Module, batch: int, vectorized: bool = False):
        super().__init__()
        self.module = module
        self.batch = batch
        self.vectorized = vectorized

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        missing = -n % self.batch
        if missing:
            x = torch.cat([x, x[-1:].expand(missing, *x.shape[1:])])
        if self.vectorized:
            groups = x.reshape(-1, self.batch, *x.shape[1:])
            out = torch.func.vmap(self.module)(groups)
            return out.reshape(-1, *out.shape[2:])[:n]
        outputs = [self.module(x[start:start + self.batch]) for start in range(0, x.shape[0], self.batch)]
        return torch.cat(outputs)[:n]


def vectorizes(module: nn.Module, batch: int, sample_shape: tuple[int, ...]) -> bool:
    """Whether ``FixedBatchModule(module, batch, vectorized=True)`` runs and gives the loop's
    values (to 1e-5 relative) and input gradients on a random probe of 2 * batch + 1 inputs."""
    probe = _probe(2 * batch + 1, sample_shape)
    try:
        results = []
        for vectorized in (False, True):
            inputs = probe.clone().requires_grad_(True)
            with torch.enable_grad():
                out = FixedBatchModule(module, batch, vectorized)(inputs)
                (gradient,) = torch.autograd.grad((out * torch.linspace(1, 2, out.shape[-1])).sum(), inputs)
            results.append((out.detach(), gradient))
    except Exception:  # noqa: BLE001 - an op that vmap cannot batch: the loop is used, nothing fails
        return False
    (out_loop, grad_loop), (out_vmap, grad_vmap) = results
    return (out_loop.shape == out_vmap.shape
            and bool(torch.allclose(out_vmap, out_loop, rtol=1e-5, atol=1e-5 * float(out_loop.abs().max())))
            and bool(torch.allclose(grad_vmap, grad_loop, rtol=1e-4, atol=1e-4 * float(grad_loop.abs().max()))))


def batch_independent(module: nn.Module, fixed: int, sample_shape: tuple[int, ...]) -> bool:
    """Whether ``module`` runs on ``fixed + 1`` random inputs and gives the first ``fixed`` of them
    the outputs it gives them alone: a graph whose freed batch size only seems to work (a Reshape
    that copies some other dimension equal to the batch) fails this."""
    probe = _probe(fixed + 1, sample_shape)
    try:
        with torch.no_grad():
            together, alone = module(probe), module(probe[:fixed])
    except Exception:  # noqa: BLE001 - any failure means "not batchable": the caller falls back, it does not fail
        return False
    if isinstance(together, (tuple, list)):
        together, alone = together[0], alone[0]
    return (isinstance(together, torch.Tensor) and together.ndim >= 1 and together.shape[0] == fixed + 1
            and alone.shape == together[:fixed].shape
            and bool(torch.allclose(alone, together[:fixed], rtol=1e-4, atol=1e-5)))


def runs_on_batch(module: nn.Module, size: int, sample_shape: tuple[int, ...]) -> bool:
    """Whether ``module`` maps a batch of ``size`` zero inputs of ``sample_shape`` to ``size`` outputs."""
    probe = torch.zeros((size,) + tuple(sample_shape))
    try:
        with torch.no_grad():
            output = module(probe)
    except Exception:  # noqa: BLE001 - any failure means "not batchable": the caller falls back, it does not fail
        return False
    return isinstance(output, torch.Tensor) and output.ndim >= 1 and output.shape[0] == size
