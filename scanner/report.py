"""What the scan and ``lred inspect`` find: frozen values, rendered by the pure functions in ``reporters``
(assembled from a scan's estimates by ``report_builder``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

VERDICT_BACKDOOR = "backdoor"
VERDICT_CLEAN = "clean"


@dataclass(frozen=True)
class ClassReport:
    """Pattern estimation and verification for one putative target class t."""

    target_class: int
    pattern_norm: float                    # ||v_t||_2 in pixel space [0, 1]
    statistic: float                       # r_t = 1 / ||v_t||_2
    iterations: int
    status: str                            # converged | max_iterations | zero_gradient | unverified
    torch_fraction: float                  # Q_t(v_t, w) on the converted torch module
    verified_fraction: float               # Q_t(v_t, w) on the original graph (onnxruntime)
    source_weights: tuple[float, ...]      # w at the stop (w_t = 0)
    misclassification: tuple[float, ...]   # q_st(v_t) from onnxruntime, one per class s
    check_rejections: int                  # times onnxruntime refused a crossing of pi
    mask_l1: float | None = None           # patch methods: ||m_t||_1 (then pattern_norm is ||m_t||_1 too)
    anomaly_index: float | None = None     # patch and --trigger both scans: Neural Cleanse's MAD anomaly index


@dataclass(frozen=True)
class PairReport:
    """P-RED only: the pattern for one (source s, target t) pair, estimated on D_s alone."""

    source_class: int
    target_class: int
    pattern_norm: float
    statistic: float
    iterations: int
    status: str
    verified_fraction: float


@dataclass(frozen=True)
class ScanTest:
    """One detection test of a scan (two under ``--trigger both``, docs/method.md "Patch triggers")."""

    method: str                            # lred | ured | pred | lred-patch | nc
    trigger: str                           # additive | patch
    statistic: str                         # 1/||v_t||_2 or 1/||m_t||_1
    decision: str                          # order-statistic Gamma test | MAD anomaly index > 2
    alpha: float | None                    # the level it ran at (alpha / 2 under --trigger both); None for nc
    p_value: float | None                  # None for nc (its rule has no p-value)
    log10_p_value: float | None
    detected: bool
    target_class: int | None
    source_classes: tuple[int, ...]
    most_suspicious_class: int
    anomaly_index: float                   # MAD anomaly index of the most suspicious class's norm
    anomaly_flagged: bool                  # whether Neural Cleanse's rule (index > 2, below the median) flags it


@dataclass(frozen=True)
class ModelSummary:
    path: str
    sha256: str
    opset: int
    producer: str
    input_name: str
    input_shape: tuple[int | None, ...]
    output_name: str
    num_classes: int
    score_kind: str                        # logits | probabilities
    layout: str
    conversion_passes: tuple[str, ...]


@dataclass(frozen=True)
class ParitySummary:
    max_abs_difference: float
    tolerance: float
    argmax_agreement: float
    images: int
    off_grid_max_abs_difference: float | None = None   # on probe inputs off the clean images (probes.py)
    off_grid_images: int = 0
    at_patterns_max_abs_difference: float | None = None  # at every final pattern x + v (verify.py)
    at_patterns_images: int = 0


@dataclass(frozen=True)
class DataSummary:
    source: str
    images_loaded: int
    images_per_class: tuple[int, ...]      # used, per class
    correct_available: tuple[int, ...]     # correctly classified, per class
    selected: tuple[str, ...]              # file names / archive indices of the images used


@dataclass(frozen=True)
class AuditTrail:
    """When and where a scan ran, and which clean data exactly (``audit.py``)."""

    started_at: str                        # UTC, ISO 8601 with Z
    finished_at: str
    os: str                                # platform.platform()
    python: str
    python_implementation: str
    cpu: str                               # model name, never the host name
    gpu: str | None                        # torch.cuda.get_device_name when the scan ran on CUDA
    gpu_driver: str | None                 # "CUDA <torch.version.cuda>" then
    data_sha256: str                       # the .npz file's sha256, or over data_files for a folder
    data_files: tuple[tuple[str, str], ...]  # folder: (relative path, sha256), sorted; empty for .npz


@dataclass(frozen=True)
class ScalableSummary:
    """The scalable mode (scanner/scalable.py): which targets were estimated fully, and why."""

    screen_iterations: int
    screen_sources: int                    # source classes per target in the screen
    warm_start: bool                       # the selected targets continued the screen's paths
    candidates: tuple[int, ...]            # the best-ranked targets of the screen
    null_targets: tuple[int, ...]          # drawn at random from all K; the Gamma null is fitted to them
    screen_scores: tuple[float, ...]       # progress per target (J_t rise per unit ||v_t||; inf: reached pi)
    screen_image_passes: int


@dataclass(frozen=True)
class ScanReport:
    """Everything a reader or a program needs to check and defend the verdict."""

    verdict: str
    method: str
    p_value: float                         # the one compared with alpha (p_value_basis)
    log10_p_value: float
    p_value_basis: str                     # calibrated | paper
    paper_log10_p_value: float             # 1 - G(r_max)^K of Sec. 3.2
    calibrated_log10_p_value: float        # its Monte Carlo calibration (docs/method.md "Calibrated p-value")
    alpha: float
    target_class: int | None               # None when clean
    source_classes: tuple[int, ...]        # empty when clean
    most_suspicious_class: int             # argmax_t r_t, reported even when clean
    null_gamma_shape: float
    null_gamma_scale: float
    classes: tuple[ClassReport, ...]       # P-RED: the pair with the smallest pattern per target;
                                           # scalable mode: the targets estimated fully
    pairs: tuple[PairReport, ...]          # P-RED only; empty for L-RED and U-RED
    model: ModelSummary
    parity: ParitySummary
    data: DataSummary
    device: str
    onnxruntime_providers: tuple[str, ...]
    config: dict[str, Any]
    timing: dict[str, float]
    versions: dict[str, str]
    warnings: tuple[str, ...]
    cuda_graphs: str = "n/a"               # on a GPU: "on", "off" (--no-cuda-graphs) or "refused: why"
    audit: AuditTrail | None = None        # always set by build_report
    class_names: tuple[str, ...] = ()      # --class-names: one label per class, or none; never read by a decision
    config_digest: str | None = None       # sha256 of what decides the result (resume.py); set by build_report
    trigger: str = "additive"              # additive | patch | both (--trigger)
    tests: tuple[ScanTest, ...] = ()       # the tests run (patch and both scans; empty for a plain additive scan)
    patch_classes: tuple[ClassReport, ...] = ()   # --trigger both: lred-patch's per-class masks
    saved_arrays: tuple[str, ...] = ()     # files written by --save-patterns, relative to that folder
    image_passes: int = 0                  # image rows through forward+backward in pattern estimation
    forward_images: int = 0                # image rows through a forward pass alone (bisection, screen scores)
    scalable: ScalableSummary | None = None  # the scalable mode's record; None: the full method

    @property
    def backdoor_found(self) -> bool:
        return self.verdict == VERDICT_BACKDOOR


@dataclass(frozen=True)
class FailedScan:
    """A model that got no verdict (exit status 2): not scanned, or its estimates inconclusive.
    With ScanReport, what the per-model renderers take (``sarif.render_sarif``)."""

    model: str | None                      # the model file as given; None when unknown (a usage error)
    error: str                             # the one-line message
    error_type: str                        # the exception's class name
    sha256: str | None = None              # the model file's, when known

    @property
    def inconclusive(self) -> bool:
        """Scanned, but the estimates cannot carry a verdict (``errors.InconclusiveError``)."""
        return self.error_type == "InconclusiveError"


@dataclass(frozen=True)
class Inspection:
    """``lred inspect``: the model's interface and operators, and whether it converts faithfully."""

    path: str
    sha256: str
    producer: str
    ir_version: int
    opsets: dict[str, int]
    input_name: str
    input_shape: tuple[int | None, ...]
    input_dtype: str
    outputs: tuple[tuple[str, tuple[int | None, ...], str], ...]   # name, shape, element type
    score_output: str
    num_classes: int | None
    layout: str | None
    op_histogram: tuple[tuple[str, int], ...]
    converts: bool
    conversion_passes: tuple[str, ...]
    problem: str | None                     # why it does not convert or match, one line
    parity_inputs: str                      # "random" or the clean data path
    max_abs_difference: float | None
    tolerance: float | None
    argmax_agreement: float | None
    input_gradient_ok: bool | None
    # the input convention checked (--input-scale, --mean, --std) and, with clean data, how often
    # onnxruntime's argmax is the label under it: a wrong convention shows here (issue 20 §3)
    input_scale: float = 1.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    clean_accuracy: float | None = None     # over every clean image loaded; None without --data
    clean_images: int | None = None
    clean_problem: str | None = None        # what would stop a scan on these clean images (not a conversion problem)

    @property
    def ok(self) -> bool:
        return self.converts and self.problem is None
