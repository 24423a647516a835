"""The scan, step by step: model -> clean data -> conversion gate -> estimation -> verification -> test."""
from __future__ import annotations

import importlib.metadata
import math
import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

import converters

from . import detection, lred, pred, ured
from .algorithm1 import estimate_patterns_exact
from .config import ScanConfig
from .data import load_clean_images, select_images
from .errors import (
    ConversionMismatchError,
    EstimationError,
    LredError,
    ModelError,
    ResourceError,
    is_out_of_memory,
)
from .estimation import (
    STATUS_CONVERGED,
    DifferentiableClassifier,
    PatternEstimate,
    select_device,
)
from .model import LoadedModel, load_model
from .preprocess import resolve_transform
from .report import (
    VERDICT_BACKDOOR,
    VERDICT_CLEAN,
    ClassReport,
    DataSummary,
    ModelSummary,
    PairReport,
    ParitySummary,
    ScanReport,
)
from .runtime import ReferenceClassifier
from .verify import ReferenceCheck

# on_progress(stage, message); stages: load, data, convert, estimate, verify, test
ProgressCallback = Callable[[str, str], None]

PARITY_IMAGES = 512
JOBS = {"lred": lred.lred_jobs, "ured": ured.ured_jobs, "pred": pred.pred_jobs}


@dataclass(frozen=True, eq=False)
class ScanOutcome:
    """The report and the estimated patterns v_t, as (H, W, C) float32 arrays in pixel units."""

    report: ScanReport
    patterns: dict[int, np.ndarray]


def versions() -> dict[str, str]:
    found = {}
    for name in ("lred", "torch", "onnx", "onnx2torch", "numpy", "scipy"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    import onnxruntime
    found["onnxruntime"] = onnxruntime.__version__
    return found


def detect_score_kind(model: LoadedModel, scores: np.ndarray) -> str:
    """'probabilities' when the output is a softmax (by its op, or by rows in [0,1] summing to 1)."""
    if model.score_producer == "Softmax":
        return "probabilities"
    if model.score_producer == "LogSoftmax":
        return "logits"  # log-softmax of log-probabilities is the identity
    if scores.size and scores.min() >= 0.0 and scores.max() <= 1.0 and \
            np.allclose(scores.sum(axis=1), 1.0, atol=1e-3):
        return "probabilities"
    return "logits"


def scan(model_path: str | os.PathLike, data_path: str | os.PathLike,
         config: ScanConfig = ScanConfig(), on_progress: ProgressCallback | None = None) -> ScanOutcome:
    """Scan one ONNX classifier for an imperceptible backdoor with L-RED."""
    try:
        return _scan(model_path, data_path, config, on_progress)
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


def _scan(model_path: str | os.PathLike, data_path: str | os.PathLike, config: ScanConfig,
          on_progress: ProgressCallback | None) -> ScanOutcome:
    say = on_progress or (lambda stage, message: None)
    timing: dict[str, float] = {}
    started = clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timing[f"{step}_seconds"] = round(now - clock, 4)
        clock = now

    say("load", f"reading {model_path}")
    model = load_model(model_path, config.output_name)
    device = select_device(config.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    reference = ReferenceClassifier(model, use_cuda=device.type == "cuda", chunk_images=config.batch_images)
    lap("load_model")

    channels = _channels_hint(model)
    clean = load_clean_images(data_path, channels)
    transform = resolve_transform(model, config, clean.image_shape)
    pixels = transform.to_pixels(clean.pixels)
    say("data", f"classifying {pixels.shape[0]} clean images with onnxruntime")
    reference_scores = reference.scores(transform.normalize(pixels))
    num_classes = int(reference_scores.shape[1])
    if model.num_classes is not None and model.num_classes != num_classes:
        raise ModelError(f"output {model.output_name!r} declares {model.num_classes} classes but "
                         f"returns {num_classes}")
    if num_classes < 3:
        raise ModelError(f"the model has {num_classes} classes; the test of Sec. 3.2 needs at least 3")
    score_kind = detect_score_kind(model, reference_scores)
    predictions = reference_scores.argmax(axis=1)
    selection = select_images(clean.labels, predictions, num_classes, config.images_per_class, config.seed)
    x = pixels[selection.indices]
    y = clean.labels[selection.indices]
    lap("load_data")

    say("convert", "converting the ONNX graph to torch (onnx2torch)")
    passes = ()
    if model.softmax_input is not None:
        # log p(t | x) as log-softmax of the logits, not as the log of probabilities that float32
        # rounds to exactly 0 on a confident model (no gradient there: such targets would stall)
        converted = converters.to_torch(model.proto, model.input_name, model.softmax_input)
        classifier = DifferentiableClassifier(converted.module, transform, "logits", device,
                                              softmax_applied_after=True)
        passes = (f"took the logits {model.softmax_input!r} before the output Softmax",)
    else:
        converted = converters.to_torch(model.proto, model.input_name, model.output_name)
        classifier = DifferentiableClassifier(converted.module, transform, score_kind, device)
    passes = converted.passes + passes
    if classifier.use_channels_last(torch.as_tensor(x[:16])):        # 16 images: a cheap probe
        passes = passes + ("4-D weights held channels-last for the CPU passes",)
    rtol = converters.parity_rtol(model.proto, config.parity_rtol)
    parity = _parity_gate(classifier, pixels, reference_scores, config, rtol)
    lap("convert")

    check = ReferenceCheck(reference, transform, x, y, num_classes, config.pi)
    jobs = JOBS[config.method](num_classes)
    say("estimate", f"{config.method}: {len(jobs)} pattern estimations on {x.shape[0]} images ({device}"
                    f"{', exact per-target loop' if config.exact else ''})")

    def progress(iteration: int, finished: int, total: int) -> None:
        say("estimate", f"iteration {iteration}: {finished}/{total} estimations done")

    torch.manual_seed(config.seed)
    refusals: list[str] = []                  # why CUDA graphs were turned off, if they were
    common = dict(pi=config.pi, max_iterations=config.max_iterations, jobs=jobs, progress=progress)
    if config.exact:
        estimates = estimate_patterns_exact(classifier, torch.as_tensor(x), torch.as_tensor(y), num_classes,
                                            delta=config.delta, **common)
    else:
        estimates = lred.estimate_patterns(
            classifier, torch.as_tensor(x), torch.as_tensor(y), num_classes, schedule=config.schedule,
            batch_images=config.batch_images, confirm=check.confirm,
            max_rejected_iterations=config.verify_extra_iterations, cuda_graphs=config.cuda_graphs,
            notice=lambda message: (refusals.append(message), say("estimate", message)), **common)
    lap("estimate")
    if device.type == "cuda":
        timing["cuda_peak_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)

    say("verify", "re-computing misclassification fractions with onnxruntime")
    verified = [check.fractions(e.target_class, e.pattern, e.source_weights) for e in estimates]
    lap("verify")

    say("test", "order-statistic test")
    norms = np.array([e.pattern_norm for e in estimates])
    stuck = [e for e, norm in zip(estimates, norms) if not (np.isfinite(norm) and norm > 0)]
    if stuck:
        raise EstimationError(
            f"pattern estimation for {', '.join(_job_name(e) for e in stuck[:5])}"
            f"{f' and {len(stuck) - 5} more' if len(stuck) > 5 else ''} could not leave v = 0 "
            f"(status {stuck[0].status}): the model passes no usable gradient from those classes' "
            "scores to the input (quantized, thresholded or saturated operators?); the order-statistic "
            "test needs a positive ||v_t|| for every class")
    result = detection.detect(norms, config.alpha, config.p_value_basis)
    detected = result.detected
    suspect = estimates[result.inferred_target]
    if config.method == "lred":
        sources = tuple(detection.infer_source_classes(suspect.source_weights, config.pi))
    else:  # U-RED assumes every other class; P-RED names the pair's source
        sources = tuple(suspect.sources)
    lap("test")
    timing["total_seconds"] = round(time.perf_counter() - started, 4)

    per_target = _best_per_target(estimates, num_classes)
    classes = tuple(
        ClassReport(target_class=t, pattern_norm=float(norms[i]), statistic=float(result.statistics[i]),
                    iterations=estimates[i].iterations, status=estimates[i].status,
                    torch_fraction=round(estimates[i].fraction, 6),
                    verified_fraction=round(verified[i].fraction, 6),
                    source_weights=tuple(float(w) for w in estimates[i].source_weights),
                    misclassification=tuple(float(q) for q in verified[i].misclassification),
                    check_rejections=estimates[i].check_rejections)
        for t, i in enumerate(per_target))
    pairs = tuple(
        PairReport(source_class=e.sources[0], target_class=e.target_class, pattern_norm=float(n),
                   statistic=float(r), iterations=e.iterations, status=e.status,
                   verified_fraction=round(v.fraction, 6))
        for e, v, n, r in zip(estimates, verified, norms, result.statistics)) if config.method == "pred" else ()
    report = ScanReport(
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
                           model.input_shape, model.output_name, num_classes, score_kind,
                           transform.layout, passes),
        parity=ParitySummary(parity.max_abs_difference, parity.tolerance, parity.argmax_agreement,
                             parity.images),
        data=DataSummary(clean.source, int(pixels.shape[0]), selection.per_class,
                         selection.correct_available,
                         tuple(clean.names[i] for i in selection.indices)),
        device=str(device), onnxruntime_providers=reference.info.providers,
        config=config.as_dict(), timing=timing, versions=versions(),
        warnings=_warnings(estimates, verified, selection.per_class, config)
        + tuple(filter(None, [_disagreement(result, suspect)])),
        cuda_graphs=_graphs_status(device, config, refusals))
    patterns = {(e.target_class if config.method != "pred" else (e.sources[0], e.target_class)):
                transform.from_pixels(e.pattern).astype(np.float32) for e in estimates}
    return ScanOutcome(report, patterns)


def _best_per_target(estimates: list[PatternEstimate], num_classes: int) -> list[int]:
    """Index of the estimate with the smallest pattern for each target class."""
    best: dict[int, int] = {}
    for i, e in enumerate(estimates):
        if e.target_class not in best or e.pattern_norm < estimates[best[e.target_class]].pattern_norm:
            best[e.target_class] = i
    return [best[t] for t in range(num_classes)]


def _channels_hint(model: LoadedModel) -> int | None:
    dims = model.input_shape[1:]
    if len(dims) == 3:
        for d in (dims[0], dims[2]):
            if d in (1, 3):
                return d
    if len(dims) == 2:
        return 1
    return None


def _parity_gate(classifier: DifferentiableClassifier, pixels: np.ndarray,
                 reference_scores: np.ndarray, config: ScanConfig, rtol: float) -> converters.Parity:
    """Refuse a conversion that disagrees with onnxruntime (beyond ``rtol`` of max |score| plus
    ``config.parity_atol``), or that blocks input gradients."""
    n = min(PARITY_IMAGES, pixels.shape[0])
    inputs = torch.as_tensor(pixels[:n], device=classifier.device).requires_grad_(True)
    try:
        scores = classifier.scores(inputs)
        torch_scores = classifier.model_scores(scores.detach()).cpu().double().numpy()
    except Exception as exc:
        raise ConversionMismatchError(f"the converted torch module fails to run: {type(exc).__name__}: "
                                      f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    parity = converters.compare_scores(torch_scores, reference_scores[:n], rtol, config.parity_atol)
    if not parity.ok:
        raise ConversionMismatchError(
            f"the converted torch module disagrees with onnxruntime on {n} clean images: max |difference| "
            f"{parity.max_abs_difference:.3g} (tolerance {parity.tolerance:.3g}), argmax agreement "
            f"{parity.argmax_agreement:.3f}; refusing to scan on an unfaithful conversion")
    if not classifier.gradient_reaches_input(inputs, scores):
        raise ConversionMismatchError("the converted module gives no usable input gradient "
                                      "(zero or not finite); pattern estimation cannot run on it")
    return parity


def _warnings(estimates: list[PatternEstimate], verified, per_class: tuple[int, ...],
              config: ScanConfig) -> tuple[str, ...]:
    notes = []
    short = [c for c, n in enumerate(per_class) if n < config.images_per_class]
    if short:
        notes.append(f"fewer than {config.images_per_class} correctly classified clean images for "
                     f"class(es) {', '.join(map(str, short))}")
    for e, v in zip(estimates, verified):
        if e.status != STATUS_CONVERGED:
            notes.append(f"{_job_name(e)}: estimation stopped with status {e.status} after "
                         f"{e.iterations} iterations (Q_t {e.fraction:.3f} < pi); ||v_t|| is not a "
                         "converged minimum")
        elif v.fraction < config.pi:
            notes.append(f"{_job_name(e)}: onnxruntime measures Q_t {v.fraction:.3f} < pi "
                         f"{config.pi} for the final pattern")
    return tuple(notes)


def _disagreement(result: detection.DetectionResult, suspect: PatternEstimate) -> str | None:
    """A note when the paper's and the calibrated p-value fall on different sides of alpha."""
    if result.detected_by("paper") == result.detected_by("calibrated"):
        return None
    return (f"borderline evidence for {_job_name(suspect)}: the paper's p-value "
            f"10^{result.paper_log_p_value / math.log(10):.2f} and the calibrated one "
            f"10^{result.calibrated_log_p_value / math.log(10):.2f} fall on different sides of alpha "
            f"{result.alpha:g}; the verdict follows the {result.basis} one (README 'Calibrated p-value')")


def _job_name(estimate: PatternEstimate) -> str:
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
