"""Command line: ``lred scan MODEL.onnx --data CLEAN``.

Exit status (like grep/diff): 0 no backdoor detected, 1 backdoor detected, 2 could not scan
(bad model, bad data, unfaithful conversion, usage error, internal error): never 0 on failure.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from . import __version__, methods
from .config import DEFAULT_LARGEST_STEP, DEVICES, LAYOUTS, P_VALUE_BASES, ScanConfig
from .errors import EXIT_BACKDOOR, EXIT_CLEAN, EXIT_ERROR, DataError, LredError, ModelError
from .failure import atomic_write, fail
from .reporters import printable

DEFAULTS = ScanConfig()


def _floats(text: str | None, name: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError as exc:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}", param_hint=name) from exc


def _save_patterns(directory: Path, patterns: dict) -> None:
    import io

    import numpy as np
    directory.mkdir(parents=True, exist_ok=True)
    for key, pattern in sorted(patterns.items()):
        buffer = io.BytesIO()
        np.save(buffer, pattern, allow_pickle=False)
        name = f"pattern_class_{key}.npy" if isinstance(key, int) else f"pattern_pair_{key[0]}_to_{key[1]}.npy"
        atomic_write(directory / name, buffer.getvalue())


class _Progress:
    """Progress lines on stderr; estimation updates at most every two seconds."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.last = 0.0

    def __call__(self, stage: str, message: str) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if stage == "estimate" and message.startswith("iteration") and now - self.last < 2.0:
            return
        self.last = now
        click.echo(f"lred [{stage}] {printable(message)}", err=True)


def _readable(model: Path, data: Path) -> None:
    """The cheap checks before the heavy imports: the model file and the clean data exist."""
    if not model.is_file():
        raise ModelError(f"model file not found: {model}")
    if not data.exists():
        raise DataError(f"clean data not found: {data} (a folder of class sub-folders, or an .npz)")


def _reuse_freed_memory() -> None:
    """Have glibc serve large blocks from the heap and keep freed memory for reuse.

    By default glibc maps every block above its mmap threshold (at most 32 MB) afresh and unmaps
    it on free, so each forward/backward pass of a scan faults its activation buffers in again:
    measured on the sample CNN (one thread), 6.1 s of system time in a 33 s scan, 0.4 s with
    mmap turned off (docs/benchmarks.md, "Freed memory"). The process keeps its peak heap
    until it exits, which a one-scan command does soon. Other C libraries: nothing happens.
    """
    import ctypes
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4                 # glibc's malloc.h
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mallopt(M_MMAP_MAX, 0)
    mallopt(M_TRIM_THRESHOLD, 2**31 - 1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lred")
def main() -> None:
    """lred: detect imperceptible backdoors in ONNX image classifiers (L-RED).

    Exit status: 0 no backdoor detected, 1 backdoor detected, 2 could not scan.
    """


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data", "data", required=True, type=click.Path(path_type=Path),
              help="Clean images: a folder of class sub-folders 0/, 1/, ... of PNG/JPEG, or an .npz with x and y.")
@click.option("--method", type=click.Choice(methods.METHOD_NAMES), default=DEFAULTS.method, show_default=True,
              help=methods.help_text())
@click.option("--exact", is_flag=True,
              help="Run Algorithm 1 literally: one target at a time, a second forward pass per step (slow).")
@click.option("--crossing-resolution", type=float, default=None,
              help="Shorten the step that first reaches pi by bisection, to this length (pixel units).")
@click.option("--relative-step", type=float, default=None,
              help="Step length max(delta, RELATIVE_STEP * ||v||) instead of a fixed delta.")
@click.option("--adaptive-step", type=float, default=None, metavar="DELTA_MAX",
              help=f"Largest step of the default schedule: each target's step lies between delta and "
                   f"DELTA_MAX, halved while the source weights w move, lengthened while they hold "
                   f"(docs/method.md 'Step schedule').  [default: max({DEFAULT_LARGEST_STEP:g}, delta)]")
@click.option("--fixed-step", is_flag=True,
              help="Every step exactly delta (Algorithm 1's schedule; implied by --exact and --relative-step).")
@click.option("--weight-update-length", default=DEFAULTS.weight_update_length, show_default=True, type=float,
              help="Default schedule only: after a step of length h, the source weights w are updated "
                   "h / WEIGHT_UPDATE_LENGTH times, as Algorithm 1 with that fixed step would over the same "
                   "length (the paper's delta; docs/method.md 'Step schedule').")
@click.option("--images-per-class", "-n", default=DEFAULTS.images_per_class, show_default=True, type=int,
              help="N clean images per class (correctly classified ones only).")
@click.option("--seed", default=DEFAULTS.seed, show_default=True, type=int, help="Seed for choosing the images.")
@click.option("--pi", default=DEFAULTS.pi, show_default=True, type=float,
              help="Target misclassification fraction pi.")
@click.option("--delta", default=DEFAULTS.delta, show_default=True, type=float,
              help="Step length of the normalized pattern update (pixel units, [0,1] range).")
@click.option("--max-iterations", default=DEFAULTS.max_iterations, show_default=True, type=int,
              help="Iteration bound tau_max per target class.")
@click.option("--alpha", default=DEFAULTS.alpha, show_default=True, type=float,
              help="Detection threshold on the p-value (the paper's phi).")
@click.option("--p-value", "p_value_basis", type=click.Choice(P_VALUE_BASES), default=DEFAULTS.p_value_basis,
              show_default=True,
              help="Which p-value is compared with alpha: 'paper' is 1 - G(r_max)^K of Sec. 3.2 as written; "
                   "'calibrated' is its probability under the fitted Gamma null, so that alpha is the "
                   "false-alarm rate (docs/method.md 'Calibrated p-value'). Both are reported.")
@click.option("--layout", type=click.Choice(LAYOUTS), default="auto", show_default=True,
              help="Pixel layout of the model input.")
@click.option("--mean", default=None, help="Per-channel mean subtracted after the pattern, e.g. 0.485,0.456,0.406.")
@click.option("--std", default=None, help="Per-channel std divided after the pattern.")
@click.option("--input-scale", default=DEFAULTS.input_scale, show_default=True, type=float,
              help="Multiply [0,1] pixels by this before normalization (255 for models taking 0-255).")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="Torch device for pattern estimation (auto: CUDA when available).")
@click.option("--cuda-graphs/--no-cuda-graphs", default=DEFAULTS.cuda_graphs, show_default=True,
              help="On a GPU, replay each forward/backward pass as a CUDA graph (off: plain eager passes).")
@click.option("--output", "output_name", default=None, help="Name of the class-score output (default: automatic).")
@click.option("--batch-images", default=DEFAULTS.batch_images, show_default=True, type=int,
              help="Images per forward/backward chunk; lower it to bound memory.")
@click.option("--timeout", type=float, default=None, metavar="SECONDS",
              help="Stop the scan (exit 2) when it runs longer than this; onnxruntime runs are cut off too.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the machine-readable report here (also written, with verdict 'error', on failure).")
@click.option("--save-patterns", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Save each estimated pattern v_t as DIR/pattern_class_<t>.npy (H, W, C float32).")
@click.option("--scalable", is_flag=True,
              help="Scalable mode for many classes: screen every target for a few iterations, estimate only the "
                   "best-ranked and a random null sample fully (docs/scale.md). Off: the full method.")
@click.option("--screen-iterations", default=DEFAULTS.screen_iterations, show_default=True, type=int,
              help="--scalable: Algorithm 1 iterations per target in the screen.")
@click.option("--screen-sources", default=DEFAULTS.screen_sources, show_default=True, type=int,
              help="--scalable: source classes per target in the screen (all when fewer).")
@click.option("--screen-candidates", default=DEFAULTS.screen_candidates, show_default=True, type=int,
              help="--scalable: best-ranked targets estimated fully.")
@click.option("--screen-null-targets", default=DEFAULTS.screen_null_targets, show_default=True, type=int,
              help="--scalable: random targets estimated fully for the Gamma null.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines on stderr.")
@click.option("--debug", is_flag=True, help="Show the traceback of an error.")
def scan(model: Path, data: Path, method: str, exact: bool, crossing_resolution: float | None,
         relative_step: float | None, adaptive_step: float | None, fixed_step: bool,
         weight_update_length: float, images_per_class: int, seed: int, pi: float, delta: float,
         max_iterations: int, alpha: float, p_value_basis: str, layout: str, mean: str | None, std: str | None,
         input_scale: float, device: str, cuda_graphs: bool, output_name: str | None, batch_images: int,
         timeout: float | None, json_path: Path | None, save_patterns: Path | None, quiet: bool,
         debug: bool, **screen: Any) -> None:
    """Scan MODEL (an ONNX image classifier) for an imperceptible backdoor."""
    _reuse_freed_memory()
    from .reporters import render_json, render_text

    mean_values, std_values = _floats(mean, "--mean"), _floats(std, "--std")
    if adaptive_step is not None and (fixed_step or exact or relative_step is not None):
        raise click.UsageError("--adaptive-step cannot be combined with --fixed-step, --exact or --relative-step")
    try:
        config = ScanConfig(method=method, exact=exact, crossing_resolution=crossing_resolution,
                            relative_step=relative_step, adaptive_step=adaptive_step, fixed_step=fixed_step,
                            weight_update_length=weight_update_length, images_per_class=images_per_class,
                            seed=seed, pi=pi, delta=delta,
                            max_iterations=max_iterations, alpha=alpha, p_value_basis=p_value_basis,
                            layout=layout,
                            mean=mean_values, std=std_values, input_scale=input_scale, device=device,
                            cuda_graphs=cuda_graphs, output_name=output_name, batch_images=batch_images,
                            timeout=timeout, **screen)
        _readable(model, data)
        from .pipeline import scan as run_scan  # torch and onnxruntime load only for a scan that can run
        outcome = run_scan(model, data, config, on_progress=_Progress(quiet))
        if save_patterns is not None:
            _save_patterns(save_patterns, outcome.patterns)
        if json_path is not None:
            atomic_write(json_path, render_json(outcome.report).encode())
    except (LredError, OSError, KeyboardInterrupt, Exception) as exc:  # fail closed: exit 2
        fail(exc, json_path, debug)
        return
    click.echo(render_text(outcome.report), nl=False)
    sys.exit(EXIT_BACKDOOR if outcome.report.backdoor_found else EXIT_CLEAN)


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Clean images for the parity check (default: random inputs in [0, 1]).")
@click.option("--layout", type=click.Choice(LAYOUTS), default="auto", show_default=True)
@click.option("--output", "output_name", default=None, help="Name of the class-score output.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the inspection as JSON here.")
@click.option("--debug", is_flag=True, help="Show the traceback of an error.")
def inspect(model: Path, data: Path | None, layout: str, output_name: str | None, json_path: Path | None,
            debug: bool) -> None:
    """Describe MODEL and check that it converts faithfully (exit 0), or say why not (exit 2)."""
    from .inspection import inspect_model
    from .reporters import render_inspection_json, render_inspection_text

    try:
        report = inspect_model(str(model), str(data) if data else None,
                               ScanConfig(layout=layout, output_name=output_name))
        if json_path is not None:
            atomic_write(json_path, render_inspection_json(report).encode())
    except (LredError, OSError, KeyboardInterrupt, Exception) as exc:  # fail closed: exit 2
        fail(exc, json_path, debug)
        return
    click.echo(render_inspection_text(report), nl=False)
    sys.exit(EXIT_CLEAN if report.ok else EXIT_ERROR)


if __name__ == "__main__":  # pragma: no cover
    main()
