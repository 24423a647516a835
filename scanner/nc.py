"""Neural Cleanse (Wang et al., "Neural Cleanse: Identifying and Mitigating Backdoor Attacks in
Neural Networks", IEEE S&P 2019) as a baseline, and its anomaly index.

Reverse engineering (Sec. IV.C of that paper, eq. (14) of L-RED's App. A.3): for each putative
target t, a mask m and pattern u that send the images of *all* other classes to t, with the
classes weighted uniformly and fixed (the assumption S* ∪ {t*} = C), solved by
``patch_engine.PatchEngine`` with ``adapt_weights`` off.

Detection (their Sec. IV.C, "Outlier detection"): on the mask norms ||m_t||_1, the anomaly
index of class t is |x_t - median| / (1.4826 * MAD), MAD the median absolute deviation and
1.4826 the consistency constant of a normal distribution; a class whose norm lies below the
median with an anomaly index above 2 is flagged. That rule has no p-value: a Neural Cleanse
report's p-value fields are null, and its verdict is the flag.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .detection import DetectionResult
from .errors import LredError
from .jobs import Job

CONSISTENCY = 1.4826            # MAD -> standard deviation of a normal distribution
ANOMALY_THRESHOLD = 2.0         # flagged when the anomaly index exceeds this (below the median)


def nc_jobs(num_classes: int) -> list[Job]:
    """One job per putative target t over all s != t, with w fixed uniform (as U-RED's)."""
    return [Job(t, tuple(s for s in range(num_classes) if s != t), adapt_weights=False)
            for t in range(num_classes)]


def anomaly_indices(norms: np.ndarray) -> np.ndarray:
    """|x_t - median| / (1.4826 * MAD) of every norm x_t (inf where the MAD is 0 and x_t is off the median)."""
    x = np.asarray(norms, dtype=np.float64)
    median = float(np.median(x))
    mad = CONSISTENCY * float(np.median(np.abs(x - median)))
    deviation = np.abs(x - median)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(deviation == 0, 0.0, deviation / mad) if mad > 0 else np.where(deviation == 0, 0.0, np.inf)


def flagged_classes(norms: np.ndarray, threshold: float = ANOMALY_THRESHOLD) -> list[int]:
    """The classes Neural Cleanse flags: norm below the median and anomaly index > ``threshold``."""
    x = np.asarray(norms, dtype=np.float64)
    index = anomaly_indices(x)
    return [int(t) for t in np.flatnonzero((x < np.median(x)) & (index > threshold))]


@dataclass(frozen=True)
class AnomalyIndexResult(DetectionResult):
    """Neural Cleanse's decision in the DetectionResult shape the pipeline reads: ``inferred_target``
    the class with the smallest mask; no Gamma fit and no p-value (NaN, null in JSON)."""

    anomaly_index: float = math.nan       # of the inferred target
    flagged: bool = False

    def detected_by(self, basis: str) -> bool:
        return self.flagged

    @property
    def detected(self) -> bool:
        return self.flagged


def anomaly_test(mask_norms: np.ndarray, alpha: float, basis: str = "calibrated") -> DetectionResult:
    """Neural Cleanse's outlier rule on the K mask norms ||m_t||_1 (``alpha`` and ``basis`` unused:
    the rule is the fixed threshold 2 on the anomaly index)."""
    norms = np.asarray(mask_norms, dtype=np.float64)
    if norms.ndim != 1 or norms.size < 3 or not np.all(np.isfinite(norms)) or np.any(norms <= 0):
        raise LredError("the anomaly index needs at least three positive, finite mask norms")
    target = int(np.argmin(norms))
    index = anomaly_indices(norms)
    flagged = target in flagged_classes(norms)
    return AnomalyIndexResult(tuple(float(v) for v in 1.0 / norms), target, math.nan, math.nan, math.nan,
                              math.nan, alpha, basis, anomaly_index=float(index[target]), flagged=flagged)
