"""Command line: ``lred scan MODEL.onnx --data CLEAN``.

Exit status (like grep/diff): 0 no backdoor detected, 1 backdoor detected, 2 could not scan
(bad model, bad data, unfaithful conversion, usage error, internal error): never 0 on failure.
A scan that reached a verdict but could not write the ``--html`` report prints the verdict and
exits 2: a report that was asked for is missing.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from . import __version__, methods
from .allocator import reuse_freed_memory
from .class_names import parse_class_names
from .config import DEFAULT_LARGEST_STEP, DEVICES, LAYOUTS, P_VALUE_BASES, TRIGGERS, ScanConfig
from .errors import EXIT_BACKDOOR, EXIT_CLEAN, EXIT_ERROR, DataError, LredError, ModelError
from .failure import atomic_write, fail
from .html_output import discard_stale, save_html
from .outputs import FORMATS, INSPECT_FORMATS, inspect_stdout, resolve_outputs, scan_stdout, write_scan_reports
from .patch_arrays import resolve_trigger
from .reporters import printable

if TYPE_CHECKING:
    from .manifest import Manifest
    from .outputs import Outputs

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


def _given(ctx: click.Context) -> set[str]:
    """The options given explicitly (not defaults): a manifest does not override them."""
    from click.core import ParameterSource
    return {name for name in ctx.params
            if ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)}


def _check_batch_options(out_dir: Path | None, json_path: Path | None, save_patterns: Path | None,
                         html_path: Path | None) -> None:
    """Usage errors of a batch (several models, or a folder)."""
    if out_dir is None:
        raise click.UsageError("several models or a folder need --out DIR (for each model's report and the summary)")
    if json_path is not None and str(json_path) != "-":
        raise click.UsageError("--json is for one model; with --out each model's report is DIR/<name>.json")
    if html_path is not None:
        raise click.UsageError("--html is for one model; with --out each model's HTML report is DIR/<name>.html")
    if save_patterns is not None:
        raise click.UsageError("--save-patterns is for one model without --out")


def _scan_batch(targets: list[Path], data: Path | None, config: ScanConfig, out_dir: Path,
                manifest: Manifest | None, keep: set[str], quiet: bool, class_names: tuple[str, ...] | None,
                outputs: Outputs, scheduler: str | None) -> None:
    """``lred scan MODELS... --out DIR``: scanner.batch.scan_many, then the worst exit status.
    stdout: the text summary, or (``--format``) summary.json's content or the batch's SARIF log."""
    from .batch import scan_many
    from .progress import batch_progress
    from .summary import render_batch_text

    runner, client = None, None
    if scheduler is not None:                # one task per model on the cluster (scanner/cluster.py)
        from .cluster import cluster_runner, connect
        client = connect(scheduler)
        runner = cluster_runner(client)
    try:
        result = scan_many(targets, data, config, out_dir, manifest=manifest, keep=keep,
                           progress=batch_progress(quiet), class_names=class_names, runner=runner)
    finally:
        if client is not None:
            client.close()
    sarif = None
    if outputs.sarif_path is not None or outputs.stdout == "sarif":
        from .sarif import batch_outcomes, render_sarif
        sarif = render_sarif(batch_outcomes(result.rows))
        if outputs.sarif_path is not None:
            atomic_write(outputs.sarif_path, sarif.encode())
    if outputs.stdout == "sarif" and sarif is not None:
        click.echo(sarif, nl=False)
    elif outputs.stdout == "json":
        click.echo((out_dir / "summary.json").read_text("utf-8"), nl=False)
    else:
        click.echo(render_batch_text(result.rows, str(out_dir)), nl=False)
    sys.exit(result.exit_status)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lred")
def main() -> None:
    """lred: detect imperceptible backdoors in ONNX image classifiers (L-RED).

    Exit status: 0 no backdoor detected, 1 backdoor detected, 2 could not scan.
    """


@main.command()
@click.argument("models", nargs=-1, type=click.Path(path_type=Path), metavar="MODEL_OR_FOLDER...")
@click.option("--data", "data", type=click.Path(path_type=Path), default=None,
              help="Clean images: a folder of class sub-folders 0/, 1/, ... of PNG/JPEG, or an .npz with x and y "
                   "(required unless the manifest sets it).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Batch: scan every model (files, and every .onnx below folders) into DIR: one report per "
                   "model, summary.json, summary.csv, index.html; reports already there for the same model, "
                   "data and configuration are reused. Needed for several models or a folder.")
@click.option("--manifest", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="TOML file setting per model (path or glob) layout, mean, std, input_scale, output, "
                   "class_names and data; options given on the command line win (docs/batch.md).")
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
@click.option("--json", "json_path", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path), default=None,
              help="Write the machine-readable report here (also written, with verdict 'error', on failure); "
                   "'-': to stdout, instead of the text.")
@click.option("--sarif", "sarif_path", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path), default=None,
              help="Write a SARIF 2.1.0 log here (a 'note' result on failure); '-': to stdout.")
@click.option("--format", "output_format", type=click.Choice(FORMATS), default=None,
              help="What stdout carries: text (the summary; default), json (the --json report) or sarif.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a self-contained HTML report here (plots and patterns embedded; opens offline). "
                   "If it cannot be written, the verdict is still printed and the exit status is 2.")
@click.option("--class-names", default=None, metavar="FILE|a,b,c",
              help="Class names for the reports: a file (one name per line, or a JSON list) or a comma list; "
                   "exactly one per class.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Split the pattern estimations over the workers of the Dask scheduler at ADDRESS "
                   "(tcp://host:8786); same report as a local scan. Needs pip install 'lred[cluster]' "
                   "(docs/cluster.md).")
@click.option("--save-patterns", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Save each estimated pattern v_t as DIR/pattern_class_<t>.npy (H, W, C float32); patch "
                   "scans: each mask as mask_class_<t>.npy (H, W) and m*u as masked_pattern_class_<t>.npy.")
@click.option("--trigger", type=click.Choice(TRIGGERS), default=None,
              help="Which backdoors to look for: additive (the default: --method as given), patch "
                   "(--method lred-patch, or nc) or both (lred and lred-patch, each test at alpha/2; "
                   "docs/method.md 'Patch triggers').")
@click.option("--patch-iterations", default=DEFAULTS.patch_iterations, show_default=True, type=int,
              help="Iteration bound of the mask estimation of lred-patch and nc.")
@click.option("--patch-shift", default=DEFAULTS.patch_shift, show_default=True, type=int,
              help="Experimental: in the mask estimation of lred-patch and nc, every image is shifted by a "
                   "random -P..P pixels along each image axis at each iteration, so the mask must send the "
                   "images to the target wherever their content sits (docs/patch_zoo.md). 0: off.")
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
@click.option("--sample-sources", default=DEFAULTS.sample_sources, show_default=True, type=int,
              help="Experimental, for many classes: every target's path, each iteration's gradient from this many "
                   "source classes drawn by the weights w (docs/scale.md). 0: every source (Algorithm 1).")
@click.option("--refresh-every", default=DEFAULTS.refresh_every, show_default=True, type=int,
              help="--sample-sources: iterations between two measurements of every misclassification fraction "
                   "of a target.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines on stderr.")
@click.option("--debug", is_flag=True, help="Show the traceback of an error.")
@click.pass_context
def scan(ctx: click.Context, models: tuple[Path, ...], data: Path | None, out_dir: Path | None,
         manifest: Path | None, method: str, exact: bool, crossing_resolution: float | None,
         relative_step: float | None, adaptive_step: float | None, fixed_step: bool,
         weight_update_length: float, images_per_class: int, seed: int, pi: float, delta: float,
         max_iterations: int, alpha: float, p_value_basis: str, layout: str, mean: str | None, std: str | None,
         input_scale: float, device: str, cuda_graphs: bool, output_name: str | None, batch_images: int,
         timeout: float | None, scheduler: str | None, json_path: Path | None, sarif_path: Path | None,
         output_format: str | None, html_path: Path | None, class_names: str | None, save_patterns: Path | None,
         trigger: str | None, patch_iterations: int, quiet: bool, debug: bool, **screen: Any) -> None:
    """Scan ONNX image classifiers for an imperceptible backdoor: one MODEL file, or (with --out)
    several files and folders."""
    reuse_freed_memory()     # before torch loads: its buffers are served from the heap too
    from .batch import plan
    from .manifest import load_manifest

    outputs = resolve_outputs(output_format, json_path, sarif_path, model=str(models[0]) if models else None)
    mean_values, std_values = _floats(mean, "--mean"), _floats(std, "--std")
    if adaptive_step is not None and (fixed_step or exact or relative_step is not None):
        raise click.UsageError("--adaptive-step cannot be combined with --fixed-step, --exact or --relative-step")
    method, trigger = resolve_trigger(method, trigger)
    if not models and manifest is None:
        raise click.UsageError("give the MODEL file(s) or folder(s) to scan (or a --manifest that names them)")
    if data is None and manifest is None:
        raise click.MissingParameter(param_hint="'--data'", param_type="option")
    try:
        loaded = load_manifest(manifest) if manifest is not None else None
    except LredError as exc:
        fail(exc, outputs, debug)
        return
    targets = list(models) or (loaded.models() if loaded is not None else [])
    if out_dir is not None or len(targets) != 1 or targets[0].is_dir():
        _check_batch_options(out_dir, json_path, save_patterns, html_path)
    keep = _given(ctx)
    try:
        config = ScanConfig(method=method, exact=exact, crossing_resolution=crossing_resolution,
                            relative_step=relative_step, adaptive_step=adaptive_step, fixed_step=fixed_step,
                            weight_update_length=weight_update_length, images_per_class=images_per_class,
                            seed=seed, pi=pi, delta=delta,
                            max_iterations=max_iterations, alpha=alpha, p_value_basis=p_value_basis,
                            layout=layout,
                            mean=mean_values, std=std_values, input_scale=input_scale, device=device,
                            cuda_graphs=cuda_graphs, output_name=output_name, batch_images=batch_images,
                            timeout=timeout, trigger=trigger, patch_iterations=patch_iterations, **screen)
        names = parse_class_names(class_names) if class_names is not None else None
        if out_dir is not None:
            _scan_batch(targets, data, config, out_dir, loaded, keep, quiet, names, outputs, scheduler)   # exits
        task = plan(targets, data, config, loaded, keep, class_names=names)[0]
        assert task.data is not None                 # plan requires it
        _readable(task.model, task.data)
        if scheduler is not None:             # Dask and the scheduler are checked before torch loads
            from .cluster import scan_on_cluster
            outcome = scan_on_cluster(scheduler, task.model, task.data, task.config, on_progress=_Progress(quiet),
                                      class_names=task.class_names or ())
        else:
            from .pipeline import scan as run_scan  # torch and onnxruntime load only for a scan that can run
            outcome = run_scan(task.model, task.data, task.config, on_progress=_Progress(quiet),
                               class_names=task.class_names or ())
        report = outcome.report
        if save_patterns is not None:
            from .patch_arrays import save_masks
            _save_patterns(save_patterns, outcome.patterns)
            report = save_masks(save_patterns, outcome)
        write_scan_reports(report, outputs)
    except (LredError, OSError, KeyboardInterrupt, Exception) as exc:  # fail closed: exit 2
        discard_stale(html_path)
        fail(exc, outputs, debug)
        return
    click.echo(scan_stdout(report, outputs), nl=False)
    if html_path is not None and not save_html(html_path, outcome, debug):
        sys.exit(EXIT_ERROR)     # the verdict above stands, but a report that was asked for is missing
    sys.exit(EXIT_BACKDOOR if report.backdoor_found else EXIT_CLEAN)


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Clean images for the parity check (default: random inputs in [0, 1]).")
@click.option("--layout", type=click.Choice(LAYOUTS), default="auto", show_default=True)
@click.option("--mean", default=None, help="Per-channel mean, as for lred scan.")
@click.option("--std", default=None, help="Per-channel std, as for lred scan.")
@click.option("--input-scale", default=DEFAULTS.input_scale, show_default=True, type=float,
              help="Multiply [0,1] pixels by this before normalization, as for lred scan.")
@click.option("--output", "output_name", default=None, help="Name of the class-score output.")
@click.option("--manifest", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The scan's TOML manifest: MODEL's input convention, output and data from it "
                   "(options given here win).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path), default=None,
              help="Write the inspection as JSON here ('-': to stdout, instead of the text).")
@click.option("--format", "output_format", type=click.Choice(INSPECT_FORMATS), default=None,
              help="What stdout carries: text (default) or json (the --json inspection).")
@click.option("--debug", is_flag=True, help="Show the traceback of an error.")
@click.pass_context
def inspect(ctx: click.Context, model: Path, data: Path | None, layout: str, mean: str | None, std: str | None,
            input_scale: float, output_name: str | None, manifest: Path | None, json_path: Path | None,
            output_format: str | None, debug: bool) -> None:
    """Describe MODEL, check that it converts faithfully and, with --data, its clean accuracy under
    the input convention given (exit 0), or say why it cannot be scanned (exit 2)."""
    from .batch import plan
    from .inspection import inspect_model
    from .manifest import load_manifest
    from .reporters import render_inspection_json

    outputs = resolve_outputs(output_format, json_path, model=str(model))
    mean_values, std_values = _floats(mean, "--mean"), _floats(std, "--std")
    try:
        config = ScanConfig(layout=layout, output_name=output_name, mean=mean_values, std=std_values,
                            input_scale=input_scale)
        loaded = load_manifest(manifest) if manifest is not None else None
        task = plan([model], data, config, loaded, _given(ctx), require_data=False)[0]
        report = inspect_model(str(model), str(task.data) if task.data else None, task.config)
        if outputs.json_path is not None:
            atomic_write(outputs.json_path, render_inspection_json(report).encode())
    except (LredError, OSError, KeyboardInterrupt, Exception) as exc:  # fail closed: exit 2
        fail(exc, outputs, debug)
        return
    click.echo(inspect_stdout(report, outputs), nl=False)
    sys.exit(EXIT_CLEAN if report.ok else EXIT_ERROR)


if __name__ == "__main__":  # pragma: no cover
    main()
