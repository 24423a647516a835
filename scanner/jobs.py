"""A pattern estimation job: what L-RED, U-RED and P-RED hand to the engine.

Kept free of torch so that the method registry (and so the command line, which must refuse bad
options before the heavy imports) can list jobs and methods without loading it.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Job:
    """One pattern estimation: putative target t, the classes s whose images D_s enter J_t and
    Q_t (for L-RED every s != t), and whether w adapts by eq. (8) or stays at w(0)."""

    target: int
    sources: tuple[int, ...]
    adapt_weights: bool = True
