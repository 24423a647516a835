"""Parity off the clean images: the scan's own points are not 8-bit clean images.

The conversion gate compares the torch module with onnxruntime on the clean images, but pattern
estimation evaluates the module at x + v: off the 8-bit grid, often far from any clean image.
A conversion that differs only there (an operator variant converted inexactly whose error
vanishes on 8-bit values, or a term that is 0 on clean images) would pass the gate and then
steer the estimation. So the gate also compares scores on probe inputs: uniform random images
in [0, 1] and clean images moved off the grid by uniform noise; and after estimation the
onnxruntime verification compares scores at every final pattern (``verify.py``).

Near a decision boundary (and x + v_t is there by construction) two faithful evaluations may
pick different classes by rounding alone, so the class agreement is required only on rows
whose reference top-2 margin exceeds twice the score tolerance; the scores themselves must
agree everywhere.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

import converters

if TYPE_CHECKING:
    from .estimation import DifferentiableClassifier
    from .preprocess import InputTransform
    from .runtime import ReferenceClassifier

PROBE_IMAGES = 64           # half uniform random images, half clean images plus noise
PROBE_NOISE = 0.05          # +- per pixel, pixel units ([0, 1])


def probe_pixels(pixels: np.ndarray, count: int = PROBE_IMAGES, seed: int = 0) -> np.ndarray:
    """``count`` float32 probe images shaped like ``pixels`` (n, *pixel_shape), values in [0, 1]:
    the first half uniform random, the rest clean images plus uniform noise of +-PROBE_NOISE."""
    rng = np.random.default_rng(seed)
    uniform = rng.uniform(0.0, 1.0, size=(count // 2,) + pixels.shape[1:])
    picked = pixels[rng.integers(0, pixels.shape[0], size=count - count // 2)]
    jittered = np.clip(picked + rng.uniform(-PROBE_NOISE, PROBE_NOISE, size=picked.shape), 0.0, 1.0)
    return np.concatenate([uniform, jittered]).astype(np.float32)


def decided(reference_scores: np.ndarray, tolerance: float) -> np.ndarray:
    """Rows whose top-2 margin in ``reference_scores`` (n, K) exceeds 2 * tolerance: there a
    faithful module cannot pick another class by rounding."""
    if reference_scores.shape[1] < 2:
        return np.ones(reference_scores.shape[0], dtype=bool)
    top2 = np.sort(reference_scores, axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) > 2.0 * tolerance


def disagreement(torch_scores: np.ndarray, reference_scores: np.ndarray, tolerance: float) -> str | None:
    """Why the two (n, K) score arrays do not agree (scores beyond ``tolerance`` anywhere, or another
    class on a decided row), or None when they do."""
    if torch_scores.shape != reference_scores.shape:
        return f"score shapes differ: {torch_scores.shape} against onnxruntime's {reference_scores.shape}"
    if not np.isfinite(torch_scores).all():
        return "the converted module gives non-finite scores"
    difference = float(np.abs(torch_scores - reference_scores).max(initial=0.0))
    if difference > tolerance:
        return f"max |difference| {difference:.3g} (tolerance {tolerance:.3g})"
    rows = decided(reference_scores, tolerance)
    other = rows & (torch_scores.argmax(axis=1) != reference_scores.argmax(axis=1))
    if other.any():
        return f"another class on {int(other.sum())} of {int(rows.sum())} inputs with a clear top class"
    return None


def compare_with_onnxruntime(classifier: DifferentiableClassifier, reference: ReferenceClassifier,
                             transform: InputTransform, pixels: np.ndarray, rtol: float, atol: float,
                             batch_images: int) -> tuple[converters.Parity, str | None, np.ndarray]:
    """What the converted module and onnxruntime output for the same ``pixels`` (n, *pixel_shape) in
    [0, 1]: their comparison (to ``atol + rtol * max |score|``), why they disagree (``disagreement``)
    or None, and onnxruntime's scores (n, K)."""
    reference_scores = reference.scores(transform.normalize(pixels).astype(np.float32))
    if not len(pixels):
        return converters.compare_scores(reference_scores, reference_scores, rtol, atol), None, reference_scores
    with torch.no_grad():
        torch_scores = np.concatenate([
            classifier.model_scores(classifier.scores(torch.as_tensor(
                pixels[start:start + batch_images], device=classifier.device))).cpu().double().numpy()
            for start in range(0, len(pixels), batch_images)])
    parity = converters.compare_scores(torch_scores, reference_scores, rtol, atol)
    return parity, disagreement(torch_scores, reference_scores, parity.tolerance), reference_scores

