"""Step 6: onnxruntime re-computes q_st and Q_t for every final pattern on the original graph.

The torch module only proposes patterns; the fractions that reach the report and the test are
checked against the unconverted ONNX graph with the same clipping (eq. (1)) and normalization.
``verify`` also compares the module's scores with onnxruntime's at every final pattern x + v:
the points the estimation actually visited, off the clean images (scanner/probes.py); a
conversion that differs there stops the scan (exit 2) instead of steering its verdict.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

import converters

from .errors import ConversionMismatchError
from .estimation import DifferentiableClassifier, PatternEstimate
from .preprocess import InputTransform
from .probes import compare_with_onnxruntime
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
        return self._fractions(target, weights, self.reference.scores(self._inputs(target, pattern)))

    def _pixels(self, target: int, pattern: np.ndarray) -> np.ndarray:
        """[x + v] clipped to [0, 1] for the clean images of every class s != t."""
        return np.clip(self.pixels[self.labels != target] + pattern, 0.0, 1.0).astype(np.float32)

    def _inputs(self, target: int, pattern: np.ndarray) -> np.ndarray:
        return self.transform.normalize(self._pixels(target, pattern)).astype(np.float32)

    def verify(self, estimates: Sequence[PatternEstimate], classifier: DifferentiableClassifier, rtol: float,
               atol: float, batch_images: int) -> tuple[list[VerifiedFractions], converters.Parity]:
        """onnxruntime's fractions at every final pattern, and its scores there against the converted
        module's (to ``atol + rtol * max |score|``, the same class where the top class is clear:
        ``probes.disagreement``); ConversionMismatchError when they differ."""
        verified, largest, tolerance, rows, agreeing = [], 0.0, 0.0, 0, 0
        for estimate in estimates:
            pixels = self.estimate_pixels(estimate)
            parity, problem, reference_scores = compare_with_onnxruntime(
                classifier, self.reference, self.transform, pixels, rtol, atol, batch_images)
            if problem is not None:
                raise ConversionMismatchError(
                    f"the converted torch module disagrees with onnxruntime at the estimated pattern of class "
                    f"{estimate.target_class}: {problem}; the estimation ran on an unfaithful conversion, so its "
                    "patterns cannot carry a verdict")
            largest, tolerance, rows = (max(largest, parity.max_abs_difference), max(tolerance, parity.tolerance),
                                        rows + len(pixels))
            agreeing += round(parity.argmax_agreement * len(pixels))
            verified.append(self._fractions(estimate.target_class, estimate.source_weights, reference_scores))
        return verified, converters.Parity(largest, tolerance, agreeing / rows if rows else 1.0, rows)

    def estimate_pixels(self, estimate: PatternEstimate) -> np.ndarray:
        """The images an estimate's fractions are measured on: [x + v] clipped (eq. (1)); a patch
        check (patch_scan.PatchCheck) gives (1 - m) x + m u (eq. (13)) instead."""
        return self._pixels(estimate.target_class, estimate.pattern)

    def _fractions(self, target: int, weights: np.ndarray, scores: np.ndarray) -> VerifiedFractions:
        others = self.labels != target
        predicted = scores.argmax(axis=1)
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
