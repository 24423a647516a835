"""Everything a scan needs before pattern estimation, built one way for the scan, ``lred inspect``
and the benchmarks: model -> clean data -> conversion -> parity gate -> differentiable classifier.

``prepare`` reads the model, classifies the clean images with onnxruntime, picks N correctly
classified images per class, converts the graph (differentiating the logits before an output
Softmax, docs/method.md "The pipeline" step 1), holds 4-D weights channels-last on the CPU when that is
faithful, and refuses a conversion that disagrees with onnxruntime or blocks input gradients
(step 2). ``run_parity`` is the one comparison of the converted module with onnxruntime; the
scan's gate (``parity_gate``) and ``lred inspect`` both read it.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

import converters

from .config import ScanConfig
from .data import CleanImages, Selection, load_clean_images, select_images
from .deadline import NO_DEADLINE, Deadline
from .errors import ConversionMismatchError, ModelError
from .estimation import DifferentiableClassifier, select_device
from .model import LoadedModel, load_model
from .preprocess import InputTransform, expected_image_size, resolve_transform
from .probes import compare_with_onnxruntime, probe_pixels
from .runtime import ReferenceClassifier

# on_progress(stage, message); stages: load, data, convert, estimate, verify, test
ProgressCallback = Callable[[str, str], None]

PARITY_IMAGES = 512      # clean images the parity gate compares on
PROBE_IMAGES = 16        # images of the channels-last probe (a cheap forward and backward)


@dataclass(frozen=True, eq=False)
class PreparedScan:
    """A model ready for pattern estimation.

    ``pixels`` are all clean images in pixel space [0, 1] (n, *pixel_shape); ``x``, ``y`` the
    N-per-class selection (float32 pixels, int64 labels) that estimation runs on. ``score_kind``
    is what the ONNX output holds (logits | probabilities); ``classifier`` differentiates
    log p(c | x) (log-softmax of the logits before an output Softmax). ``timing`` holds the
    seconds of the three steps (load_model, load_data, convert).
    """

    model: LoadedModel
    device: torch.device
    reference: ReferenceClassifier
    clean: CleanImages
    transform: InputTransform
    pixels: np.ndarray
    num_classes: int
    score_kind: str
    selection: Selection
    x: np.ndarray
    y: np.ndarray
    classifier: DifferentiableClassifier
    passes: tuple[str, ...]
    parity: converters.Parity
    timing: dict[str, float]
    off_grid: converters.Parity        # the gate on probe inputs off the clean images
    rtol: float                        # the parity tolerance relative to max |score| (wider for float16)


@dataclass(frozen=True, eq=False)
class ParityRun:
    """The converted module's scores on ``images`` inputs next to onnxruntime's.

    ``failure`` is the exception when the module fails to run (``parity`` is then None)."""

    classifier: DifferentiableClassifier
    images: int
    parity: converters.Parity | None
    failure: Exception | None
    inputs: torch.Tensor
    scores: torch.Tensor | None

    def input_gradient_ok(self) -> bool:
        """Whether log p(c | x) passes a finite, non-zero gradient back to the inputs."""
        assert self.scores is not None, "the module did not run"
        return self.classifier.gradient_reaches_input(self.inputs, self.scores)


def run_parity(classifier: DifferentiableClassifier, pixels: np.ndarray, reference_scores: np.ndarray,
               rtol: float, atol: float, limit: int = PARITY_IMAGES) -> ParityRun:
    """Run the converted module on the first ``limit`` of ``pixels`` (pixel space) and compare what
    the ONNX model would output (``classifier.model_scores``) with onnxruntime's scores, to
    ``atol + rtol * max |score|`` (converters.compare_scores)."""
    n = min(limit, pixels.shape[0])
    inputs = torch.as_tensor(pixels[:n], device=classifier.device).requires_grad_(True)
    try:
        scores = classifier.scores(inputs)
        torch_scores = classifier.model_scores(scores.detach()).cpu().double().numpy()
    except Exception as exc:  # a converted graph that fails to run is a finding, reported by the caller
        return ParityRun(classifier, n, None, exc, inputs, None)
    parity = converters.compare_scores(torch_scores, reference_scores[:n], rtol, atol)
    return ParityRun(classifier, n, parity, None, inputs, scores)


def parity_gate(run: ParityRun) -> converters.Parity:
    """The scan's gate: refuse a conversion that fails to run, disagrees with onnxruntime, or
    blocks input gradients (ConversionMismatchError, exit 2)."""
    if run.failure is not None:
        exc = run.failure
        raise ConversionMismatchError(f"the converted torch module fails to run: {type(exc).__name__}: "
                                      f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    parity = run.parity
    assert parity is not None
    if not parity.ok:
        raise ConversionMismatchError(
            f"the converted torch module disagrees with onnxruntime on {run.images} clean images: max |difference| "
            f"{parity.max_abs_difference:.3g} (tolerance {parity.tolerance:.3g}), argmax agreement "
            f"{parity.argmax_agreement:.3f}; refusing to scan on an unfaithful conversion")
    if not run.input_gradient_ok():
        raise ConversionMismatchError("the converted module gives no usable input gradient "
                                      "(zero or not finite); pattern estimation cannot run on it")
    return parity


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


def channels_hint(model: LoadedModel) -> int | None:
    """Channels the input shape implies (1 or 3), to read grayscale or colour images."""
    dims = model.input_shape[1:]
    if len(dims) == 3:
        for d in (dims[0], dims[2]):
            if d in (1, 3):
                return d
    if len(dims) == 2:
        return 1
    return None


class StepTimer:
    """The seconds of each step of a scan, as ``<step>_seconds`` entries of ``timing``."""

    def __init__(self, timing: dict[str, float]) -> None:
        self.timing = timing
        self.clock = time.perf_counter()

    def lap(self, step: str, add: bool = False) -> None:
        """Record the time since the last lap as ``step`` (added to what it has, with ``add``)."""
        now = time.perf_counter()
        key = f"{step}_seconds"
        self.timing[key] = round((self.timing.get(key, 0.0) if add else 0.0) + now - self.clock, 4)
        self.clock = now


def prepare(model_path: str | os.PathLike, data_path: str | os.PathLike, config: ScanConfig | None = None,
            on_progress: ProgressCallback | None = None, *, channels_last: bool = True,
            deadline: Deadline = NO_DEADLINE) -> PreparedScan:
    """Load, convert, select and check, as ``lred scan`` does before estimation.

    The graph is converted before onnxruntime first runs it: a graph with an operator that has no
    converter is refused at once, before onnxruntime could spend unbounded time on it; every
    onnxruntime run is bounded by ``deadline`` (``--timeout``).
    ``channels_last=False`` keeps the module's weights in the default memory order (benchmarks
    that compare memory orders); the scan always tries channels-last on the CPU.
    Raises ModelError, DataError or ConversionMismatchError (exit 2) when the model cannot be scanned.
    ``config`` None: the defaults.
    """
    if config is None:
        config = ScanConfig()
    say = on_progress or (lambda stage, message: None)
    timing: dict[str, float] = {}
    lap = StepTimer(timing).lap

    say("load", f"reading {model_path}")
    model = load_model(model_path, config.output_name)
    device = select_device(config.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    reference = ReferenceClassifier(model, use_cuda=device.type == "cuda", chunk_images=config.batch_images,
                                    deadline=deadline)
    lap("load_model")

    say("convert", "converting the ONNX graph to torch (onnx2torch)")
    converted, softmax_applied_after, passes = _convert(model)
    lap("convert")
    deadline.check("converting the graph")

    clean = load_clean_images(data_path, channels_hint(model), expected_image_size(model, config))
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

    classifier = DifferentiableClassifier(converted, transform, "logits" if softmax_applied_after else score_kind,
                                          device, softmax_applied_after=softmax_applied_after)
    if channels_last and classifier.use_channels_last(torch.as_tensor(x[:PROBE_IMAGES])):
        passes = passes + ("4-D weights held channels-last for the CPU passes",)
    rtol = converters.parity_rtol(model.proto, config.parity_rtol)
    parity = parity_gate(run_parity(classifier, pixels, reference_scores, rtol, config.parity_atol))
    off_grid = off_grid_gate(classifier, reference, transform, pixels, rtol, config.parity_atol, config.seed)
    lap("convert", add=True)             # the conversion's checks count as converting
    deadline.check("checking the conversion")
    return PreparedScan(model, device, reference, clean, transform, pixels, num_classes, score_kind,
                        selection, x, y, classifier, passes, parity, timing, off_grid, rtol)


def off_grid_gate(classifier: DifferentiableClassifier, reference: ReferenceClassifier, transform: InputTransform,
                  pixels: np.ndarray, rtol: float, atol: float, seed: int) -> converters.Parity:
    """The gate off the clean images (scanner/probes.py): the module must give onnxruntime's scores
    on uniform random images and on clean images plus noise as well, or the scan stops."""
    probes = probe_pixels(pixels, seed=seed)
    parity, problem, _ = compare_with_onnxruntime(classifier, reference, transform, probes, rtol, atol, len(probes))
    if problem is not None:
        raise ConversionMismatchError(
            f"the converted torch module matches onnxruntime on the clean images but not off them: on "
            f"{len(probes)} probe inputs (uniform random images, clean images plus noise) {problem}; "
            "pattern estimation would run on an unfaithful conversion")
    return parity


def _convert(model: LoadedModel) -> tuple[torch.nn.Module, bool, tuple[str, ...]]:
    """The converted module, whether the model's output Softmax follows it, and the graph passes."""
    if model.softmax_input is not None:
        # log p(t | x) as log-softmax of the logits, not as the log of probabilities that float32
        # rounds to exactly 0 on a confident model (no gradient there: such targets would stall)
        converted = converters.to_torch(model.proto, model.input_name, model.softmax_input)
        return converted.module, True, converted.passes + (
            f"took the logits {model.softmax_input!r} before the output Softmax",)
    converted = converters.to_torch(model.proto, model.input_name, model.output_name)
    return converted.module, False, converted.passes
