"""Step 6: onnxruntime re-computes q_st and Q_t for every final pattern on the original graph.

The torch module only proposes patterns; the fractions that reach the report and the test are
checked against the unconverted ONNX graph with the same clipping (eq. (1)) and normalization.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .preprocess import InputTransform
from .runtime import ReferenceClassifier


@dataclass(frozen=True)
class VerifiedFractions:
    """onnxruntime's misclassification fractions q_st (K,) and Q_t for one target t."""

    target_class: int
    misclassification: np.ndarray
    fraction: float


class ReferenceCheck:
    """Misclassification fractions of patterns, computed by onnxruntime."""

    def __init__(self, reference: ReferenceClassifier, transform: InputTransform,
                 pixels: np.ndarray, labels: np.ndarray, num_classes: int, pi: float):
        self.reference = reference
        self.transform = transform
        self.pixels = pixels
        self.labels = labels
        self.num_classes = num_classes
        self.pi = pi

    def fractions(self, target: int, pattern: np.ndarray, weights: np.ndarray) -> VerifiedFractions:
        """q_st(v) for all s != t and Q_t(v, w), with [x + v] clipped to [0, 1]."""
        others = self.labels != target
        inputs = self.transform.normalize(np.clip(self.pixels[others] + pattern, 0.0, 1.0))
        predicted = self.reference.predict(inputs.astype(np.float32))
        hits = (predicted == target).astype(np.float64)
        counts = np.bincount(self.labels[others], minlength=self.num_classes).astype(np.float64)
        sums = np.bincount(self.labels[others], weights=hits, minlength=self.num_classes)
        q = np.divide(sums, counts, out=np.zeros(self.num_classes), where=counts > 0)
        q[target] = 0.0
        return VerifiedFractions(target, q, float(np.dot(weights, q)))

    def confirm(self, targets: Sequence[int], patterns: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """For the estimation loop: does onnxruntime agree that Q_t >= pi for each target?"""
        return np.array([self.fractions(t, p, w).fraction >= self.pi
                         for t, p, w in zip(targets, patterns, weights)], dtype=bool)
