"""Scans for patch triggers (``--method lred-patch``, ``--method nc``) and ``--trigger both``.

The steps are the additive scan's (scanner/pipeline.py) with a mask m and pattern u in place of
v: prepare -> mask/pattern estimation (patch_engine.py, every candidate confirmed by onnxruntime
before it is kept) -> onnxruntime's fractions at every final (1 - m) x + m u and its scores
there against the converted module's -> the method's test on ||m_t||_1 -> the evidence rule
(evidence.py: an estimate that did not converge or that onnxruntime does not confirm never
carries a verdict) -> the report, with Neural Cleanse's anomaly index beside the test.

``--trigger both`` prepares once, runs lred and lred-patch on the same prepared scan, each test
at alpha / 2 (Bonferroni: the chance that either fires on a clean model is at most alpha), and
reports "backdoor" when either fires (docs/method.md "Patch triggers").
"""
from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from . import nc
from .audit import utc_now
from .class_names import check_class_names
from .config import ScanConfig
from .deadline import Deadline
from .detection import DetectionResult
from .errors import ConfigError
from .estimation import PatternEstimate
from .evidence import require_evidence
from .methods import Method, method_named
from .patch_engine import PatchEngine, PatchEstimate, patched
from .pipeline import ScanOutcome, _scan
from .prepare import PreparedScan, ProgressCallback, StepTimer, prepare
from .report import VERDICT_BACKDOOR, VERDICT_CLEAN, ScanReport, ScanTest
from .report_builder import build_report
from .resume import config_digest
from .verify import ReferenceCheck


class PatchCheck(ReferenceCheck):
    """onnxruntime's fractions for patched images (1 - m) x + m u (eq. (13)) on the original graph."""

    def estimate_pixels(self, estimate: PatternEstimate) -> np.ndarray:
        assert isinstance(estimate, PatchEstimate)
        return patched(self.pixels[self.labels != estimate.target_class], estimate.mask_pixels, estimate.pattern)

    def confirm_patches(self, targets: Sequence[int], masks: np.ndarray, patterns: np.ndarray,
                        weights: np.ndarray) -> np.ndarray:
        """For the estimation loop, in one onnxruntime call: is Q_t >= pi for each (m, u)?
        ``masks`` and ``patterns`` (k, *pixel_shape) in the model's layout, ``weights`` (k, K)."""
        images = [patched(self.pixels[self.labels != t], m, u) for t, m, u in zip(targets, masks, patterns)]
        scores = self.reference.scores(self.transform.normalize(np.concatenate(images)).astype(np.float32))
        ends = np.cumsum([len(i) for i in images])[:-1]
        return np.array([self._fractions(t, w, s).fraction >= self.pi
                         for t, w, s in zip(targets, weights, np.split(scores, ends))], dtype=bool)


def to_layout(prepared: PreparedScan) -> Callable[[torch.Tensor], torch.Tensor]:
    """(n, H, W, C) -> (n, *pixel_shape), the inverse of InputTransform.from_pixels."""
    transform = prepared.transform
    if transform.layout == "nchw":
        return lambda t: t.permute(0, 3, 1, 2)
    return lambda t: t.reshape((t.shape[0],) + tuple(transform.pixel_shape))


def scan_patch(model_path: str | os.PathLike, data_path: str | os.PathLike, config: ScanConfig,
               on_progress: ProgressCallback | None, class_names: tuple[str, ...] = ()) -> ScanOutcome:
    """A patch method's scan, or ``--trigger both`` (module docstring)."""
    started, started_at = time.perf_counter(), utc_now()
    deadline = Deadline(config.timeout)
    prepared = prepare(model_path, data_path, config, on_progress, deadline=deadline)
    check_class_names(class_names, prepared.num_classes)
    if config.trigger != "both":
        return estimate_patches(prepared, config, on_progress, deadline, started, started_at, class_names)
    half = dataclasses.replace(config, alpha=config.alpha / 2, trigger="additive", patch_shift=0)
    additive = _scan(model_path, data_path, half, on_progress, class_names, prepared=prepared, deadline=deadline)
    patch = estimate_patches(prepared, dataclasses.replace(half, method="lred-patch", patch_shift=config.patch_shift),
                             on_progress, deadline, time.perf_counter(), started_at, class_names)
    return combine(additive, patch, config, time.perf_counter() - started)


def estimate_patches(prepared: PreparedScan, config: ScanConfig, on_progress: ProgressCallback | None,
                     deadline: Deadline, started: float, started_at: str,
                     class_names: tuple[str, ...] = ()) -> ScanOutcome:
    """Estimation, verification, test and report of a patch method on a prepared scan."""
    say = on_progress or (lambda stage, message: None)
    method = method_named(config.method)
    timing = dict(prepared.timing)
    lap = StepTimer(timing).lap
    classifier, x, y, K = prepared.classifier, prepared.x, prepared.y, prepared.num_classes
    check = PatchCheck(prepared.reference, prepared.transform, x, y, K, config.pi)
    jobs = method.jobs(K)
    say("estimate", f"{config.method}: {len(jobs)} mask estimations on {x.shape[0]} images ({prepared.device})")

    def progress(iteration: int, finished: int, total: int) -> None:
        deadline.check(f"estimating masks ({finished}/{total} done after {iteration} iterations)")
        say("estimate", f"iteration {iteration}: {finished}/{total} estimations done")

    height, width, _ = prepared.transform.image_shape
    if config.patch_shift >= min(height, width):
        raise ConfigError(f"--patch-shift {config.patch_shift} is not below the image size {height}x{width}")
    engine = PatchEngine(classifier, torch.as_tensor(x), torch.as_tensor(y), K, jobs,
                         prepared.transform.image_shape, to_layout(prepared), pi=config.pi,
                         max_iterations=config.patch_iterations, batch_images=config.batch_images,
                         seed=config.seed, confirm=check.confirm_patches, shift=config.patch_shift,
                         images_hwc=torch.as_tensor(prepared.transform.from_pixels(x)) if config.patch_shift else None)
    estimates: list[PatternEstimate] = list(engine.run(progress))
    lap("estimate")
    say("verify", "re-computing misclassification fractions with onnxruntime")
    verified, at_patterns = check.verify(estimates, classifier, prepared.rtol, config.parity_atol,
                                         config.batch_images)
    lap("verify")
    say("test", "Neural Cleanse's anomaly index" if method.test is nc.anomaly_test else "order-statistic test")
    norms = np.array([e.pattern_norm for e in estimates])
    result = method.test(norms, config.alpha, config.p_value_basis)

    def flags_on(kept: list[int]) -> int | None:
        alone = method.test(norms[kept], config.alpha, config.p_value_basis)
        return kept[alone.inferred_target] if alone.detected else None

    notes = require_evidence(estimates, [v.fraction for v in verified], config.pi, result.inferred_target,
                             result.detected, flags_on, norm="||m_t||_1", iterations_option="--patch-iterations")
    lap("test")
    timing["total_seconds"] = round(time.perf_counter() - started, 4)
    report = build_report(prepared, config, method, estimates, verified, result, [], timing, at_patterns,
                          notes, started_at, class_names, (engine.image_passes, 0))
    index = nc.anomaly_indices(norms)
    classes = tuple(dataclasses.replace(c, mask_l1=c.pattern_norm, anomaly_index=float(index[c.target_class]))
                    for c in report.classes)
    report = dataclasses.replace(report, classes=classes, trigger="patch", cuda_graphs="n/a",
                                 tests=(scan_test(report, method, result, config.alpha, norms),))
    patches = [e for e in estimates if isinstance(e, PatchEstimate)]
    return ScanOutcome(report, {}, masks={e.target_class: e.mask for e in patches},
                       masked_patterns={e.target_class: prepared.transform.from_pixels(e.masked_pattern)
                                        .astype(np.float32) for e in patches})


def scan_test(report: ScanReport, method: Method, result: DetectionResult, alpha: float,
              norms: np.ndarray) -> ScanTest:
    """The report's summary of one test (``report`` built from ``result`` over ``norms``)."""
    anomaly = nc.anomaly_indices(norms)
    suspect = report.most_suspicious_class
    gamma = method.test is not nc.anomaly_test
    return ScanTest(
        method=method.name, trigger=method.engine,
        statistic="1/||m_t||_1" if method.engine == "patch" else "1/||v_t||_2",
        decision="order-statistic Gamma test (Sec. 3.2)" if gamma else "MAD anomaly index > 2 (Neural Cleanse)",
        alpha=alpha if gamma else None, p_value=report.p_value if gamma else None,
        log10_p_value=report.log10_p_value if gamma else None, detected=report.backdoor_found,
        target_class=report.target_class, source_classes=report.source_classes, most_suspicious_class=suspect,
        anomaly_index=float(anomaly[result.inferred_target]),
        anomaly_flagged=result.inferred_target in nc.flagged_classes(norms))


def combine(additive: ScanOutcome, patch: ScanOutcome, config: ScanConfig, seconds: float) -> ScanOutcome:
    """``--trigger both``: one report, "backdoor" when either test (each at alpha / 2) fires; the
    top-level p-value fields, classes and patterns are the additive test's, the target and sources
    those of the first test that fired (additive before patch); ``tests`` has both."""
    a, p = additive.report, patch.report
    norms = np.array([c.pattern_norm for c in a.classes])
    index = nc.anomaly_indices(norms)
    first = a.tests[0] if a.tests else _additive_test(a, config, norms)
    tests = (first, p.tests[0])
    fired = [t for t in tests if t.detected]
    timing = {**a.timing, **{f"patch_{k}": v for k, v in p.timing.items() if k not in a.timing or
                             k in ("estimate_seconds", "verify_seconds", "test_seconds", "total_seconds")}}
    timing["total_seconds"] = round(seconds, 4)
    report = dataclasses.replace(
        a, verdict=VERDICT_BACKDOOR if fired else VERDICT_CLEAN, alpha=config.alpha, config=config.as_dict(),
        target_class=fired[0].target_class if fired else None,
        source_classes=fired[0].source_classes if fired else (),
        classes=tuple(dataclasses.replace(c, anomaly_index=float(index[c.target_class])) for c in a.classes),
        trigger="both", tests=tests, patch_classes=p.classes, timing=timing, config_digest=config_digest(config),
        image_passes=a.image_passes + p.image_passes, forward_images=a.forward_images + p.forward_images,
        warnings=a.warnings + tuple(f"lred-patch: {w}" for w in p.warnings)
        + (f"--trigger both: each of the two tests ran at alpha/2 = {config.alpha / 2:g} (Bonferroni)",))
    return ScanOutcome(report, additive.patterns, examples=additive.examples, masks=patch.masks,
                       masked_patterns=patch.masked_patterns)


def _additive_test(report: ScanReport, config: ScanConfig, norms: np.ndarray) -> ScanTest:
    suspect = report.most_suspicious_class
    return ScanTest(method=report.method, trigger="additive", statistic="1/||v_t||_2",
                    decision="order-statistic Gamma test (Sec. 3.2)", alpha=config.alpha / 2,
                    p_value=report.p_value, log10_p_value=report.log10_p_value, detected=report.backdoor_found,
                    target_class=report.target_class, source_classes=report.source_classes,
                    most_suspicious_class=suspect, anomaly_index=float(nc.anomaly_indices(norms)[suspect]),
                    anomaly_flagged=suspect in nc.flagged_classes(norms))

