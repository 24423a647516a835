"""Where a command's reports go: which format stdout carries, and which report files to write.

``--format text|json|sarif`` picks stdout's format (text, the summary for a person, by
default); ``--json FILE`` and ``--sarif FILE`` write report files, and ``-`` as FILE sends that
report to stdout instead, which then carries nothing else. Progress and errors always go to
stderr. Two different formats cannot both claim stdout (a usage error).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

from .files import atomic_write
from .report import Inspection, ScanReport
from .reporters import render_inspection_json, render_inspection_text, render_json, render_text

STDOUT = "-"
FORMATS = ("text", "json", "sarif")               # lred scan --format
INSPECT_FORMATS = ("text", "json")                # lred inspect --format


@dataclass(frozen=True)
class Outputs:
    """One command's outputs: stdout's format and the report files (never ``-``: that is stdout)."""

    stdout: str = "text"                          # one of FORMATS
    json_path: Path | None = None
    sarif_path: Path | None = None
    model: str | None = None                      # the model file, for a failure's SARIF result


def resolve_outputs(output_format: str | None, json_path: Path | None, sarif_path: Path | None = None,
                    model: str | None = None) -> Outputs:
    """The outputs the options ask for; click.UsageError when two formats claim stdout."""
    claims = {option: fmt for option, fmt in ((f"--format {output_format}", output_format),
                                              ("--json -", "json" if str(json_path) == STDOUT else None),
                                              ("--sarif -", "sarif" if str(sarif_path) == STDOUT else None))
              if fmt is not None}
    if len(set(claims.values())) > 1:
        raise click.UsageError(f"stdout carries one report: {' and '.join(claims)} both ask for it")
    return Outputs(stdout=next(iter(claims.values()), "text"), json_path=report_file(json_path),
                   sarif_path=report_file(sarif_path), model=model)


def outputs_from_args(args: list[str]) -> Outputs:
    """The outputs named among a command's raw arguments, read before click parses them (for
    the report a run writes when it starts, and for the report of a usage error): lenient,
    ``--json -`` wins stdout over ``--sarif -``, which wins over ``--format``."""
    json_value, sarif_value, format_value = (option_value(args, name) for name in ("--json", "--sarif", "--format"))
    stdout = ("json" if json_value == STDOUT else "sarif" if sarif_value == STDOUT
              else format_value if format_value in FORMATS else "text")
    return Outputs(stdout=stdout, json_path=report_file(json_value), sarif_path=report_file(sarif_value))


def option_value(args: list[str], name: str) -> str | None:
    """The value of option ``name`` among raw arguments (``NAME V`` or ``NAME=V``), if any."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg[len(name) + 1:]
    return None


def report_file(value: str | Path | None) -> Path | None:
    """A report option's file: None when the option is absent or ``-`` (stdout)."""
    return None if value is None or str(value) == STDOUT else Path(value)


def write_scan_reports(report: ScanReport, outputs: Outputs) -> None:
    """Write the report files ``outputs`` names (atomically)."""
    from .sarif import render_scan_sarif  # (not at import: ``entry`` imports this module first thing)
    if outputs.json_path is not None:
        atomic_write(outputs.json_path, render_json(report).encode())
    if outputs.sarif_path is not None:
        atomic_write(outputs.sarif_path, render_scan_sarif(report).encode())


def scan_stdout(report: ScanReport, outputs: Outputs) -> str:
    """What ``lred scan`` prints on stdout: the report in the format ``outputs`` asks for."""
    from .sarif import render_scan_sarif
    return {"text": render_text, "json": render_json, "sarif": render_scan_sarif}[outputs.stdout](report)


def inspect_stdout(report: Inspection, outputs: Outputs) -> str:
    """What ``lred inspect`` prints on stdout: text or JSON."""
    return render_inspection_json(report) if outputs.stdout == "json" else render_inspection_text(report)
