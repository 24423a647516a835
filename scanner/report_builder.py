"""Assembly of the frozen ScanReport (``report.py``) from a prepared scan, the pattern estimates,
onnxruntime's verification and the order-statistic test."""
from __future__ import annotations

import importlib.metadata
import math
from collections.abc import Sequence

import numpy as np
import torch

import converters

from . import detection
from .audit import audit_trail
from .config import ScanConfig
from .estimation import STATUS_CONVERGED, PatternEstimate
from .methods import METHODS, Method
from .prepare import PreparedScan
from .report import (
    VERDICT_BACKDOOR,
    VERDICT_CLEAN,
    ClassReport,
    DataSummary,
    ModelSummary,
    PairReport,
    ParitySummary,
    ScalableSummary,
    ScanReport,
)
from .resume import config_digest
from .verify import VerifiedFractions


def versions() -> dict[str, str]:
    """Versions of lred and the libraries whose numbers the report depends on."""
    found = {}
    for name in ("lred", "torch", "onnx", "onnx2torch", "numpy", "scipy"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    import onnxruntime
    found["onnxruntime"] = onnxruntime.__version__
    return found


def build_report(prepared: PreparedScan, config: ScanConfig, method: Method,
                 estimates: list[PatternEstimate], verified: Sequence[VerifiedFractions],
                 result: detection.DetectionResult, refusals: list[str], timing: dict[str, float],
                 at_patterns: converters.Parity, notes: Sequence[str] = (),
                 started_at: str | None = None, class_names: tuple[str, ...] = (),
                 image_passes: tuple[int, int] = (0, 0), scalable: ScalableSummary | None = None) -> ScanReport:
    """The report of one scan, started at ``started_at`` (``audit.utc_now()``; None: now) for the audit trail.
    ``estimates`` and ``verified`` are per job, in job order;
    ``result`` is the test over their statistics; ``refusals`` why CUDA graphs were turned off;
    ``at_patterns`` the comparison with onnxruntime at the final patterns; ``notes`` more warnings;
    ``class_names`` labels for the reports only; ``image_passes`` (forward+backward, forward-only) image
    rows of the estimation; ``scalable`` the scalable mode's record (then ``estimates`` cover the
    selected targets only)."""
    norms = np.array([e.pattern_norm for e in estimates])
    detected = result.detected
    suspect = estimates[result.inferred_target]
    sources = method.source_classes(suspect, config.pi)
    per_target = _best_per_target(estimates, prepared.num_classes)
    classes = tuple(
        ClassReport(target_class=estimates[i].target_class, pattern_norm=float(norms[i]),
                    statistic=float(result.statistics[i]),
                    iterations=estimates[i].iterations, status=estimates[i].status,
                    torch_fraction=round(estimates[i].fraction, 6),
                    verified_fraction=round(verified[i].fraction, 6),
                    source_weights=tuple(float(w) for w in estimates[i].source_weights),
                    misclassification=tuple(float(q) for q in verified[i].misclassification),
                    check_rejections=estimates[i].check_rejections)
        for i in per_target)
    pairs = tuple(
        PairReport(source_class=e.sources[0], target_class=e.target_class, pattern_norm=float(n),
                   statistic=float(r), iterations=e.iterations, status=e.status,
                   verified_fraction=round(v.fraction, 6))
        for e, v, n, r in zip(estimates, verified, norms, result.statistics)) if method.reports_pairs else ()
    model, parity, clean, selection = prepared.model, prepared.parity, prepared.clean, prepared.selection
    return ScanReport(
        verdict=VERDICT_BACKDOOR if detected else VERDICT_CLEAN, method=config.method,
        p_value=result.p_value, log10_p_value=result.log10_p_value, p_value_basis=result.basis,
        paper_log10_p_value=result.paper_log_p_value / math.log(10.0),
        calibrated_log10_p_value=result.calibrated_log_p_value / math.log(10.0), alpha=config.alpha,
        target_class=suspect.target_class if detected else None,
        source_classes=sources if detected else (),
        most_suspicious_class=suspect.target_class,
        null_gamma_shape=result.gamma_shape, null_gamma_scale=result.gamma_scale,
        classes=classes, pairs=pairs,
        model=ModelSummary(model.path, model.sha256, model.opset, model.producer, model.input_name,
                           model.input_shape, model.output_name, prepared.num_classes, prepared.score_kind,
                           prepared.transform.layout, prepared.passes),
        parity=ParitySummary(parity.max_abs_difference, parity.tolerance, parity.argmax_agreement,
                             parity.images,
                             off_grid_max_abs_difference=prepared.off_grid.max_abs_difference,
                             off_grid_images=prepared.off_grid.images,
                             at_patterns_max_abs_difference=at_patterns.max_abs_difference,
                             at_patterns_images=at_patterns.images),
        data=DataSummary(clean.source, int(prepared.pixels.shape[0]), selection.per_class,
                         selection.correct_available,
                         tuple(clean.names[i] for i in selection.indices)),
        device=str(prepared.device), onnxruntime_providers=prepared.reference.info.providers,
        config=config.as_dict(), timing=timing, versions=versions(),
        warnings=_warnings(estimates, verified, selection.per_class, config)
        + tuple(filter(None, [disagreement(result, suspect)])) + tuple(notes)
        + (() if scalable is None or detected else _scalable_caveats(scalable, prepared.num_classes))
        + _sampling_note(config, prepared.num_classes) + _patch_note(config),
        cuda_graphs=_graphs_status(prepared.device, config, refusals),
        audit=audit_trail(started_at, prepared.device, clean), class_names=class_names,
        config_digest=config_digest(config), image_passes=image_passes[0], forward_images=image_passes[1],
        scalable=scalable)


def _best_per_target(estimates: list[PatternEstimate], num_classes: int) -> list[int]:
    """Index of the estimate with the smallest pattern for each target class estimated (every
    class, except in the scalable mode), in class order."""
    best: dict[int, int] = {}
    for i, e in enumerate(estimates):
        if e.target_class not in best or e.pattern_norm < estimates[best[e.target_class]].pattern_norm:
            best[e.target_class] = i
    return [best[t] for t in range(num_classes) if t in best]


def _warnings(estimates: list[PatternEstimate], verified: Sequence[VerifiedFractions],
              per_class: tuple[int, ...], config: ScanConfig) -> tuple[str, ...]:
    notes = []
    short = [c for c, n in enumerate(per_class) if n < config.images_per_class]
    if short:
        notes.append(f"fewer than {config.images_per_class} correctly classified clean images for "
                     f"class(es) {', '.join(map(str, short))}")
    for e, v in zip(estimates, verified):
        if e.status != STATUS_CONVERGED:
            notes.append(f"{job_name(e)}: estimation stopped with status {e.status} after "
                         f"{e.iterations} iterations (Q_t {e.fraction:.3f} < pi); ||v_t|| is not a "
                         "converged minimum")
        elif v.fraction < config.pi:
            notes.append(f"{job_name(e)}: onnxruntime measures Q_t {v.fraction:.3f} < pi "
                         f"{config.pi} for the final pattern")
    return tuple(notes)


def _scalable_caveats(scalable: ScalableSummary, num_classes: int) -> tuple[str, ...]:
    """What a "no backdoor" verdict of the scalable mode rests on (docs/scale.md, measured)."""
    estimated = len(set(scalable.candidates) | set(scalable.null_targets))
    notes = [f"scalable mode: {estimated} of {num_classes} targets were estimated fully; \"no backdoor\" "
             "assumes the screen ranked the target with the largest r_t among its candidates, which it "
             "failed to do on a measured clean model (docs/scale.md); scan without --scalable to confirm"]
    if scalable.screen_sources < num_classes - 1:
        notes.append(f"scalable mode: the screen saw {scalable.screen_sources} of {num_classes - 1} source "
                     "classes per target, so an attack with few source classes can go unseen (a single-source "
                     "attack at K = 1000 was missed, docs/scale.md)")
    return tuple(notes)


def _sampling_note(config: ScanConfig, num_classes: int) -> tuple[str, ...]:
    """The departure from Algorithm 1 of a scan with sampled sources (scanner/sampled.py)."""
    sampling = config.sampling_for(num_classes)
    if sampling is None:
        return ()
    return (f"sampled sources: each iteration's gradient came from {sampling.draws} of the {num_classes - 1} "
            "source classes, drawn by the weights w, and the misclassification fractions of the others were "
            f"measured every {sampling.refresh_every} iterations: a stochastic departure from Algorithm 1 "
            "(docs/scale.md); scan without --sample-sources for the paper's estimate",)


def _patch_note(config: ScanConfig) -> tuple[str, ...]:
    """What a patch method's verdict can bear, as measured (docs/patch_zoo.md)."""
    if config.method not in METHODS or METHODS[config.method].engine != "patch":
        return ()
    return (f"the patch method {config.method} is experimental: on our Fashion-MNIST patch zoo it found a "
            "minority of the patch attacks, and natural class pairs needed masks as small as planted "
            "triggers, so no threshold on the mask norms kept every clean model clean while finding most "
            "attacks (docs/patch_zoo.md); a clean verdict does not rule out a patch trigger, and a backdoor "
            "verdict may name a natural class pair",) + ((
        f"patch shift: every clean image entered the mask estimation shifted by a random -{config.patch_shift}.."
        f"{config.patch_shift} pixels along each image axis at each iteration (onnxruntime confirmed each mask on "
        "the unshifted images): an experimental departure from App. A.3 and Neural Cleanse (docs/patch_zoo.md)",)
        if config.patch_shift > 0 else ())


def disagreement(result: detection.DetectionResult, suspect: PatternEstimate) -> str | None:
    """A note when the paper's and the calibrated p-value fall on different sides of alpha."""
    if result.detected_by("paper") == result.detected_by("calibrated"):
        return None
    return (f"borderline evidence for {job_name(suspect)}: the paper's p-value "
            f"10^{result.paper_log_p_value / math.log(10):.2f} and the calibrated one "
            f"10^{result.calibrated_log_p_value / math.log(10):.2f} fall on different sides of alpha "
            f"{result.alpha:g}; the verdict follows the {result.basis} one (docs/method.md 'Calibrated p-value')")


def job_name(estimate: PatternEstimate) -> str:
    """'class t', or 'pair s->t' for a one-source job (P-RED)."""
    if len(estimate.sources) == 1:
        return f"pair {estimate.sources[0]}->{estimate.target_class}"
    return f"class {estimate.target_class}"


def _graphs_status(device: torch.device, config: ScanConfig, refusals: list[str]) -> str:
    """What the report says about CUDA graphs (scanner/cuda_graphs.py)."""
    if device.type != "cuda" or config.exact:
        return "n/a"
    if not config.cuda_graphs:
        return "off"
    return f"refused: {refusals[0]}" if refusals else "on"
