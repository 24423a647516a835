"""The reverse-engineering methods a scan can run, in one registry.

L-RED, U-RED and P-RED are job lists over one estimation engine (Sec. 3.1, Sec. 4.3): they
differ in which (target, sources) jobs they estimate, whether the source weights w move by
eq. (8), how the source classes of a detection are named, and over which statistics the
order-statistic test of Sec. 3.2 runs. Each method is one ``Method`` entry below; the config
(valid names), the CLI (``--method`` choices and help) and the pipeline read only this table,
so a new method is one module with its job builder plus one entry here.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import detection, lred, nc, pred, ured
from .jobs import Job

if TYPE_CHECKING:   # torch is not needed to list the methods (the CLI reads this table first)
    from .estimation import PatternEstimate


def _sources_by_weight(suspect: PatternEstimate, pi: float) -> tuple[int, ...]:
    """L-RED: the fewest classes, by decreasing w_s at the stop, holding pi of the weight."""
    return tuple(detection.infer_source_classes(suspect.source_weights, pi))


def _sources_of_job(suspect: PatternEstimate, pi: float) -> tuple[int, ...]:
    """U-RED assumes every other class; P-RED names the pair's source."""
    return tuple(suspect.sources)


@dataclass(frozen=True)
class Method:
    """One reverse-engineering method.

    ``jobs(K)`` lists the pattern estimations (``lred.Job``); the order-statistic ``test``
    runs over one statistic r = 1/||v|| per job (K for one job per target, K(K - 1) for one per
    pair). ``source_classes(suspect, pi)`` names the sources of a detected attack from the
    estimate of the most suspicious job. ``adapts_weights``: w moves by eq. (8), which the
    weight-controlled step schedule needs (the others step by delta). ``reports_pairs``: the
    report lists every (source, target) pair and patterns are saved per pair. ``engine``: "additive"
    estimates a pattern v (eq. (1), engine.py); "patch" a mask m and pattern u (eq. (13),
    patch_engine.py), whose statistic is r = 1/||m||_1 (App. A.3).
    """

    name: str
    description: str                                     # one line, for the CLI help
    jobs: Callable[[int], list[Job]]
    source_classes: Callable[[PatternEstimate, float], tuple[int, ...]]
    adapts_weights: bool
    reports_pairs: bool
    test: Callable[[np.ndarray, float, str], detection.DetectionResult] = detection.detect
    engine: str = "additive"


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("lred", "the paper's method", lred.lred_jobs, _sources_by_weight,
           adapts_weights=True, reports_pairs=False),
    Method("ured", "weights fixed uniform", ured.ured_jobs, _sources_of_job,
           adapts_weights=False, reports_pairs=False),
    Method("pred", "every class pair", pred.pred_jobs, _sources_of_job,
           adapts_weights=False, reports_pairs=True),
    Method("lred-patch", "patch triggers: mask and pattern, the paper's weights", lred.lred_jobs,
           _sources_by_weight, adapts_weights=True, reports_pairs=False, engine="patch"),
    Method("nc", "Neural Cleanse: patch triggers, all other classes as sources, MAD anomaly index",
           nc.nc_jobs, _sources_of_job, adapts_weights=False, reports_pairs=False, test=nc.anomaly_test,
           engine="patch"),
)}
METHOD_NAMES: tuple[str, ...] = tuple(METHODS)


def method_named(name: str) -> Method:
    """The registered method ``name`` (KeyError for an unknown one; ScanConfig validates names)."""
    return METHODS[name]


def help_text() -> str:
    """The ``--method`` help: 'lred (the paper's method), ured (...) or pred (...).'"""
    parts = [f"{m.name} ({m.description})" for m in METHODS.values()]
    return (", ".join(parts[:-1]) + " or " + parts[-1] if len(parts) > 1 else parts[0]) + "."
