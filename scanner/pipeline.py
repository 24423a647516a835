"""The scan, step by step: model -> clean data -> conversion gate -> estimation -> verification -> test."""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import detection, lred
from .algorithm1 import estimate_patterns_exact
from .allocator import reuse_freed_memory
from .audit import utc_now
from .class_names import check_class_names
from .config import ScanConfig
from .deadline import Deadline
from .errors import ConfigError, EstimationError, LredError, ResourceError, is_out_of_memory
from .estimation import PatternEstimate, Progress
from .evidence import require_evidence
from .examples import PatchedExample, patched_examples
from .jobs import Job
from .methods import method_named
from .prepare import PreparedScan, ProgressCallback, StepTimer, prepare
from .report import ScanReport
from .report_builder import build_report, job_name
from .scalable import ScreenOutcome, estimate_scalable, scalable_summary, scalable_test, screen_settings
from .verify import ReferenceCheck

__all__ = ["Estimate", "ProgressCallback", "ScanOutcome", "estimate_locally", "scan"]

# estimate(prepared, config, jobs, progress, notice, counts) -> one PatternEstimate per job, in job
# order; the image rows it evaluated are added to ``counts``
Estimate = Callable[[PreparedScan, ScanConfig, Sequence[Job], Progress, Callable[[str], None], "lred.PassCount"],
                    list[PatternEstimate]]


@dataclass(frozen=True, eq=False)
class ScanOutcome:
    """The report and the estimated patterns v_t, as (H, W, C) float32 arrays in pixel units; ``examples``:
    the most suspicious target's pattern on clean images of its top sources, labelled by onnxruntime."""

    report: ScanReport
    patterns: dict[int | tuple[int, int], np.ndarray]   # by target class; by (source, target) for pairs
    examples: tuple[PatchedExample, ...] = ()
    masks: dict[int, np.ndarray] = field(default_factory=dict)            # patch: m_t (H, W) by target
    masked_patterns: dict[int, np.ndarray] = field(default_factory=dict)  # patch: m_t * u_t (H, W, C)


def scan(model_path: str | os.PathLike, data_path: str | os.PathLike,
         config: ScanConfig | None = None, on_progress: ProgressCallback | None = None,
         class_names: Sequence[str] = (), estimate: Estimate | None = None) -> ScanOutcome:
    """Scan one ONNX classifier for an imperceptible backdoor with L-RED (``config``: the defaults if None).
    ``class_names``: one label per class for the reports (``scanner.class_names``), or none.
    ``estimate`` runs the pattern estimations (None: ``estimate_locally``; scanner/cluster.py
    splits them over a Dask cluster).

    The first scan of a process sets glibc's allocator to keep freed memory (``allocator.py``)."""
    reuse_freed_memory()
    if config is None:
        config = ScanConfig()
    try:
        return _scan(model_path, data_path, config, on_progress, tuple(class_names), estimate=estimate)
    except LredError:
        raise
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        raise ResourceError(
            f"ran out of memory ({type(exc).__name__}); lower --batch-images "
            f"(now {config.batch_images} image rows per forward/backward pass)"
            + {"cuda": " or scan with --device cpu", "auto": " (or, if it ran on a GPU, scan with --device cpu)"}
            .get(config.device, "")) from exc


def estimate_locally(prepared: PreparedScan, config: ScanConfig, jobs: Sequence[Job],
                     progress: Progress | None = None, notice: Callable[[str], None] | None = None,
                     counts: lred.PassCount | None = None) -> list[PatternEstimate]:
    """Step 5, Algorithm 1 (App. A.2) for ``jobs`` in this process: one PatternEstimate per job, in
    job order, each accepted only when onnxruntime confirms Q_t >= pi. A job's estimate does not
    depend on the jobs run beside it (docs/cluster.md), so the jobs can be split over processes."""
    check = ReferenceCheck(prepared.reference, prepared.transform, prepared.x, prepared.y, prepared.num_classes,
                           config.pi)
    x, y = torch.as_tensor(prepared.x), torch.as_tensor(prepared.y)
    torch.manual_seed(config.seed)
    common: dict[str, Any] = dict(pi=config.pi, max_iterations=config.max_iterations, jobs=jobs, progress=progress)
    if config.exact:
        estimates = estimate_patterns_exact(prepared.classifier, x, y, prepared.num_classes, delta=config.delta,
                                            **common)
        if counts is not None:
            counts.add(*lred.exact_passes(estimates, prepared.y.tolist()))
        return estimates
    return lred.estimate_patterns(
        prepared.classifier, x, y, prepared.num_classes, schedule=config.schedule,
        batch_images=config.batch_images, confirm=check.confirm,
        max_rejected_iterations=config.verify_extra_iterations, cuda_graphs=config.cuda_graphs,
        notice=notice, counts=counts, sampling=config.sampling_for(prepared.num_classes), **common)


def _scan(model_path: str | os.PathLike, data_path: str | os.PathLike, config: ScanConfig,
          on_progress: ProgressCallback | None, class_names: tuple[str, ...],
          prepared: PreparedScan | None = None, deadline: Deadline | None = None,
          estimate: Estimate | None = None) -> ScanOutcome:
    say = on_progress or (lambda stage, message: None)
    started = time.perf_counter()
    started_at = utc_now()
    method = method_named(config.method)
    if method.engine == "patch" or config.trigger == "both":   # masks and patterns (eq. (13))
        from .patch_scan import scan_patch
        return scan_patch(model_path, data_path, config, on_progress, class_names)
    deadline = deadline or Deadline(config.timeout)
    if prepared is None:
        prepared = prepare(model_path, data_path, config, on_progress, deadline=deadline)
    check_class_names(class_names, prepared.num_classes)
    timing = dict(prepared.timing)
    lap = StepTimer(timing).lap

    classifier, x, y, num_classes, device = (prepared.classifier, prepared.x, prepared.y, prepared.num_classes,
                                             prepared.device)
    check = ReferenceCheck(prepared.reference, prepared.transform, x, y, num_classes, config.pi)
    jobs = method.jobs(num_classes)
    say("estimate", f"{config.method}: {len(jobs)} pattern estimations on {x.shape[0]} images ({device}"
                    f"{', exact per-target loop' if config.exact else ''}"
                    f"{', scalable mode: a screen, then a few in full' if config.scalable_for(num_classes) else ''})")

    def progress(iteration: int, finished: int, total: int) -> None:
        deadline.check(f"estimating patterns ({finished}/{total} done after {iteration} iterations)")
        say("estimate", f"iteration {iteration}: {finished}/{total} estimations done")

    refusals: list[str] = []                  # why CUDA graphs were turned off, if they were

    def notice(message: str) -> None:
        refusals.append(message)
        say("estimate", message)

    counts = lred.PassCount()
    screened: ScreenOutcome | None = None
    if config.scalable_for(num_classes) and not config.exact:
        if estimate is not None:
            raise ConfigError("--scalable runs in one process: scan without --scheduler")
        screened = estimate_scalable(
            classifier, torch.as_tensor(x), torch.as_tensor(y), num_classes, schedule=config.schedule,
            batch_images=config.batch_images, screen=screen_settings(config), confirm=check.confirm,
            max_rejected_iterations=config.verify_extra_iterations, cuda_graphs=config.cuda_graphs,
            notice=notice, counts=counts, pi=config.pi, max_iterations=config.max_iterations, progress=progress)
        estimates = screened.estimates
    else:
        estimates = (estimate or estimate_locally)(prepared, config, jobs, progress, notice, counts)
    lap("estimate")
    if device.type == "cuda":
        timing["cuda_peak_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)

    say("verify", "re-computing misclassification fractions with onnxruntime")
    verified, at_patterns = check.verify(estimates, classifier, prepared.rtol, config.parity_atol,
                                         config.batch_images)
    lap("verify")

    say("test", "order-statistic test")
    norms = np.array([e.pattern_norm for e in estimates])
    stuck = [e for e, norm in zip(estimates, norms) if not (np.isfinite(norm) and norm > 0)]
    if stuck:
        raise EstimationError(
            f"pattern estimation for {', '.join(job_name(e) for e in stuck[:5])}"
            f"{f' and {len(stuck) - 5} more' if len(stuck) > 5 else ''} could not leave v = 0 "
            f"(status {stuck[0].status}): the model passes no usable gradient from those classes' "
            "scores to the input (quantized, thresholded or saturated operators?); the order-statistic "
            "test needs a positive ||v_t|| for every class")
    def test(kept: list[int]) -> detection.DetectionResult:
        """The order-statistic test on the estimates ``kept`` (indices) alone."""
        if screened is None:
            return method.test(norms[kept], config.alpha, config.p_value_basis)
        targets = [estimates[i].target_class for i in kept]
        null = [t for t in screened.null_targets if t in targets]
        return scalable_test(norms[kept], targets, null, num_classes, config.alpha, config.p_value_basis)

    result = test(list(range(len(estimates))))

    def flags_on(kept: list[int]) -> int | None:
        """The test on the estimates ``kept`` alone: the index (into all estimates) it flags, or None."""
        alone = test(kept)
        return kept[alone.inferred_target] if alone.detected else None

    notes = require_evidence(estimates, [v.fraction for v in verified], config.pi, result.inferred_target,
                             result.detected, flags_on)
    lap("test")
    timing["total_seconds"] = round(time.perf_counter() - started, 4)

    report = build_report(prepared, config, method, estimates, verified, result, refusals, timing,
                          at_patterns, notes, started_at, class_names, (counts.image_passes, counts.forward_images),
                          None if screened is None else scalable_summary(screened, config))
    patterns = {(e.target_class if not method.reports_pairs else (e.sources[0], e.target_class)):
                prepared.transform.from_pixels(e.pattern).astype(np.float32) for e in estimates}
    return ScanOutcome(report, patterns, patched_examples(prepared, estimates[result.inferred_target]))
