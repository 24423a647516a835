"""Where ``lred scan --html FILE`` meets the file system (light: matplotlib and jinja2 load only to render).

The HTML report is written after the verdict is printed and the JSON report is written. If it
cannot be rendered or written, the scan does not end as if all went well, nor crash with a
traceback: one line on stderr says why, no file (never an older one) is left at the path, and
the command exits 2 (a report that was asked for is missing). The verdict printed above and
the JSON report stand.
"""
from __future__ import annotations

import contextlib
import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .failure import atomic_write
from .reporters import printable

if TYPE_CHECKING:
    from .pipeline import ScanOutcome


def discard_stale(path: Path | None) -> None:
    """Remove an HTML report left at ``path`` by an earlier run (this run has none to put there)."""
    if path is not None:
        with contextlib.suppress(OSError):
            os.unlink(path)


def save_html(path: Path, outcome: ScanOutcome, debug: bool = False) -> bool:
    """Render and write the HTML report of ``outcome`` to ``path`` (atomically); False, with one line on
    stderr and no file at ``path``, when that fails."""
    try:
        from .html_report import render_html
        atomic_write(path, render_html(outcome).encode("utf-8"))
        return True
    except Exception as exc:   # any failure to render or write: reported, never silent
        if debug:
            traceback.print_exception(exc, file=sys.stderr)
        reason = f"{exc.strerror}: {exc.filename}" if isinstance(exc, OSError) and exc.filename else (
            f"{type(exc).__name__}: {exc}")
        click.echo(f"lred: error: the HTML report could not be written ({printable(reason)}); "
                   "the verdict above stands, the report is missing", err=True)
        discard_stale(path)
        return False
