"""How every failed run of the command line ends, in one light module (no torch, no onnxruntime).

``scanner.entry`` needs it before anything heavy is imported (a signal or a usage error can come
first), and ``scanner.cli`` at the end of each command. Reports are written atomically: complete
or absent, never half written.
"""
from __future__ import annotations

import contextlib
import os
import sys
import traceback
from pathlib import Path

import click

from .errors import EXIT_ERROR, InconclusiveError, LredError
from .files import atomic_write
from .outputs import STDOUT, Outputs, report_file
from .report import FailedScan
from .reporters import printable, render_error_json

__all__ = ["atomic_write", "error_message", "fail", "write_error_report", "write_failure_sarif"]


def write_error_report(path: str | Path, message: str, error_type: str) -> None:
    """Write the report of a run that produced no verdict (atomically)."""
    atomic_write(Path(path), render_error_json(message, error_type, EXIT_ERROR).encode())


def write_failure_sarif(path: str | Path, failure: FailedScan) -> None:
    """Write the SARIF log of a run that produced no verdict (atomically)."""
    from .sarif import render_scan_sarif  # not at import: the command must answer a signal at once
    atomic_write(Path(path), render_scan_sarif(failure).encode())


def error_message(exc: BaseException) -> str:
    """The one line that says why a run failed."""
    if isinstance(exc, LredError):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}: {exc.filename}" if getattr(exc, "filename", None) else str(exc)
    return f"internal error ({type(exc).__name__}: {exc}); rerun with --debug and report it"


def fail(exc: BaseException, outputs: Outputs | str | Path | None, debug: bool) -> None:
    """The end of every failed run: one line on stderr, exit status 2, and the error's reports
    where ``outputs`` asks for them (a path: the JSON report's, ``-`` for stdout): the error JSON
    report and the SARIF log with a "no verdict" result in the report files (or no file at all,
    when one cannot be written: never an older one), and on stdout when its format is json or sarif."""
    if not isinstance(outputs, Outputs):                    # a --json path (or None)
        outputs = Outputs(stdout="json" if str(outputs) == STDOUT else "text", json_path=report_file(outputs))
    message = error_message(exc)
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    click.echo(f"lred: error: {printable(message)}", err=True)
    click.echo("lred: no verdict: the estimates are inconclusive; this is not a clean verdict"
               if isinstance(exc, InconclusiveError) else
               "lred: the model was NOT scanned; this is not a clean verdict", err=True)
    failure = FailedScan(outputs.model, message, type(exc).__name__)
    for path, write in ((outputs.json_path, lambda p: write_error_report(p, message, failure.error_type)),
                        (outputs.sarif_path, lambda p: write_failure_sarif(p, failure))):
        if path is not None:
            try:
                write(path)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(path)
    if outputs.stdout == "json":
        click.echo(render_error_json(message, failure.error_type, EXIT_ERROR), nl=False)
    elif outputs.stdout == "sarif":
        from .sarif import render_scan_sarif
        click.echo(render_scan_sarif(failure), nl=False)
    sys.exit(EXIT_ERROR)
