"""The summary of a batch scan (``lred scan MODELS... --out DIR``): one row per model, rendered as
``summary.json`` (schema ``batch_summary``), ``summary.csv`` and ``index.html``.

Pure functions from rows to text, like ``reporters``; ``scanner.batch`` writes the files.
"""
from __future__ import annotations

import csv
import dataclasses
import importlib.resources
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import __version__
from .errors import EXIT_BACKDOOR, EXIT_CLEAN, EXIT_ERROR
from .reporters import printable

SUMMARY_SCHEMA_VERSION = 1          # scanner/schemas/batch_summary.schema.json
OUTCOMES = ("scanned", "reused", "failed")


@dataclass(frozen=True)
class BatchRow:
    """One model of a batch: where its report is, and what it says (or why there is none)."""

    model: str                          # the path as found (given, or below a given folder)
    name: str                           # the report's file stem in --out (batch.report_stem)
    report: str | None                  # "<name>.json", or None when nothing could be written
    html: str | None                    # "<name>.html" when the HTML report was written
    outcome: str                        # scanned | reused | failed
    verdict: str                        # backdoor | clean | error
    exit_status: int                    # 1 backdoor, 0 clean, 2 no verdict
    target_class: int | None = None
    target_name: str | None = None
    source_classes: tuple[int, ...] = ()
    source_names: tuple[str, ...] = ()
    p_value: float | None = None
    log10_p_value: float | None = None
    p_value_basis: str | None = None
    paper_log10_p_value: float | None = None
    calibrated_log10_p_value: float | None = None
    alpha: float | None = None
    seconds: float | None = None        # the scan's total_seconds (for a reused report: when it was made)
    model_sha256: str | None = None
    data_sha256: str | None = None
    config_digest: str | None = None
    error: str | None = None            # one line, when the model could not be scanned
    error_type: str | None = None


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def row_from_report(model: str, name: str, report: dict[str, Any], outcome: str, html: str | None,
                    class_names: Sequence[str] | None = None) -> BatchRow:
    """The row of a finished scan, from its JSON report (``reporters.report_to_dict``)."""
    names = class_names or report.get("class_names") or ()

    def named(c: int | None) -> str | None:
        return str(names[c]) if c is not None and 0 <= c < len(names) else None

    target = report.get("target_class")
    sources = tuple(int(s) for s in report.get("source_classes") or ())
    backdoor = report.get("verdict") == "backdoor"
    return BatchRow(
        model=model, name=name, report=f"{name}.json", html=html, outcome=outcome, verdict=str(report["verdict"]),
        exit_status=EXIT_BACKDOOR if backdoor else EXIT_CLEAN, target_class=target, target_name=named(target),
        source_classes=sources, source_names=tuple(named(s) or str(s) for s in sources) if names else (),
        p_value=_finite(report.get("p_value")), log10_p_value=_finite(report.get("log10_p_value")),
        p_value_basis=report.get("p_value_basis"), paper_log10_p_value=_finite(report.get("paper_log10_p_value")),
        calibrated_log10_p_value=_finite(report.get("calibrated_log10_p_value")), alpha=_finite(report.get("alpha")),
        seconds=_finite((report.get("timing") or {}).get("total_seconds")),
        model_sha256=(report.get("model") or {}).get("sha256"),
        data_sha256=(report.get("audit") or {}).get("data_sha256"), config_digest=report.get("config_digest"))


def row_from_error(model: str, name: str, report: str | None, message: str, error_type: str) -> BatchRow:
    """The row of a model that could not be scanned (exit status 2)."""
    return BatchRow(model=model, name=name, report=report, html=None, outcome="failed", verdict="error",
                    exit_status=EXIT_ERROR, error=message, error_type=error_type)


def worst_exit_status(rows: Sequence[BatchRow]) -> int:
    """2 if any model has no verdict, else 1 if any has a backdoor, else 0 (also for no rows)."""
    return max((row.exit_status for row in rows), default=EXIT_CLEAN)


def summary_to_dict(rows: Sequence[BatchRow], total: int, complete: bool, started_at: str,
                    updated_at: str) -> dict[str, Any]:
    """The batch summary as written to summary.json (its schema: ``reporters.schema('batch_summary')``)."""
    counts = {v: sum(r.verdict == v for r in rows) for v in ("backdoor", "clean", "error")}
    return {"schema_version": SUMMARY_SCHEMA_VERSION, "lred_version": __version__, "started_at": started_at,
            "updated_at": updated_at, "complete": complete, "models_total": total, "models_done": len(rows),
            "exit_status": worst_exit_status(rows), "counts": counts,
            "reused": sum(r.outcome == "reused" for r in rows),
            "models": [{k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(r).items()}
                       for r in rows]}


def render_summary_json(summary: dict[str, Any]) -> str:
    return json.dumps(summary, indent=2, allow_nan=False) + "\n"


CSV_COLUMNS = ("model", "verdict", "outcome", "target_class", "target_name", "source_classes", "p_value",
               "log10_p_value", "p_value_basis", "alpha", "seconds", "report", "html", "error")


def _cell(value: Any) -> str:
    """A CSV cell; text that a spreadsheet would run as a formula (=, +, -, @ first) is quoted with '."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ";".join(str(v) for v in value)
    text = str(value)
    if isinstance(value, str) and text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


def render_summary_csv(summary: dict[str, Any]) -> str:
    """One line per model; lists joined with ';'."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in summary["models"]:
        writer.writerow([_cell(row[c]) for c in CSV_COLUMNS])
    return buffer.getvalue()


def _p(log10_p: float | None) -> str:
    if log10_p is None:
        return ""
    return f"{10.0 ** log10_p:.4f}" if log10_p > -4 else f"10^{log10_p:.1f}"


def outcome_text(row: BatchRow) -> str:
    """One line for a finished model: its verdict and evidence, or why it has none."""
    if row.verdict == "error":
        return f"NOT scanned: {printable(row.error)}"
    head = "BACKDOOR" if row.verdict == "backdoor" else "clean"
    if row.verdict == "backdoor":
        head += f" (target {row.target_class}, sources {', '.join(map(str, row.source_classes)) or 'none'})"
    p = "" if row.log10_p_value is None else f", p 10^{row.log10_p_value:.2f}"
    seconds = "" if row.seconds is None else f", {row.seconds:.1f} s"
    return head + p + seconds + (" (reused)" if row.outcome == "reused" else "")


def render_batch_text(rows: Sequence[BatchRow], out_dir: str) -> str:
    """What ``lred scan ... --out DIR`` prints on stdout: one line per model, then where the summary is."""
    lines = [f"{outcome_text(row)}  {printable(row.model)}" for row in rows]
    lines.append(f"summary: {printable(out_dir)}/index.html (and summary.json, summary.csv)")
    return "\n".join(lines) + "\n"


def render_index_html(summary: dict[str, Any]) -> str:
    """index.html: a self-contained page (no script, no outside resource), every value escaped."""
    import jinja2

    text = importlib.resources.files("scanner").joinpath("templates").joinpath("batch_index.html.j2").read_text("utf-8")
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    environment.filters["p"] = _p
    return environment.from_string(text).render(summary=summary, rows=summary["models"])
