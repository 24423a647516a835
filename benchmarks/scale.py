"""How L-RED's cost grows with the number of classes K and the input size (issue 21, part 1).

One L-RED iteration runs a forward+backward of every image of every class s != t for each of the
K putative targets t (Algorithm 1, line 4, all targets batched by the engine): K(K-1)N image
passes, quadratic in K. For each (architecture, input size, K) cell this prints, in one Markdown
table:

* the time of one raw forward+backward per image, log p(t | clip(x + u)) back to u, through the
  model exported to ONNX (opset 17, ``dynamo=False``) and converted back with
  ``converters.to_torch``, as the scan does (channels-last weights on the CPU, as the scan's
  ``use_channels_last``); measured on a batch of ``--batch`` images after a warm-up, median of
  ``--repeats``;
* the engine's time per iteration (``scanner.lred.estimate_patterns``, ``FixedStep(1e-4)``,
  pi close to 1 so every job stays active) on a reduced set of jobs (two targets) with
  ``--batch`` image rows in all, its ratio to the raw pass of as many rows, and the engine's
  overhead per iteration: that time less the rows' raw passes;
* the image passes per iteration K(K-1)N for N = 1 and N = 8, the peak resident memory of the
  cell and, on CUDA, ``torch.cuda.max_memory_allocated``;
* a PROJECTION of the scan's pattern-estimation time: ITERATIONS x (K(K-1)N x the raw time
  per image pass + the engine's measured overhead per iteration). It assumes the per-image
  cost at the scan's batch (up to 2048 rows) is the one measured at ``--batch`` rows, the
  overhead of K jobs is that measured with two, and the iteration count measured at K = 10.

Models have random weights (timing only). Each cell gets ``--budget-seconds``: a cell whose
estimated measuring time (from one probe pass) exceeds it prints "skipped (budget)"; ``--full``
measures everything.

    python benchmarks/scale.py [--device cpu|cuda|auto] [--archs cnn,resnet18,...]
        [--sizes 28g,32,96,224] [--classes 10,43,100,1000] [--budget-seconds 20] [--full]
"""
from __future__ import annotations

import argparse
import io
import math
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from scanner.estimation import DifferentiableClassifier

# Iterations a scan needs: the largest "iterations (max over t)" of the default scans (delta-default)
# of the 31 trained Fashion-MNIST models (21 MLPs, 7 CNNs, 3 residual nets) in docs/benchmarks.md,
# section "Weight updates per path length", table of the 31 models at b71f19c (mlp-clean-s5:
# 360; CNNs 199-277, residual nets 175-186). Measured at K = 10 only: a projection for other K
# assumes the same count.
ITERATIONS = 360
ITERATIONS_SOURCE = ("docs/benchmarks.md, 'Weight updates per path length': largest 'iterations "
                     "(max over t)' of the 31 default scans (mlp-clean-s5, K = 10)")
SIZES = {"28g": (1, 28), "32": (3, 32), "96": (3, 96), "224": (3, 224)}
ARCHS = ("cnn", "resnet18", "resnet50", "mobilenet_v3_small", "vit_tiny")
CLASSES = (10, 43, 100, 1000)


class _Gray(nn.Module):
    """Feeds a one-channel image to a three-channel network (the channel repeated)."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.expand(-1, 3, -1, -1))


def small_cnn(channels: int, size: int, num_classes: int) -> nn.Module:
    """The sample model's architecture (sample_models/build_samples.py), sized for the input."""
    side = size // 4
    return nn.Sequential(nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(32 * side * side, 128), nn.ReLU(), nn.Linear(128, num_classes))


def build(arch: str, channels: int, size: int, num_classes: int) -> nn.Module:
    """A randomly initialized classifier with ``num_classes`` outputs for (channels, size, size)
    inputs. ``vit_tiny``: torchvision's VisionTransformer at ViT-Ti width (12 layers, 3 heads,
    hidden 192, MLP 768), patch 16 for inputs of 96 pixels and more, patch 4 below, its head
    drawn at random (torchvision starts it at zero, which leaves no gradient to follow)."""
    import torchvision.models as tvm
    torch.manual_seed(0)
    if arch == "cnn":
        return small_cnn(channels, size, num_classes).eval()
    if arch in ("resnet18", "resnet50", "mobilenet_v3_small"):
        body = getattr(tvm, arch)(weights=None, num_classes=num_classes)
    elif arch == "vit_tiny":
        patch = 16 if size >= 96 else 4
        body = tvm.VisionTransformer(image_size=size, patch_size=patch, num_layers=12, num_heads=3,
                                     hidden_dim=192, mlp_dim=768, num_classes=num_classes)
        nn.init.normal_(body.heads.head.weight, std=0.02)   # torchvision zero-initializes the head
    else:
        raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHS)}")
    return (body if channels == 3 else _Gray(body)).eval()


def to_scan_classifier(module: nn.Module, channels: int, size: int,
                       device: torch.device) -> DifferentiableClassifier:
    """Export ``module`` to ONNX (opset 17, TorchScript exporter), convert it back with
    ``converters.to_torch`` and wrap it as the scan does (identity normalization, logits)."""
    import onnx

    import converters
    from scanner.estimation import DifferentiableClassifier  # noqa: F811 (the runtime import)
    from scanner.preprocess import InputTransform

    buffer = io.BytesIO()
    torch.onnx.export(module, (torch.rand(2, channels, size, size),),
                      buffer,  # type: ignore[arg-type]  # a file object is accepted
                      input_names=["input"], output_names=["scores"], opset_version=17, dynamo=False,
                      dynamic_axes={"input": {0: "batch"}, "scores": {0: "batch"}})
    converted = converters.to_torch(onnx.load_from_string(buffer.getvalue()), "input", "scores").module
    pixel_shape = (channels, size, size)
    transform = InputTransform("nchw", pixel_shape, (size, size, channels),
                               np.ones(pixel_shape, np.float32), np.zeros(pixel_shape, np.float32))
    classifier = DifferentiableClassifier(converted, transform, "logits", device)
    classifier.use_channels_last(torch.rand(2, *pixel_shape))
    return classifier


def raw_pass(classifier: DifferentiableClassifier, x: torch.Tensor, targets: torch.Tensor) -> Callable[[], None]:
    """One forward+backward of sum log p(t | clip(x + u)) with respect to u (the engine's pass
    without its bookkeeping), as a function."""
    from scanner.clipping import clip_pixels

    def step() -> None:
        u = torch.zeros_like(x, requires_grad=True)
        log_p = classifier.log_posterior(classifier.scores(clip_pixels(x + u)))
        torch.autograd.grad(log_p.gather(1, targets[:, None]).sum(), u)
    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak resident set size of this process (Linux: /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mib(reset: bool) -> tuple[float, str]:
    """Peak RSS since the reset (VmHWM), else getrusage's ru_maxrss for the whole process."""
    if reset:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024, "cell"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process"


@dataclass
class Cell:
    """One measured (architecture, input, K) cell; times in seconds per image pass."""

    arch: str
    size: str
    classes: int
    status: str = "measured"
    convert_seconds: float = math.nan
    raw_per_image: float = math.nan
    engine_iteration: float = math.nan
    engine_rows: int = 0
    peak_rss_mib: float = math.nan
    rss_scope: str = ""
    cuda_peak_mib: float = math.nan

    def passes(self, n: int) -> int:
        """Image passes of one L-RED iteration: K targets x (K-1) source classes x N images."""
        return self.classes * (self.classes - 1) * n

    @property
    def engine_ratio(self) -> float:
        """Engine iteration against the raw passes of the same rows."""
        return self.engine_iteration / (self.engine_rows * self.raw_per_image)

    @property
    def engine_overhead(self) -> float:
        """Seconds per iteration the engine spends beyond the rows' raw passes."""
        return self.engine_iteration - self.engine_rows * self.raw_per_image

    def projected_seconds(self, n: int) -> float:
        """PROJECTION: ITERATIONS x (passes x raw time per image + engine overhead per iteration)."""
        return ITERATIONS * (self.passes(n) * self.raw_per_image + max(self.engine_overhead, 0.0))


def measure_cell(arch: str, size: str, classes: int, device: torch.device, *, batch: int, repeats: int,
                 engine_iterations: int, budget_seconds: float | None) -> Cell:
    """Measure one cell; with ``budget_seconds``, skip the timing when one probe pass says it
    would not fit (model building and conversion count against the budget)."""
    from scanner.jobs import Job
    from scanner.lred import estimate_patterns
    from scanner.schedules import FixedStep

    cell = Cell(arch, size, classes)
    channels, side = SIZES[size]
    reset = _reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    try:
        classifier = to_scan_classifier(build(arch, channels, side, classes), channels, side, device)
    except Exception as exc:                  # an exporter or converter refusal is a result here
        cell.status = f"not converted: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
        return cell
    cell.convert_seconds = time.perf_counter() - start
    generator = torch.Generator().manual_seed(0)
    x = torch.rand((batch, channels, side, side), generator=generator).to(device)
    targets = torch.arange(batch, device=device) % classes
    step = raw_pass(classifier, x, targets)
    probe = _timed(raw_pass(classifier, x[:1], targets[:1]), device)      # also the first warm-up
    # 1 warm-up + repeats raw batches, and (engine_iterations + 1) engine passes of as many rows
    estimate = probe * batch * (1 + repeats + engine_iterations + 1) * 0.8
    if budget_seconds is not None and cell.convert_seconds + estimate > budget_seconds:
        cell.status = "skipped (budget)"
        cell.raw_per_image = probe          # a batch-of-one figure, not reported as measured
        return cell
    _timed(step, device)
    cell.raw_per_image = statistics.median(_timed(step, device) for _ in range(repeats)) / batch
    # the engine on a feasible subset: two putative targets, each over the same batch/2 source
    # classes with one image each, fixed delta and pi close to 1. The targets are classes the
    # random model predicts for none of the images, so that no job stops at v = 0 (Q_t >= pi).
    per_job = max(1, min(batch // 2, classes - 2))
    pixels = torch.rand((per_job, channels, side, side), generator=generator)
    with torch.no_grad():
        predicted = set(classifier.scores(pixels.to(device)).argmax(1).tolist())
    targets_free = [k for k in range(classes) if k not in predicted][:2]
    sources = tuple(k for k in range(classes) if k not in targets_free)[:per_job]
    jobs = [Job(t, sources) for t in targets_free]
    labels = torch.as_tensor(sources)
    estimates: list = []
    seconds = _timed(lambda: estimates.extend(estimate_patterns(
        classifier, pixels, labels, classes, pi=0.99999, schedule=FixedStep(1e-4),
        max_iterations=engine_iterations, batch_images=2048, jobs=jobs, notice=lambda _: None)), device)
    if any(e.iterations != engine_iterations for e in estimates):
        cell.status = "engine jobs stopped early: " + ", ".join(f"{e.iterations} ({e.status})" for e in estimates)
    cell.engine_rows = sum(len(job.sources) for job in jobs)
    cell.engine_iteration = seconds / (engine_iterations + 1)
    cell.peak_rss_mib, cell.rss_scope = _peak_rss_mib(reset)
    if device.type == "cuda":
        cell.cuda_peak_mib = torch.cuda.max_memory_allocated(device) / 2**20
    return cell


def _duration(seconds: float) -> str:
    if math.isnan(seconds):
        return "–"
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= length:
            return f"{seconds / length:.1f} {unit}"
    return f"{seconds:.1f} s"


def table(cells: list[Cell], cuda: bool) -> str:
    """The Markdown table of ``cells`` (times in ms per image pass; projections labelled)."""
    head = ["architecture", "input", "K", "raw fwd+bwd ms/image", "engine ms/iteration (rows)", "engine / raw",
            "engine overhead ms/iteration", "passes/iteration N=1", "N=8", "peak RSS MiB"]
    head += (["CUDA peak MiB"] if cuda else []) + [f"PROJECTED scan, N=1 ({ITERATIONS} it.)",
                                                   f"PROJECTED scan, N=8 ({ITERATIONS} it.)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in cells:
        if c.status != "measured":
            rest = ["–"] * (len(head) - 9)
            lines.append(f"| {c.arch} | {c.size} | {c.classes} | {c.status} | – | – | – | "
                         f"{c.passes(1):,} | {c.passes(8):,} | " + " | ".join(rest) + " |")
            continue
        row = [c.arch, c.size, str(c.classes), f"{c.raw_per_image * 1e3:.2f}",
               f"{c.engine_iteration * 1e3:.2f} ({c.engine_rows})", f"{c.engine_ratio:.2f}",
               f"{c.engine_overhead * 1e3:.1f}", f"{c.passes(1):,}", f"{c.passes(8):,}",
               f"{c.peak_rss_mib:.0f} ({c.rss_scope})"]
        row += [f"{c.cuda_peak_mib:.0f}"] if cuda else []
        row += [_duration(c.projected_seconds(1)), _duration(c.projected_seconds(8))]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--sizes", default=",".join(SIZES))
    parser.add_argument("--classes", default=",".join(map(str, CLASSES)))
    parser.add_argument("--budget-seconds", type=float, default=20.0)
    parser.add_argument("--full", action="store_true", help="measure every cell, whatever it costs")
    parser.add_argument("--batch", type=int, default=8, help="images per timed raw batch (and engine rows)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--engine-iterations", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from scanner.estimation import select_device
    device = select_device(args.device)
    cells = []
    started = time.perf_counter()
    for arch in args.archs.split(","):
        for size in args.sizes.split(","):
            over = False                      # K changes only the last layer: once a K is over budget, larger K are too
            for classes in sorted(int(k) for k in args.classes.split(",")):
                if over:
                    cells.append(Cell(arch, size, classes, status="skipped (budget)"))
                    continue
                cell = measure_cell(arch, size, classes, device, batch=args.batch, repeats=args.repeats,
                                    engine_iterations=args.engine_iterations,
                                    budget_seconds=None if args.full else args.budget_seconds)
                over = cell.status == "skipped (budget)"
                cells.append(cell)
                print(f"{arch} {size} K={classes}: {cell.status} ({time.perf_counter() - started:.0f} s)",
                      file=sys.stderr, flush=True)
    threads = torch.get_num_threads()
    print(f"device {device}, torch threads {threads}, batch {args.batch}, repeats {args.repeats}, "
          f"engine iterations {args.engine_iterations}, budget "
          f"{'none (--full)' if args.full else f'{args.budget_seconds:g} s per cell'}, "
          f"wall {time.perf_counter() - started:.0f} s\n")
    print(table(cells, device.type == "cuda"))
    print(f"\nPROJECTED scan = {ITERATIONS} iterations x (K(K-1)N x raw time per image pass + engine "
          f"overhead per iteration); iterations from {ITERATIONS_SOURCE}. Not a measured scan time.")


if __name__ == "__main__":
    main()
