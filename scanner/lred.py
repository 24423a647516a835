"""L-RED pattern estimation: Algorithm 1 of Xiang, Miller & Kesidis (App. A.2), all targets at once.

For each putative target class t, starting from v = 0 and w uniform over s != t (w_t = 0):

    line 2   w(0) = 1/(K-1) for s != t, w_t = 0                         weights.uniform_weights
    line 4   v(tau+1) = v(tau) + delta * grad_v J_t(v(tau), w(tau)) / ||grad_v J_t||_2     eq. (5)
             J_t(v, w) = sum_{s != t} w_s mean_{x in D_s} log p(t | [x + v]_c)
                                                 engine.Engine.step / advance, engine_passes
    line 5   stop when Q_t(v(tau+1), w(tau)) = sum_s w_s q_st(v(tau+1)) >= pi
                                                 engine.Engine.advance (and confirm: onnxruntime)
    line 8   T(tau+1) = -log Q_t(v(tau+1), w(tau))                                        eq. (7)
    line 10  w_s(tau+1) = softmax_{s != t}(q_st(v(tau+1)) / T(tau+1))                     eq. (8)
    line 12  w(tau+1) = w(0) when Q_t(v(tau+1), w(tau)) = 0             weights.update_weights

The batched engine (``engine.py``) runs every job's lines 4-12 in one forward/backward pass per
iteration; ``algorithm1.py`` is the same algorithm read literally (one target at a time), the
specification the engine is tested against. The step length delta of line 4 comes from a step
schedule (``schedules.py``): ``FixedStep`` is Algorithm 1 as written, ``WeightControlledStep``
the scan's default (docs/method.md "Step schedule"); ``ScanConfig.schedule`` picks the scan's.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .jobs import Job

if TYPE_CHECKING:   # torch loads with the engine, not with the method registry (scanner/jobs.py)
    import torch

    from .estimation import Confirm, DifferentiableClassifier, PatternEstimate, Progress
    from .schedules import StepSchedule


@dataclass
class PassCount:
    """Image rows a pattern estimation evaluated: ``image_passes`` through forward+backward
    (one per image row and iteration: the K(K-1)N per iteration of the full method), and
    ``forward_images`` through a forward pass alone (bisection of a crossing step, screening)."""

    image_passes: int = 0
    forward_images: int = 0

    def add(self, image_passes: int, forward_images: int = 0) -> None:
        self.image_passes += image_passes
        self.forward_images += forward_images


@dataclass(frozen=True)
class Sampling:
    """Sampled sources (scanner/sampled.py): ``draws`` classes drawn by w per target and iteration,
    every q_st measured every ``refresh_every`` iterations, the draws seeded by ``seed``."""

    draws: int
    refresh_every: int
    seed: int


def exact_passes(estimates: Sequence[PatternEstimate], labels: Sequence[int]) -> tuple[int, int]:
    """(forward+backward, forward-only) image rows of ``algorithm1.estimate_patterns_exact``: per
    job and iteration one forward+backward pass of its rows and one forward pass for line 5 (and
    the forward+backward that found a zero gradient)."""
    from .estimation import STATUS_ZERO_GRADIENT

    counts: dict[int, int] = {}
    for label in labels:
        counts[int(label)] = counts.get(int(label), 0) + 1
    both = forward = 0
    for e in estimates:
        rows = sum(counts.get(s, 0) for s in e.sources)
        both += rows * (e.iterations + (e.status == STATUS_ZERO_GRADIENT))
        forward += rows * e.iterations
    return both, forward


def lred_jobs(num_classes: int) -> list[Job]:
    """L-RED: one job per putative target class, over all other classes (Sec. 3.1)."""
    return [Job(t, tuple(s for s in range(num_classes) if s != t)) for t in range(num_classes)]


def estimate_patterns(classifier: DifferentiableClassifier, pixels: torch.Tensor, labels: torch.Tensor,
                      num_classes: int, *, pi: float, schedule: StepSchedule, max_iterations: int,
                      batch_images: int, jobs: Sequence[Job] | None = None, confirm: Confirm | None = None,
                      max_rejected_iterations: int = 0, progress: Progress | None = None,
                      cuda_graphs: bool = True, notice: Callable[[str], None] | None = None,
                      counts: PassCount | None = None, sampling: Sampling | None = None) -> list[PatternEstimate]:
    """Run Algorithm 1 for every job (by default L-RED: every putative target class).

    ``pixels`` (M, *pixel_shape) clean images in [0, 1], ``labels`` (M,) their classes;
    ``schedule`` the step lengths and updates of w (``schedules.py``); ``max_iterations`` tau_max;
    images go through the model ``batch_images`` at a time at most.
    ``confirm`` is asked before a job is accepted (onnxruntime's view of Q_t >= pi); a job it
    rejects keeps iterating for at most ``max_rejected_iterations`` more steps.
    ``cuda_graphs``: on a CUDA device, replay each unit's passes as a CUDA graph from its second
    iteration on (scanner/cuda_graphs.py); ``notice`` hears why, if that is refused.
    ``counts``, when given, is increased by the image rows the estimation evaluated.
    ``sampling``, when given, draws each iteration's sources by w (scanner/sampled.py) instead of
    passing every source's images.
    """
    from .engine import Engine

    jobs = lred_jobs(num_classes) if jobs is None else list(jobs)
    common = dict(pi=pi, schedule=schedule, max_iterations=max_iterations, batch_images=batch_images,
                  confirm=confirm, max_rejected_iterations=max_rejected_iterations)
    if sampling is None:
        engine = Engine(classifier, pixels, labels, num_classes, jobs, **common)  # type: ignore[arg-type]
    else:
        from .sampled import SampledEngine
        if cuda_graphs and classifier.device.type == "cuda":    # a graph replays one layout; these change
            cuda_graphs = False
            if notice is not None:
                notice("CUDA graphs off for this scan: sampled sources lay out new passes every iteration")
        engine = SampledEngine(classifier, pixels, labels, num_classes, jobs, draws=sampling.draws,
                               refresh_every=sampling.refresh_every, seed=sampling.seed, **common)
    estimates = engine.run(progress, cuda_graphs, notice)
    if counts is not None:
        counts.add(engine.image_passes, engine.forward_images)
    return estimates
