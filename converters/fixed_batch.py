"""Fallback for graphs whose batch size stays baked in after ``static_batch.free_batch_dimension``.

The free-batch pass rewrites the input and constant Reshape targets; a batch size hidden
elsewhere (an Expand or ConstantOfShape target, a Reshape target assembled from constants) still
makes any other batch size fail. ``runs_on_batch`` probes the converted module with
a batch of a different size; when it fails, ``FixedBatchModule`` evaluates the original
conversion ``batch`` images at a time (the last chunk padded by repeating its last image and
cut back), exactly as onnxruntime does in scanner/runtime.py. Correct, but slower.
"""
from __future__ import annotations

import torch
from torch import nn


class FixedBatchModule(nn.Module):
    """Runs ``module``, which accepts exactly ``batch`` inputs, on any number of inputs."""

    def __init__(self, module: nn.Module, batch: int):
        super().__init__()
        self.module = module
        self.batch = batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = []
        for start in range(0, x.shape[0], self.batch):
            chunk = x[start:start + self.batch]
            missing = self.batch - chunk.shape[0]
            if missing:
                chunk = torch.cat([chunk, chunk[-1:].expand(missing, *chunk.shape[1:])])
            outputs.append(self.module(chunk)[:self.batch - missing])
        return torch.cat(outputs)


def batch_independent(module: nn.Module, fixed: int, sample_shape: tuple[int, ...]) -> bool:
    """Whether ``module`` runs on ``fixed + 1`` random inputs and gives the first ``fixed`` of them
    the outputs it gives them alone: a graph whose freed batch size only seems to work (a Reshape
    that copies some other dimension equal to the batch) fails this."""
    generator = torch.Generator().manual_seed(0)
    probe = torch.rand((fixed + 1,) + tuple(sample_shape), generator=generator)
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
