"""U-RED: reverse engineering under the assumption S* ∪ {t*} = C (Sec. 2.2, Sec. 4.3).

The same estimation as L-RED with the weights w fixed at uniform over every s != t: the
pattern for t must move images of *all* other classes, as in Neural-Cleanse-style defenses.
The paper uses it as a baseline that fails when an attack has few source classes.
"""
from __future__ import annotations

from .jobs import Job


def ured_jobs(num_classes: int) -> list[Job]:
    """One job per putative target t over all s != t, with w fixed at w(0)."""
    return [Job(t, tuple(s for s in range(num_classes) if s != t), adapt_weights=False)
            for t in range(num_classes)]
