"""Many models in one run: ``scan_many`` (and ``lred scan MODELS_OR_FOLDERS... --out DIR``).

Every ``.onnx`` file given, or below a given folder (sorted; symbolic links followed, each folder
entered once, so a link loop ends), is scanned in turn into ``DIR``:

* ``<name>.json``: its scan report (or error report), ``<name>`` being the file's stem made safe
  (ASCII letters, digits, ``._-``) plus the first 10 hex digits of the sha256 of its real path,
  so two ``model.onnx`` in different folders never collide and no name from a vendor's folder
  reaches the file system unfiltered; ``<name>.html`` when an HTML writer is given;
* ``summary.json`` / ``summary.csv`` / ``index.html`` (``scanner.summary``), rewritten
  atomically after every model, so an interrupted batch leaves a valid summary.

A model that cannot be scanned is recorded (its error report and a summary row with the one-line
reason) and the batch goes on; the batch's exit status is the worst over its models (2 > 1 > 0).
A model whose report is already in ``DIR`` for the same model, clean data and configuration is
not scanned again (``scanner.resume``). The library never prints: progress goes to a
``BatchProgress`` (the command line draws bars or lines from it).
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import os
import re
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .config import ScanConfig
from .errors import ConfigError, InterruptedScanError, ModelError
from .failure import atomic_write, error_message, write_error_report
from .manifest import CONFIG_KEYS, Manifest
from .reporters import printable, render_error_json
from .resume import clean_data_sha256, config_digest, reusable_report
from .summary import (
    BatchRow,
    render_index_html,
    render_summary_csv,
    render_summary_json,
    row_from_error,
    row_from_report,
    summary_to_dict,
    worst_exit_status,
)

if TYPE_CHECKING:
    from .pipeline import ScanOutcome

__all__ = ["BatchProgress", "BatchResult", "ModelTask", "SilentProgress", "find_models", "plan", "report_stem",
           "scan_many"]

UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
UNFINISHED = "the scan of this model did not finish (this report is written when it starts and replaced when it ends)"
HtmlWriter = Callable[["ScanOutcome", Path], None]
# runner(pending) -> (index, task, outcome or the exception that ended its scan), as each finishes
Runner = Callable[[Sequence[tuple[int, "ModelTask"]]], Iterator[tuple[int, "ModelTask", "ScanOutcome | Exception"]]]


class BatchProgress(Protocol):
    """What a batch tells its caller as it goes (the command line draws it; tests record it)."""

    def batch_started(self, total: int) -> None: ...
    def model_started(self, index: int, total: int, model: str) -> None: ...
    def model_progress(self, stage: str, message: str) -> None: ...
    def model_finished(self, index: int, total: int, row: BatchRow) -> None: ...
    def batch_finished(self, rows: Sequence[BatchRow]) -> None: ...


@dataclass(frozen=True)
class ModelTask:
    """One model of a batch, with its own clean data and configuration (manifest applied)."""

    model: Path
    data: Path | None                  # None only for ``plan(require_data=False)`` (lred inspect)
    config: ScanConfig
    class_names: tuple[str, ...] | None = None


@dataclass(frozen=True)
class BatchResult:
    rows: tuple[BatchRow, ...]
    out_dir: Path

    @property
    def exit_status(self) -> int:
        """The worst over the models: 2 (some model has no verdict) > 1 (a backdoor) > 0."""
        return worst_exit_status(self.rows)


def report_stem(model: str | os.PathLike) -> str:
    """The safe, collision-free file stem of ``model``'s reports (see the module docstring)."""
    path = Path(model)
    stem = UNSAFE.sub("_", path.stem)[:60].strip("._-") or "model"
    digest = hashlib.sha256(os.fsencode(os.path.realpath(path))).hexdigest()[:10]
    return f"{stem}-{digest}"


def find_models(paths: Sequence[str | os.PathLike]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The model files ``paths`` name, in order (each folder's ``.onnx`` files sorted; a file met
    twice, by another path or link, once), and the entries that could not be read, with why."""
    models: dict[str, Path] = {}
    problems: list[tuple[Path, str]] = []

    def add(file: Path) -> None:
        models.setdefault(os.path.realpath(file), file)

    for given in map(Path, paths):
        if given.is_dir():
            _walk(given, add, problems)
        else:
            add(given)                     # a missing file fails its scan with a one-line error
    return list(models.values()), problems


def _walk(root: Path, add: Callable[[Path], None], problems: list[tuple[Path, str]]) -> None:
    """Every ``.onnx`` below ``root``, sorted; each folder entered once (links followed, loops cut)."""
    visited: set[tuple[int, int]] = set()
    found: list[Path] = []

    def unreadable(exc: OSError) -> None:
        problems.append((Path(exc.filename or root), f"cannot read folder: {exc.strerror or exc}"))

    for folder, subfolders, files in os.walk(root, onerror=unreadable, followlinks=True):
        try:
            info = os.stat(folder)
        except OSError as exc:
            unreadable(exc)
            subfolders[:] = []
            continue
        if (info.st_dev, info.st_ino) in visited:      # a link loop, or a second way into a folder
            subfolders[:] = []
            continue
        visited.add((info.st_dev, info.st_ino))
        found.extend(Path(folder) / name for name in files if name.lower().endswith(".onnx"))
    for file in sorted(found, key=lambda f: f.as_posix()):
        add(file)


def plan(models: Sequence[Path], data: str | os.PathLike | None, config: ScanConfig,
         manifest: Manifest | None = None, keep: Collection[str] = (), require_data: bool = True,
         class_names: Sequence[str] | None = None) -> list[ModelTask]:
    """Each model's clean data, configuration and class names: ``config`` and ``data``, with the
    manifest's settings for that model in place of every field not named in ``keep`` (the
    command line's explicit options). Raises ConfigError when a model has no clean data or the
    manifest's settings make an invalid configuration."""
    tasks = []
    for model in models:
        settings = manifest.settings_for(model) if manifest is not None else {}
        changes: dict[str, Any] = {CONFIG_KEYS[k]: v for k, v in settings.items()
                                   if k in CONFIG_KEYS and CONFIG_KEYS[k] not in keep}
        names = settings.get("class_names") if "class_names" not in keep else None
        if class_names is not None and ("class_names" in keep or names is None):   # --class-names wins
            names = tuple(class_names)
        try:
            model_config = dataclasses.replace(config, **changes) if changes else config
        except ConfigError as exc:
            raise ConfigError(f"manifest {manifest.path if manifest else ''}: settings for "
                              f"{printable(model)}: {exc}") from exc
        model_data = data if "data" in keep or "data" not in settings else settings["data"]
        if model_data is None and require_data:
            raise ConfigError(f"no clean data for {printable(model)}: pass --data, or set data in the manifest")
        tasks.append(ModelTask(Path(model), None if model_data is None else Path(model_data), model_config, names))
    return tasks


def scan_many(models: Sequence[str | os.PathLike], data: str | os.PathLike | None, config: ScanConfig | None,
              out_dir: str | os.PathLike, *, manifest: Manifest | None = None, keep: Collection[str] = (),
              progress: BatchProgress | None = None, html_writer: HtmlWriter | None = None,
              reuse: bool = True, class_names: Sequence[str] | None = None,
              runner: Runner | None = None) -> BatchResult:
    """Scan every model ``models`` name (files, or folders searched for ``.onnx``) into ``out_dir``.

    ``data``, ``config``: the clean data and configuration of every model, unless ``manifest``
    sets them for a model (fields named in ``keep`` are never taken from it). ``reuse``: skip a
    model whose report in ``out_dir`` matches (``scanner.resume``). ``html_writer(outcome, path)``
    writes a model's HTML report (default: ``scanner.html_report.write_html_report`` when that
    module exists). ``runner`` scans the models that are not reused and yields each (index, task,
    outcome or exception) as it finishes (default: one after another in this process;
    ``scanner.cluster.cluster_runner``: one task per model on a Dask cluster).
    Raises ConfigError before scanning anything when a model has no data or an
    invalid configuration; InterruptedScanError (and KeyboardInterrupt) stop the batch, leaving the
    summary of the models done so far.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    found, problems = find_models(models)
    if not found and not problems:
        raise ModelError("no model to scan: no .onnx file in "
                         + (", ".join(printable(m) for m in models) or "the manifest"))
    tasks = plan(found, data, config or ScanConfig(), manifest, keep, class_names=class_names)
    order = {str(folder): i for i, (folder, _) in enumerate(problems)}
    order.update({str(task.model): len(problems) + i for i, task in enumerate(tasks)})
    writer = html_writer if html_writer is not None else _default_html_writer()
    total = len(tasks) + len(problems)
    rows: list[BatchRow] = []
    started_at = _utc_now()
    tell = progress or SilentProgress()

    def write_summary(complete: bool) -> None:
        summary = summary_to_dict(rows, total, complete, started_at, _utc_now())
        atomic_write(out / "summary.json", render_summary_json(summary).encode())
        atomic_write(out / "summary.csv", render_summary_csv(summary).encode())
        atomic_write(out / "index.html", render_index_html(summary).encode())

    write_summary(False)
    tell.batch_started(total)
    for folder, reason in problems:
        name = report_stem(folder)
        atomic_write(out / f"{name}.json", render_error_json(reason, "OSError", 2).encode())
        rows.append(row_from_error(str(folder), name, f"{name}.json", printable(reason), "OSError"))
    data_hashes: dict[Path | None, str | None] = {None: None}
    pending: list[tuple[int, ModelTask]] = []
    for index, task in enumerate(tasks, start=len(problems) + 1):
        if reuse and task.data is not None and task.data not in data_hashes:
            data_hashes[task.data] = clean_data_sha256(task.data)
        old = _reused_row(task, out, data_hashes.get(task.data)) if reuse else None
        if old is not None:
            tell.model_started(index, total, str(task.model))
            rows.append(old)
            write_summary(False)
            tell.model_finished(index, total, old)
        else:
            pending.append((index, task))
    for _, task in pending:                  # never an older report for a model about to be scanned
        write_error_report(out / f"{report_stem(task.model)}.json", UNFINISHED, "Unfinished")
    results = (runner or _scan_locally(tell, total))(pending)
    for index, task, result in results:
        row = _finish(task, result, out, tell, writer)
        rows.append(row)
        write_summary(False)
        tell.model_finished(index, total, row)
    rows.sort(key=lambda row: order.get(row.model, -1))
    write_summary(True)
    tell.batch_finished(rows)
    return BatchResult(tuple(rows), out)


def _reused_row(task: ModelTask, out: Path, data_sha256: str | None) -> BatchRow | None:
    """The row of a model whose report in ``out`` is for the same model, data and configuration."""
    from .data import file_sha256_of

    name, model = report_stem(task.model), str(task.model)
    json_path, html_path = out / f"{name}.json", out / f"{name}.html"
    try:
        model_sha256 = file_sha256_of(task.model)
    except OSError:
        return None
    old = reusable_report(json_path, model_sha256, data_sha256, config_digest(task.config))
    if not old:
        return None
    html = html_path.name if html_path.is_file() else None
    return row_from_report(model, name, old, "reused", html, task.class_names)


def _scan_locally(tell: BatchProgress, total: int) -> Runner:
    """The default runner: each model in turn, in this process."""
    def run(pending: Sequence[tuple[int, ModelTask]]) -> Iterator[tuple[int, ModelTask, ScanOutcome | Exception]]:
        from .pipeline import scan  # torch and onnxruntime load only when a model is scanned

        for index, task in pending:
            tell.model_started(index, total, str(task.model))
            try:
                outcome: ScanOutcome | Exception = scan(task.model, task.data or "", task.config,
                                                        on_progress=tell.model_progress,
                                                        class_names=task.class_names or ())
            except InterruptedScanError:
                raise
            except Exception as exc:          # recorded, and the batch goes on (the CLI's fail closed, per model)
                outcome = exc
            yield index, task, outcome
    return run


def _finish(task: ModelTask, result: ScanOutcome | Exception, out: Path, tell: BatchProgress,
            writer: HtmlWriter | None) -> BatchRow:
    """Write one model's reports (its error report when ``result`` is an exception); its row."""
    from .reporters import render_json, report_to_dict

    name, model = report_stem(task.model), str(task.model)
    json_path, html_path = out / f"{name}.json", out / f"{name}.html"
    if isinstance(result, Exception):
        message = printable(error_message(result))
        write_error_report(json_path, message, type(result).__name__)
        return row_from_error(model, name, json_path.name, message, type(result).__name__)
    atomic_write(json_path, render_json(result.report).encode())
    html = None
    if writer is not None:
        try:
            writer(result, html_path)
            html = html_path.name
        except Exception as exc:             # the verdict stands; the row has no HTML link
            tell.model_progress("html", f"could not write the HTML report: {error_message(exc)}")
    return row_from_report(model, name, report_to_dict(result.report), "scanned", html, task.class_names)


def _default_html_writer() -> HtmlWriter | None:
    """The HTML report writer, when this lred has one (``scanner.html_report.write_html_report``)."""
    import importlib.util

    if importlib.util.find_spec(f"{__package__}.html_report") is None:
        return None
    import importlib
    module = importlib.import_module(f"{__package__}.html_report")
    writer: HtmlWriter | None = getattr(module, "write_html_report", None)
    return writer


def _utc_now() -> str:
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


class SilentProgress:
    """A BatchProgress that shows nothing."""

    def batch_started(self, total: int) -> None: ...
    def model_started(self, index: int, total: int, model: str) -> None: ...
    def model_progress(self, stage: str, message: str) -> None: ...
    def model_finished(self, index: int, total: int, row: BatchRow) -> None: ...
    def batch_finished(self, rows: Sequence[BatchRow]) -> None: ...
