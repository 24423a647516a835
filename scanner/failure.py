"""How every failed run of the command line ends, in one light module (no torch, no onnxruntime).

``scanner.entry`` needs it before anything heavy is imported (a signal or a usage error can come
first), and ``scanner.cli`` at the end of each command. Reports are written atomically: complete
or absent, never half written.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import traceback
from pathlib import Path

import click

from .errors import EXIT_ERROR, InconclusiveError, LredError
from .reporters import printable, render_error_json


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that the file is either complete or absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_error_report(path: str | Path, message: str, error_type: str) -> None:
    """Write the report of a run that produced no verdict (atomically)."""
    atomic_write(Path(path), render_error_json(message, error_type, EXIT_ERROR).encode())


def error_message(exc: BaseException) -> str:
    """The one-line message of a run (or a batch's model) that ended in ``exc``."""
    if isinstance(exc, LredError):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}: {exc.filename}" if getattr(exc, "filename", None) else str(exc)
    return f"internal error ({type(exc).__name__}: {exc}); rerun with --debug and report it"


def fail(exc: BaseException, json_path: str | Path | None, debug: bool) -> None:
    """The end of every failed run: one line on stderr, an error report at ``json_path`` (or no
    report at all, when it cannot be written: never an older one), exit status 2."""
    message = error_message(exc)
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    click.echo(f"lred: error: {printable(message)}", err=True)
    click.echo("lred: no verdict: the estimates are inconclusive; this is not a clean verdict"
               if isinstance(exc, InconclusiveError) else
               "lred: the model was NOT scanned; this is not a clean verdict", err=True)
    if json_path is not None and str(json_path) != "-":
        try:
            write_error_report(json_path, message, type(exc).__name__)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(json_path)
    sys.exit(EXIT_ERROR)


