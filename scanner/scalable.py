"""The scalable mode (``--scalable``): screen every putative target cheaply, estimate a few fully.

The full method runs Algorithm 1 for all K targets over the (K-1)N images of the other classes:
K(K-1)N image passes per iteration. The scalable mode keeps the paper's estimator of r_t and its
order-statistic test, but estimates r_t for a subset of targets:

1. **Screen.** Every target t runs Algorithm 1 (the engine, the scan's step schedule) for
   ``screen_iterations`` iterations over its screen sources: every other class when K - 1 <=
   ``screen_sources``, else a seeded random subset of ``screen_sources`` classes. Each target
   gets a progress score: the rise of J_t (eq. (5)'s objective, with the screen's w) from v = 0
   to the screen's v_t, per unit of ||v_t|| (the mean slope of J_t along the path). A target
   whose estimation already reached pi in the screen ranks first.
2. **Select.** The ``screen_candidates`` best-ranked targets, plus ``screen_null_targets``
   targets drawn uniformly at random (seeded) from all K for the null.
3. **Estimate.** Algorithm 1 runs to its end, over every other class, for the selected targets
   only. When the screen used every source, the selected targets continue from where the screen
   stopped (their paths are the full method's); otherwise they start again from v = 0.
4. **Test** (Sec. 3.2). r_max is the largest r_t among the selected targets; the Gamma null is
   fitted to the r_t of the random null targets (the one equal to r_max left out, as the paper
   leaves r_max out). The paper fits all K - 1 statistics but the largest; a uniform random
   subset of targets is an unbiased sample of the same null, smaller. The p-value stays
   1 - G(r_max)^K with the model's K: r_max stands for the largest of all K statistics, which
   the screen assumes it found (a target it ranked low is assumed to have an r_t below r_max).
   The calibrated p-value (detection.py) draws K statistics and fits the null to a random M of
   the K - 1 below the largest, M the null sample's size, so it holds its level for that test.

Image passes: screen K * S * N * screen_iterations (S the screen sources), plus the selected
targets' full estimations, (K-1)N per target and iteration; forward-only passes for the scores.

Memory: the engine's passes are chunked (``batch_images`` rows, engine_passes.py); its per-job
state (v, its last step: (jobs, *pixel_shape) each; w, q: (jobs, K)) is held for the jobs of one
engine. With warm start that is all K targets, but only while K - 1 <= ``screen_sources``; a
larger K screens ``SCREEN_GROUP`` targets at a time and keeps their scores alone, and the final
estimation holds candidates + null targets. So the state is bounded by
max(screen_sources + 1, SCREEN_GROUP, candidates + null_targets) jobs for any K, besides the
clean images themselves and O(K^2 N) integers and floats of bookkeeping (rows per job, scores).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy import special

from . import detection
from .clipping import clip_pixels
from .engine import Engine
from .errors import LredError
from .estimation import STATUS_CONVERGED, Confirm, DifferentiableClassifier, PatternEstimate, Progress
from .lred import PassCount, lred_jobs
from .report import ScalableSummary
from .schedules import StepSchedule
from .weights import Job

if TYPE_CHECKING:
    from .config import ScanConfig


SCREEN_GROUP = 128   # targets screened at once when the screen draws its sources (memory bound)


@dataclass(frozen=True)
class ScreenSettings:
    """The scalable mode's parameters (ScanConfig.screen_*)."""

    iterations: int = 3          # screen iterations per target
    sources: int = 100           # screen source classes per target (all when K - 1 is fewer)
    candidates: int = 2          # best-ranked targets estimated fully
    null_targets: int = 7        # random targets estimated fully for the null
    seed: int = 0


@dataclass(frozen=True, eq=False)
class ScreenOutcome:
    """Full estimates of the selected targets (ascending target order) and how they were chosen."""

    estimates: list[PatternEstimate]
    candidates: tuple[int, ...]
    null_targets: tuple[int, ...]
    scores: np.ndarray                 # (K,) screen progress per target (inf: reached pi in the screen)
    screen_sources: int
    warm_start: bool
    screen_image_passes: int


def screen_settings(config: ScanConfig) -> ScreenSettings:
    """The scan's screen parameters (its seed also draws the screen sources and null targets)."""
    return ScreenSettings(config.screen_iterations, config.screen_sources, config.screen_candidates,
                          config.screen_null_targets, config.seed)


def scalable_summary(outcome: ScreenOutcome, config: ScanConfig) -> ScalableSummary:
    """What the report records of the scalable mode."""
    return ScalableSummary(config.screen_iterations, outcome.screen_sources, outcome.warm_start,
                           outcome.candidates, outcome.null_targets,
                           tuple(float(s) for s in outcome.scores), outcome.screen_image_passes)


def select_targets(scores: np.ndarray, candidates: int, null_targets: int,
                   rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(the ``candidates`` highest ``scores``, ties to the lower class; ``null_targets`` classes
    drawn uniformly without replacement from all K), each in ascending order."""
    K = scores.size
    order = sorted(range(K), key=lambda t: (-scores[t], t))
    best = tuple(sorted(order[:candidates]))
    drawn = tuple(sorted(int(t) for t in rng.choice(K, size=min(null_targets, K), replace=False)))
    return best, drawn


def screen_jobs(num_classes: int, sources: int, rng: np.random.Generator) -> list[Job]:
    """One screen job per target: every other class, or ``sources`` of them drawn at random."""
    if num_classes - 1 <= sources:
        return lred_jobs(num_classes)
    jobs = []
    for t in range(num_classes):
        others = np.array([s for s in range(num_classes) if s != t])
        jobs.append(Job(t, tuple(sorted(int(s) for s in rng.choice(others, size=sources, replace=False)))))
    return jobs


def progress_scores(engine: Engine, batch_images: int) -> np.ndarray:
    """Per screen job: (J_t(v_t, w) - J_t(0, w)) / ||v_t||, J_t = sum_s w_s mean_{x in D_s}
    log p(t | [x + v]_c) (eq. (5)); inf for a job that reached pi (converged) in the screen.
    Forward passes only, counted in ``engine.forward_images``."""
    classifier, x, y, K = engine.classifier, engine.x_all, engine.y_all, engine.K
    scores = np.zeros(len(engine.jobs))
    with torch.no_grad():
        clean = torch.cat([classifier.log_posterior(classifier.scores(clip_pixels(x[s:s + batch_images])))
                           for s in range(0, x.shape[0], batch_images)])
        engine.forward_images += int(x.shape[0])
        for i, job in enumerate(engine.jobs):
            done = engine.results.get(i)
            if done is not None and done.status == STATUS_CONVERGED:
                scores[i] = math.inf
                continue
            rows, t = engine.batch.rows[i], job.target
            gain = torch.zeros(K, device=engine.device, dtype=engine.dtype)
            for start in range(0, rows.numel(), batch_images):
                idx = rows[start:start + batch_images]
                log_p = classifier.log_posterior(classifier.scores(clip_pixels(x[idx] + engine.v[i])))[:, t]
                gain.index_add_(0, y[idx], log_p - clean[idx, t])
                engine.forward_images += int(idx.numel())
            norm = float(torch.linalg.vector_norm(engine.v[i]))
            rise = float((engine.w[i] * gain * engine.inv_counts).sum())
            scores[i] = rise / norm if norm > 0 else -math.inf
    return scores


def estimate_scalable(classifier: DifferentiableClassifier, pixels: torch.Tensor, labels: torch.Tensor,
                      num_classes: int, *, pi: float, schedule: StepSchedule, max_iterations: int,
                      batch_images: int, screen: ScreenSettings, confirm: Confirm | None = None,
                      max_rejected_iterations: int = 0, progress: Progress | None = None,
                      cuda_graphs: bool = True, notice: Callable[[str], None] | None = None,
                      counts: PassCount | None = None) -> ScreenOutcome:
    """Steps 1-3 of the module docstring; ``counts`` is increased by every image pass."""
    rng = np.random.default_rng([screen.seed, 21])
    jobs = screen_jobs(num_classes, screen.sources, rng)
    warm = all(len(j.sources) == num_classes - 1 for j in jobs)
    common = dict(pi=pi, schedule=schedule, max_iterations=max_iterations, batch_images=batch_images,
                  confirm=confirm, max_rejected_iterations=max_rejected_iterations)
    engine: Engine | None = None
    scores = np.empty(num_classes)
    screen_passes = 0
    # warm: one engine for all K targets (K <= screen sources + 1, so its state is bounded);
    # else the screen runs SCREEN_GROUP targets at a time and keeps only their scores
    group = num_classes if warm else SCREEN_GROUP
    for start in range(0, num_classes, group):
        engine = Engine(classifier, pixels, labels, num_classes, jobs[start:start + group],
                        **common)  # type: ignore[arg-type]
        engine.iterate(range(len(engine.jobs)), progress, cuda_graphs, notice, rounds=screen.iterations)
        scores[start:start + group] = progress_scores(engine, batch_images)
        screen_passes += engine.image_passes
        if counts is not None:
            counts.add(engine.image_passes, engine.forward_images)
    best, drawn = select_targets(scores, screen.candidates, screen.null_targets, rng)
    selected = sorted(set(best) | set(drawn))
    assert engine is not None
    if warm:
        before = (engine.image_passes, engine.forward_images)
        engine.iterate(selected, progress, cuda_graphs, notice)
        estimates = [engine.results[t] for t in selected]
    else:
        engine = Engine(classifier, pixels, labels, num_classes, [lred_jobs(num_classes)[t] for t in selected],
                        **common)  # type: ignore[arg-type]
        before = (0, 0)
        estimates = engine.run(progress, cuda_graphs, notice)
    if counts is not None:
        counts.add(engine.image_passes - before[0], engine.forward_images - before[1])
    return ScreenOutcome(estimates, best, drawn, scores, len(jobs[0].sources), warm, screen_passes)


def scalable_test(norms: np.ndarray, targets: Sequence[int], null_targets: Sequence[int], num_classes: int,
                  alpha: float, basis: str = "calibrated") -> detection.DetectionResult:
    """Step 4 of the module docstring. ``norms`` ||v_t|| of the estimated ``targets`` (same
    order); the null is fitted to those of ``null_targets`` (a subset of ``targets``) but the
    largest r_t; the p-value is 1 - G(r_max)^K with K = ``num_classes``. The result's
    statistics and inferred_target index ``targets``."""
    norms = np.asarray(norms, dtype=np.float64)
    if norms.ndim != 1 or not np.all(np.isfinite(norms)) or np.any(norms <= 0):
        raise LredError("pattern norms must be positive and finite for the detection test")
    statistics = 1.0 / norms
    inferred = int(np.argmax(statistics))
    position = {t: i for i, t in enumerate(targets)}
    null = np.array([statistics[position[t]] for t in null_targets if position[t] != inferred])
    shape, scale = detection.fit_null(null)
    log_p = detection.order_statistic_log_p_value(float(statistics[inferred]), shape, scale, num_classes)
    calibrated = calibrate_subset(log_p, shape, num_classes, null.size)
    return detection.DetectionResult(tuple(float(s) for s in statistics), inferred, shape, scale, log_p,
                                     calibrated, alpha, basis)


def null_log_p_values_subset(shape: float, num_classes: int, null_size: int,
                             draws: int = detection.CALIBRATION_DRAWS,
                             seed: int = detection.CALIBRATION_SEED) -> np.ndarray:
    """The scalable test's log p-value on ``draws`` sets of K i.i.d. Gamma statistics: r_max the
    largest of the K, the null fitted to ``null_size`` of the other K - 1.

    Drawn without holding K statistics per draw (memory O(draws * null_size) for any K): the
    largest of K has distribution function G^K, so r_max = G^-1(U^(1/K)); given r_max, the
    others are i.i.d. G truncated to (0, r_max), r = G^-1(U' G(r_max))."""
    rng = np.random.default_rng(seed)
    r_max = special.gammaincinv(shape, rng.random(draws) ** (1.0 / num_classes))
    below = special.gammainc(shape, r_max)
    rest = special.gammaincinv(shape, rng.random((draws, min(null_size, num_classes - 1))) * below[:, None])
    rest = np.maximum(rest, np.finfo(np.float64).tiny)
    fitted_shape, fitted_scale = detection.gamma_mle(rest)
    with np.errstate(divide="ignore", invalid="ignore"):
        survival = special.gammaincc(fitted_shape, r_max / fitted_scale)
        log_p = np.log(-np.expm1(num_classes * np.log1p(-survival)))
    return np.where(np.isfinite(log_p), log_p, -np.inf)


def calibrate_subset(log_p_value: float, shape: float, num_classes: int, null_size: int) -> float:
    """log P(scalable p-value <= observed) under i.i.d. Gamma statistics (as detection.calibrate_log_p_value)."""
    null = null_log_p_values_subset(shape, num_classes, null_size)
    return math.log((1 + int(np.count_nonzero(null <= log_p_value))) / (null.size + 1))
