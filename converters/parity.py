"""Parity gate: the converted torch module must reproduce onnxruntime's scores on the clean images."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Parity:
    """How closely the torch module matches onnxruntime on the same inputs."""

    max_abs_difference: float
    tolerance: float           # atol + rtol * max |score|
    argmax_agreement: float    # fraction of inputs with the same predicted class
    images: int

    @property
    def ok(self) -> bool:
        return self.max_abs_difference <= self.tolerance and self.argmax_agreement == 1.0


def compare_scores(torch_scores: np.ndarray, reference_scores: np.ndarray,
                   rtol: float, atol: float) -> Parity:
    """Compare two (n, K) score arrays; the tolerance scales with the scores' magnitude."""
    if torch_scores.shape != reference_scores.shape:
        return Parity(float("inf"), 0.0, 0.0, int(reference_scores.shape[0]))
    difference = np.abs(torch_scores - reference_scores)
    max_diff = float(difference.max()) if difference.size else 0.0
    if not np.isfinite(torch_scores).all():
        max_diff = float("inf")
    tolerance = atol + rtol * float(np.abs(reference_scores).max(initial=0.0))
    agreement = float(np.mean(torch_scores.argmax(1) == reference_scores.argmax(1)))
    return Parity(max_diff, tolerance, agreement, int(reference_scores.shape[0]))
