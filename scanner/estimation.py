"""What every pattern-estimation method shares: the differentiable classifier, the batch of
(putative target, clean image) pairs, chunking for bounded memory, and the result type.

A method (``lred.py``, ``ured.py``, ``pred.py``) only chooses its jobs (``weights.Job``); the
engine (``engine.py``) moves the pattern v and the source weights w, as a step schedule
(``schedules.py``) says.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .preprocess import InputTransform

STATUS_CONVERGED = "converged"            # reached Q_t >= pi (and onnxruntime agreed)
STATUS_MAX_ITERATIONS = "max_iterations"  # tau_max reached first: ||v_t|| is only a lower bound
STATUS_ZERO_GRADIENT = "zero_gradient"    # grad J_t vanished or was not finite: no direction to step
STATUS_UNVERIFIED = "unverified"          # torch said Q_t >= pi, onnxruntime kept disagreeing

# confirm(targets, patterns (k, *pixel_shape), weights (k, K)) -> accepted (k,) bool
Confirm = Callable[[Sequence[int], np.ndarray, np.ndarray], np.ndarray]
# progress(iteration, finished targets, all targets)
Progress = Callable[[int, int, int], None]


@dataclass(frozen=True, eq=False)
class PatternEstimate:
    """Outcome of pattern estimation for one putative target class t.

    ``pattern`` is v_t in pixel space, model layout; ``misclassification`` is q_st(v_t) for
    every class s (entry t is 0); ``source_weights`` is w at the stopping check (w_t = 0);
    ``fraction`` is Q_t(v_t, w) as the torch module computed it.
    """

    target_class: int
    pattern: np.ndarray
    iterations: int
    misclassification: np.ndarray
    source_weights: np.ndarray
    fraction: float
    status: str
    check_rejections: int = 0
    sources: tuple[int, ...] = ()          # classes whose images entered J_t and Q_t

    @property
    def pattern_norm(self) -> float:
        return float(np.linalg.norm(self.pattern.ravel().astype(np.float64)))


def select_device(requested: str) -> torch.device:
    """'auto' picks CUDA when torch sees a GPU, the CPU otherwise."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        from .errors import ConfigError
        raise ConfigError("--device cuda was asked for, but torch sees no CUDA device")
    return torch.device(requested)


class DifferentiableClassifier:
    """log p(c | clip(x + v)) through the converted torch module, in pixel space."""

    def __init__(self, module: torch.nn.Module, transform: InputTransform, score_kind: str,
                 device: torch.device, softmax_applied_after: bool = False):
        """``score_kind``: 'logits' or 'probabilities', what ``module`` returns.
        ``softmax_applied_after``: ``module`` returns the logits that the model's output Softmax
        normalizes (``model_scores`` applies it, for comparing with the model's own output)."""
        self.module = module.to(device).eval()
        self.device = device
        self.score_kind = score_kind
        self.softmax_applied_after = softmax_applied_after
        # An identity normalization (scale 1, offset 0: pixels in [0, 1] fed as they are) is
        # skipped: x * 1 + 0 == x exactly, and the two full-size products and their backward
        # cost about as much as a small model's first layer.
        identity = bool(np.all(transform.scale == 1.0) and np.all(transform.offset == 0.0))
        self._scale = None if identity else torch.as_tensor(transform.scale, device=device)
        self._offset = None if identity else torch.as_tensor(transform.offset, device=device)

    def scores(self, pixels: torch.Tensor) -> torch.Tensor:
        """Raw class scores (n, K) for already-clipped pixel tensors (n, *pixel_shape)."""
        out = self.module(pixels if self._scale is None or self._offset is None  # both None or neither
                          else pixels * self._scale + self._offset)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out

    def model_scores(self, scores: torch.Tensor) -> torch.Tensor:
        """What the ONNX model itself outputs for these ``scores`` (the softmax of the logits
        when ``softmax_applied_after``)."""
        return torch.softmax(scores, dim=1) if self.softmax_applied_after else scores

    def use_channels_last(self, sample: torch.Tensor) -> bool:
        """On the CPU, hold the module's 4-D weights in channels-last order, where oneDNN's
        convolutions run faster (docs/benchmarks.md, "Channels-last"); the values computed are
        the same up to float summation order. Kept only if a forward and backward pass on
        ``sample`` (clipped pixels) runs and gives the default order's scores to 1e-4 of their
        largest magnitude; otherwise the module goes back to the default order. Returns whether
        it was kept (False on a GPU and for models without 4-D weights, which are left alone)."""
        tensors = list(self.module.parameters()) + list(self.module.buffers())
        if self.device.type != "cpu" or not any(t.dim() == 4 for t in tensors):
            return False
        inputs = sample.to(self.device)
        try:
            with torch.no_grad():
                before = self.scores(inputs)
        except Exception:                     # a module that does not run: the parity check says so
            return False
        try:
            self.module.to(memory_format=torch.channels_last)
            probe = inputs.clone().requires_grad_(True)
            with torch.enable_grad():
                after = self.scores(probe)
                (gradient,) = torch.autograd.grad(self.log_posterior(after).sum(), probe)
            tolerance = 1e-4 * float(before.abs().max()) + 1e-6
            kept = (after.shape == before.shape and bool(torch.isfinite(gradient).all())
                    and float((after.detach() - before).abs().max()) <= tolerance)
        except Exception:                     # an operator that needs the default order (a view)
            kept = False
        if not kept:
            self.module.to(memory_format=torch.contiguous_format)
        return kept

    def log_posterior(self, scores: torch.Tensor) -> torch.Tensor:
        """log p(c | x) from the scores: log-softmax of logits, or log of probabilities."""
        if self.score_kind == "probabilities":
            return torch.log(scores.clamp_min(torch.finfo(scores.dtype).tiny))
        return torch.log_softmax(scores, dim=1)

    def gradient_reaches_input(self, inputs: torch.Tensor, scores: torch.Tensor) -> bool:
        """Whether log p(c | x) passes a finite, non-zero gradient back to ``inputs`` (which
        ``scores`` was computed from). All classes enter, with fixed unequal weights: a single
        class's score can be flat (a ReLU after the last layer, as in SqueezeNet, leaves some
        classes at exactly 0), and equal weights could cancel."""
        log_p = self.log_posterior(scores)
        weights = torch.linspace(1.0, 2.0, log_p.shape[1], dtype=log_p.dtype, device=log_p.device)
        (gradient,) = torch.autograd.grad((log_p * weights).sum(), inputs)
        return bool(torch.isfinite(gradient).all()) and float(gradient.abs().max()) > 0.0


class PairBatch:
    """Rows (job, clean image) for every image of the job's source classes, grouped by job.

    Jobs are packed into chunks of at most ``batch_images`` rows; a job with more rows than
    that is split over consecutive chunks (its sums are completed over them).
    """

    def __init__(self, labels: torch.Tensor, sources: Sequence[Sequence[int]], batch_images: int):
        self.batch_images = batch_images
        self.rows = []
        for job_sources in sources:
            allowed = torch.zeros(int(labels.max()) + 1 if labels.numel() else 1, dtype=torch.bool,
                                  device=labels.device)
            allowed[[s for s in job_sources if s < allowed.numel()]] = True
            self.rows.append(torch.nonzero(allowed[labels]).flatten())

    def chunks(self, jobs: Sequence[int]) -> list[list[tuple[int, torch.Tensor]]]:
        """Groups of (job, image indices); every group fits in one forward pass."""
        groups: list[list[tuple[int, torch.Tensor]]] = []
        current: list[tuple[int, torch.Tensor]] = []
        size = 0
        for job in jobs:
            idx = self.rows[job]
            if idx.numel() > self.batch_images:
                for start in range(0, idx.numel(), self.batch_images):
                    groups.append([(job, idx[start:start + self.batch_images])])
                continue
            if current and size + idx.numel() > self.batch_images:
                groups.append(current)
                current, size = [], 0
            current.append((job, idx))
            size += idx.numel()
        if current:
            groups.append(current)
        return groups
