"""Scan parameters as one typed, frozen value (defaults from the paper, Sec. 4.3)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from .lred import Sampling
    from .schedules import StepSchedule

LAYOUTS = ("auto", "nchw", "nhwc", "flat")
DEVICES = ("auto", "cpu", "cuda")
P_VALUE_BASES = ("calibrated", "paper")   # which p-value the verdict compares with alpha (detection.py)
TRIGGERS = ("additive", "patch", "both")   # --trigger: which estimations a scan runs (scanner/patch_scan.py)
DEFAULT_LARGEST_STEP = 2e-2  # largest step of the default schedule when adaptive_step is unset


@dataclass(frozen=True)
class ScanConfig:
    """Every parameter of a scan.

    pi, delta and alpha are the paper's pi (target misclassification fraction),
    delta (normalized step size of eq. (5)) and phi (detection threshold), Sec. 4.3.
    Pixel values live in [0, 1] (App. A.4); ``delta`` is an l2 length in that space.

    The step schedule is resolved here, whichever front end builds the config: by default
    each L-RED estimation's step lies between delta and ``largest_step`` (docs/method.md "Step
    schedule"); ``fixed_step``, ``exact`` and ``relative_step`` each select another schedule.
    """

    method: str = "lred"               # scanner.methods.METHODS: lred | ured | pred (Sec. 4.3) | lred-patch | nc
    exact: bool = False                # Algorithm 1 literally: one target at a time, 2 passes/step
    crossing_resolution: float | None = None  # bisect the step that crosses pi to this length
    relative_step: float | None = None # step = max(delta, relative_step * ||v||); implies fixed_step
    adaptive_step: float | None = None # largest step of the default schedule; None: max(2e-2, delta)
    fixed_step: bool = False           # every step exactly delta (Algorithm 1); implied by exact
    weight_update_length: float = 1e-4 # default schedule: path length per update of w it reproduces (paper's delta)
    images_per_class: int = 8          # N, Sec. 4.3
    seed: int = 0                      # picks the N clean images per class
    pi: float = 0.9                    # Sec. 4.3
    delta: float = 1e-3                # (smallest) step length, see docs/method.md "Step schedule"
    max_iterations: int = 20000        # tau_max of Algorithm 1
    alpha: float = 0.05                # phi of Sec. 3.2
    p_value_basis: str = "calibrated"  # the p-value compared with alpha: calibrated | paper (docs/method.md)
    layout: str = "auto"               # how the model lays out pixels
    mean: tuple[float, ...] | None = None   # normalization after the pattern, model units
    std: tuple[float, ...] | None = None
    input_scale: float = 1.0           # model input = pixel * input_scale (255 for 0-255 models)
    device: str = "auto"               # torch device for pattern estimation
    cuda_graphs: bool = True           # on a GPU, replay the passes as CUDA graphs (scanner/cuda_graphs.py)
    output_name: str | None = None     # class-score output; None: pick automatically
    batch_images: int = 2048           # images per forward/backward chunk (memory bound)
    parity_rtol: float = 1e-3          # conversion check: tolerance relative to max |score|
    parity_atol: float = 1e-4
    verify_extra_iterations: int = 200 # steps allowed after onnxruntime disagrees with torch
    timeout: float | None = None       # seconds for the whole scan (scanner/deadline.py); None: no limit
    trigger: str = "additive"          # both: the additive method and lred-patch, each at alpha / 2
    patch_iterations: int = 1000       # iteration bound of a patch method's mask estimation (patch_engine.py)
    patch_shift: int = 0               # experimental: images shifted by up to this many pixels in the mask estimation
    # the scalable mode (scanner/scalable.py, docs/scale.md): screen every target, estimate a few fully
    scalable: bool = False             # off: the full method (every target estimated fully)
    screen_iterations: int = 3         # Algorithm 1 iterations per target in the screen
    screen_sources: int = 100          # source classes per target in the screen (all when K - 1 is fewer)
    screen_candidates: int = 2         # best-ranked targets estimated fully
    screen_null_targets: int = 7       # random targets estimated fully for the Gamma null
    # sampled sources (scanner/sampled.py, docs/scale.md): every target's path, each iteration's gradient
    # from source classes drawn by w
    sample_sources: int = 0            # draws per target and iteration; 0: every source (Algorithm 1)
    refresh_every: int = 10            # iterations between two measurements of every q_st of a target

    def __post_init__(self) -> None:
        # imported here: the registry imports the estimation engine, which imports this module
        from .methods import METHOD_NAMES, METHODS
        largest = self.largest_step   # a float whenever step_schedule is "adaptive"
        patch = self.method in METHODS and METHODS[self.method].engine == "patch"   # lred-patch, nc
        checks = [
            (self.timeout is None or (math.isfinite(self.timeout) and self.timeout > 0),
             "timeout must be a positive number of seconds"),
            (self.method in METHOD_NAMES, f"method must be one of {', '.join(METHOD_NAMES)}"),
            (self.trigger in TRIGGERS, f"trigger must be one of {', '.join(TRIGGERS)}"),
            (self.trigger != "both" or self.method == "lred",
             "trigger 'both' runs lred and lred-patch: method must be lred"),
            (self.trigger != "patch" or patch,
             "trigger 'patch' needs a patch method (lred-patch or nc)"),
            (not (self.exact and patch),
             "exact runs Algorithm 1 (additive patterns); lred-patch and nc have no exact mode"),
            (self.patch_iterations >= 1, "patch_iterations must be >= 1"),
            (self.patch_shift >= 0, "patch_shift must be >= 0"),
            (self.patch_shift == 0 or patch or self.trigger == "both",
             "patch_shift shifts the images of the mask estimation: it needs a patch method (lred-patch, nc) "
             "or trigger 'both'"),
            (self.crossing_resolution is None or self.crossing_resolution > 0,
             "crossing_resolution must be > 0"),
            (self.relative_step is None or 0 < self.relative_step < 1, "relative_step must lie in (0, 1)"),
            (not (self.exact and (self.relative_step is not None or self.crossing_resolution is not None)),
             "exact mode runs Algorithm 1 as written: no relative_step or crossing_resolution"),
            (self.adaptive_step is None or not (self.fixed_step or self.exact or self.relative_step is not None),
             "adaptive_step (the largest step of the default schedule) cannot be combined with "
             "fixed_step, exact or relative_step"),
            (self.adaptive_step is None or self.adaptive_step >= self.delta,
             "adaptive_step (the largest step) must be >= delta (the smallest)"),
            (self.weight_update_length > 0.0, "weight_update_length must be > 0"),
            (self.images_per_class >= 1, "images_per_class must be >= 1"),
            (0.0 < self.pi < 1.0, "pi must lie in (0, 1)"),
            (self.delta > 0.0, "delta must be > 0"),
            (self.max_iterations >= 1, "max_iterations must be >= 1"),
            (0.0 < self.alpha < 1.0, "alpha must lie in (0, 1)"),
            (self.p_value_basis in P_VALUE_BASES, f"p_value_basis must be one of {', '.join(P_VALUE_BASES)}"),
            (self.layout in LAYOUTS, f"layout must be one of {', '.join(LAYOUTS)}"),
            (self.device in DEVICES, f"device must be one of {', '.join(DEVICES)}"),
            (self.input_scale > 0.0, "input_scale must be > 0"),
            (self.batch_images >= 1, "batch_images must be >= 1"),
            (self.std is None or all(s > 0 for s in self.std), "every std must be > 0"),
            (self.verify_extra_iterations >= 0, "verify_extra_iterations must be >= 0"),
            (not self.scalable or (self.method == "lred" and not self.exact),
             "the scalable mode screens L-RED's putative targets: method lred, not exact"),
            *((getattr(self, name) >= 1, f"{name} must be >= 1")
              for name in ("screen_iterations", "screen_sources", "screen_candidates")),
            (self.sample_sources >= 0, "sample_sources must be >= 0 (0: every source)"),
            (self.refresh_every >= 1, "refresh_every must be >= 1"),
            (self.sample_sources == 0 or (self.method == "lred" and not self.exact and not self.scalable),
             "sample_sources draws L-RED's sources by w: method lred, not exact, not scalable"),
            (self.screen_null_targets >= 3, "screen_null_targets must be >= 3 (the Gamma null needs two "
                                            "statistics besides the largest)"),
            *((getattr(self, name) is None or math.isfinite(getattr(self, name)), f"{name} must be finite")
              for name in ("pi", "delta", "alpha", "input_scale", "weight_update_length", "crossing_resolution",
                           "relative_step", "adaptive_step", "parity_rtol", "parity_atol")),
            (all(math.isfinite(v) for v in self.mean or ()), "every mean must be finite"),
            (all(math.isfinite(v) for v in self.std or ()), "every std must be finite"),
            # numpy refuses negative seeds, torch.manual_seed seeds above 2**64 - 1
            (0 <= self.seed <= 2**64 - 1, f"seed must lie in 0..{2**64 - 1}"),
            # beyond 2**31 - 1 these counts overflow the indices of numpy and torch
            *((getattr(self, name) <= 2**31 - 1, f"{name} must be <= {2**31 - 1}")
              for name in ("images_per_class", "max_iterations", "batch_images", "verify_extra_iterations",
                           "patch_iterations", "patch_shift", "screen_iterations", "screen_sources",
                           "screen_candidates", "screen_null_targets", "sample_sources", "refresh_every")),
            # a step of length h is bisected until its bracket is below the resolution (or delta): below
            # float64's 2**-52 * h the bracket stops shrinking and the bisection would never end
            (self.delta >= 1e-9, "delta must be >= 1e-9 (pixel units; float32 pixels do not move by less)"),
            (self.crossing_resolution is None or self.crossing_resolution >= 1e-9,
             "crossing_resolution must be >= 1e-9 (pixel units; a finer bisection never ends)"),
            # the default schedule updates w (largest step / weight_update_length) times per step
            (self.step_schedule != "adaptive" or largest is None or not self.weight_update_length > 0
             or not math.isfinite(largest) or largest / self.weight_update_length <= 2**31 - 1,
             f"weight_update_length must be >= the largest step / {2**31 - 1}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"invalid scan parameter: {message}")

    @property
    def step_schedule(self) -> str:
        """The schedule the estimations of this scan follow: adaptive, fixed or relative.

        Only a method whose weights move by eq. (8) (L-RED, ``Method.adapts_weights`` in the
        registry) can follow the weight-controlled schedule; U-RED and P-RED step by delta.
        """
        from .methods import METHODS

        method = METHODS.get(self.method)          # None while an unknown name is being refused
        if self.relative_step is not None:
            return "relative"
        if self.fixed_step or self.exact or method is None or not method.adapts_weights:
            return "fixed"
        return "adaptive"

    @property
    def largest_step(self) -> float | None:
        """Largest step of the weight-controlled schedule, or None when it is not followed."""
        if self.step_schedule != "adaptive":
            return None
        return self.adaptive_step if self.adaptive_step is not None else max(DEFAULT_LARGEST_STEP, self.delta)

    @property
    def schedule(self) -> StepSchedule:
        """The one step-schedule object the batched engine follows (scanner/schedules.py): the
        weight-controlled step between delta and ``largest_step`` with ``weight_update_length``,
        or the fixed step delta, or the relative step; each with ``crossing_resolution``.
        (``exact`` runs algorithm1.py, whose step is delta, as the fixed schedule's.)"""
        from .schedules import FixedStep, RelativeStep, WeightControlledStep  # torch only when scanning
        if self.relative_step is not None:                 # step_schedule "relative"
            return RelativeStep(self.delta, self.relative_step, self.crossing_resolution)
        largest = self.largest_step
        if largest is None:                                 # step_schedule "fixed"
            return FixedStep(self.delta, self.crossing_resolution)
        return WeightControlledStep(self.delta, largest, self.crossing_resolution, self.weight_update_length)

    @property
    def adaptive_weight_update_length(self) -> float | None:
        """Path length per update of w that the weight-controlled schedule reproduces (docs/method.md
        "Step schedule"), or None when that schedule is not followed (w is updated once per step)."""
        return self.weight_update_length if self.step_schedule == "adaptive" else None

    def scalable_for(self, num_classes: int) -> bool:
        """Whether a scan of a ``num_classes``-class model follows the scalable mode: asked for, and
        more classes than the targets it would estimate fully anyway (else the full method runs)."""
        return self.scalable and num_classes > self.screen_candidates + self.screen_null_targets

    def sampling_for(self, num_classes: int) -> Sampling | None:
        """The sampled-sources setting of a scan of a ``num_classes``-class model, or None: not asked
        for, or at least as many draws as there are sources (then the full method runs)."""
        from .lred import Sampling
        if self.sample_sources == 0 or self.sample_sources >= num_classes - 1:
            return None
        return Sampling(self.sample_sources, self.refresh_every, self.seed)

    def as_dict(self) -> dict[str, Any]:
        """The fields as given, plus the resolved step schedule."""
        fields = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}
        return {**fields, "step_schedule": self.step_schedule, "largest_step": self.largest_step}
