"""The suspected target's pattern on clean images, as onnxruntime classifies them (for the HTML report).

For the most suspicious target t (largest r_t, Sec. 3.2) the estimated pattern v_t is added to a
few clean images of its heaviest source classes (largest w_s at the stop of Algorithm 1), clipped
to [0, 1] as in eq. (1); onnxruntime labels each image with and without the pattern, on the
original graph. Nothing here feeds the verdict.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .estimation import PatternEstimate
from .prepare import PreparedScan

SOURCES_SHOWN = 3
IMAGES_PER_SOURCE = 2


@dataclass(frozen=True, eq=False)
class PatchedExample:
    """One clean image x of a source class s and [x + v_t]; images (H, W, C) float32 in [0, 1]."""

    source_class: int
    original: np.ndarray
    patched: np.ndarray
    original_label: int            # onnxruntime's argmax on x
    patched_label: int             # onnxruntime's argmax on [x + v_t]


def top_sources(source_weights: np.ndarray, target: int, count: int = SOURCES_SHOWN) -> list[int]:
    """The ``count`` classes s != target with the largest positive w_s, heaviest first."""
    order = np.argsort(-np.asarray(source_weights, dtype=np.float64), kind="stable")
    return [int(s) for s in order if s != target and source_weights[s] > 0][:count]


def patched_examples(prepared: PreparedScan, suspect: PatternEstimate,
                     images_per_source: int = IMAGES_PER_SOURCE) -> tuple[PatchedExample, ...]:
    """Up to ``images_per_source`` selected clean images of each top source of ``suspect``, with and
    without its pattern, labelled by onnxruntime."""
    chosen = [i for s in top_sources(suspect.source_weights, suspect.target_class)
              for i in np.flatnonzero(prepared.y == s)[:images_per_source]]
    if not chosen:
        return ()
    originals = prepared.x[chosen].astype(np.float32)
    patched = np.clip(originals + suspect.pattern, 0.0, 1.0).astype(np.float32)
    labels = prepared.reference.predict(
        prepared.transform.normalize(np.concatenate([originals, patched])).astype(np.float32))
    to_image = prepared.transform.from_pixels
    n = len(chosen)
    return tuple(PatchedExample(int(prepared.y[i]), to_image(originals[k]), to_image(patched[k]),
                                int(labels[k]), int(labels[n + k]))
                 for k, i in enumerate(chosen))
