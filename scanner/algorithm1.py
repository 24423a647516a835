"""Algorithm 1 of the paper exactly as it reads: one putative target at a time, fixed step,
and a second forward pass for the stopping check of line 5.

This is the baseline for every speed claim (``lred scan --exact``) and the specification the
batched engine (``engine.py``, called by ``lred.py``) is tested against: with a fixed step both
must give the same patterns.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .clipping import clip_pixels
from .estimation import (
    STATUS_CONVERGED,
    STATUS_MAX_ITERATIONS,
    STATUS_ZERO_GRADIENT,
    DifferentiableClassifier,
    PatternEstimate,
    Progress,
)
from .lred import lred_jobs
from .weights import Job, uniform_weights, update_weights


def estimate_pattern_exact(classifier: DifferentiableClassifier, pixels: torch.Tensor, labels: torch.Tensor,
                           num_classes: int, target: int, *, pi: float, delta: float,
                           max_iterations: int, sources: Sequence[int] | None = None,
                           fixed_weights: bool = False, tick: Callable[[int], None] | None = None) -> PatternEstimate:
    """Algorithm 1 for one putative target class ``target`` (App. A.2, line by line).

    ``sources`` defaults to every class but the target (L-RED); ``fixed_weights`` keeps w(0);
    ``tick(tau)`` is called after every iteration (progress, and the scan's time limit).
    """
    device = classifier.device
    sources = tuple(s for s in range(num_classes) if s != target) if sources is None else tuple(sources)
    keep = torch.isin(labels, torch.as_tensor(sources, dtype=labels.dtype))
    x = pixels[keep].to(device)
    y = labels[keep].to(device)
    K = num_classes
    counts = torch.bincount(y, minlength=K).to(x.dtype)
    inv_counts = torch.where(counts > 0, 1.0 / counts.clamp_min(1), torch.zeros_like(counts))
    target_rows = torch.full((x.shape[0], 1), target, device=device, dtype=torch.long)
    mask = torch.ones(1, K, dtype=torch.bool, device=device)
    mask[0, list(sources)] = False

    w0 = torch.as_tensor(uniform_weights(K, target, sources), device=device, dtype=x.dtype)   # line 2
    w = w0.clone()
    v = torch.zeros(x.shape[1:], device=device, dtype=x.dtype)
    q = torch.zeros(K, device=device, dtype=x.dtype)
    fraction, tau, status = 0.0, 0, STATUS_MAX_ITERATIONS
    while tau < max_iterations:                                                       # line 3
        v_var = v.clone().requires_grad_(True)
        with torch.enable_grad():
            log_p = classifier.log_posterior(classifier.scores(clip_pixels(x + v_var)))
            objective = ((w * inv_counts)[y] * log_p.gather(1, target_rows)[:, 0]).sum()   # J_t
            (gradient,) = torch.autograd.grad(objective, v_var)
        norm = torch.linalg.vector_norm(gradient)
        if not bool(torch.isfinite(norm)) or float(norm) == 0.0:
            status = STATUS_ZERO_GRADIENT
            break
        v = v + delta * gradient / norm                                                # line 4
        tau += 1
        if tick is not None:
            tick(tau)
        with torch.no_grad():                                                          # second pass
            hits = (classifier.scores(clip_pixels(x + v)).argmax(dim=1) == target).to(x.dtype)
        q = torch.zeros(K, device=device, dtype=x.dtype).index_add_(0, y, hits) * inv_counts
        fraction = float((w * q).sum())
        if fraction >= pi:                                                             # line 5
            status = STATUS_CONVERGED
            break
        if not fixed_weights:                                                          # lines 7-12
            w = update_weights(q[None], torch.as_tensor([fraction], device=device, dtype=x.dtype), mask)[0]
    return PatternEstimate(target_class=target, pattern=v.detach().cpu().numpy().copy(), iterations=tau,
                           misclassification=q.detach().cpu().double().numpy(),
                           source_weights=w.detach().cpu().double().numpy(), fraction=fraction,
                           status=status, sources=sources)


def estimate_patterns_exact(classifier: DifferentiableClassifier, pixels: torch.Tensor, labels: torch.Tensor,
                            num_classes: int, *, pi: float, delta: float, max_iterations: int,
                            jobs: Sequence[Job] | None = None, progress: Progress | None = None,
                            ) -> list[PatternEstimate]:
    """Algorithm 1 for every job (default: every putative target class), one after the other."""
    jobs = lred_jobs(num_classes) if jobs is None else list(jobs)
    results = []
    for number, job in enumerate(jobs, 1):
        def tick(tau: int, done: int = number - 1) -> None:
            if progress is not None:
                progress(tau, done, len(jobs))

        results.append(estimate_pattern_exact(classifier, pixels, labels, num_classes, job.target, pi=pi,
                                              delta=delta, max_iterations=max_iterations, sources=job.sources,
                                              fixed_weights=not job.adapt_weights, tick=tick))
        if progress is not None:
            progress(results[-1].iterations, number, len(jobs))
    return results
