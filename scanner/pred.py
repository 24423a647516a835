"""P-RED: pattern estimation for every class pair (s, t), s != t (eq. (2); ref. [15] of the paper).

For each pair, the smallest pattern that sends at least pi of D_s (the clean images of class s
alone) to t. This is Algorithm 1 with w fixed at the indicator of s, so Q_t = q_st. The test of
Sec. 3.2 then runs over the K(K-1) statistics and infers a (source, target) pair.
"""
from __future__ import annotations

from .jobs import Job


def pred_jobs(num_classes: int) -> list[Job]:
    """K(K-1) jobs, ordered by target then source."""
    return [Job(t, (s,), adapt_weights=False)
            for t in range(num_classes) for s in range(num_classes) if s != t]
