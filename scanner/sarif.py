"""SARIF 2.1.0 (OASIS): what lred finds, for CI systems and code-scanning dashboards.

One log, one run of the tool ``lred``, one result per model, in the order given:

==========================  =================  ==========================================
per-model outcome           rule               result
==========================  =================  ==========================================
backdoor detected           LRED001 backdoor   level "error"; target and source classes
no backdoor detected        LRED001 backdoor   kind "pass", level "none" (the check passed)
not scanned / inconclusive  LRED002 no-verdict level "note"; the one-line reason
==========================  =================  ==========================================

A clean model is a result too (kind "pass"), so that the log lists every model the run covered;
consumers that show only failures leave it out. Each result points at its model file
(``locations[0].physicalLocation.artifactLocation``: the path as a relative URI reference, or a
``file:`` URI when absolute) and at its entry in ``run.artifacts``, which carries the model's
sha256 (``hashes["sha-256"]``) when it is known; ``result.properties`` repeat the verdict, the
classes, the p-values, the sha256 and (for a scan report) its warnings for programs.

``render_sarif(items)`` takes any number of per-model outcomes (a batch); ``render_scan_sarif`` is
the one-scan adapter the ``scan`` command uses.
"""
from __future__ import annotations

import json
import math
import urllib.parse
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePath
from typing import Any

from . import __version__
from .report import FailedScan, ScanReport
from .reporters import _format_p
from .summary import BatchRow

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA_URI = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
# The method's description (the project has no web page of its own yet): the L-RED paper.
INFORMATION_URI = "https://arxiv.org/abs/2010.09987"
RULE_BACKDOOR = "LRED001"
RULE_NO_VERDICT = "LRED002"

ModelOutcome = ScanReport | FailedScan

RULES: tuple[dict[str, Any], ...] = (
    {"id": RULE_BACKDOOR, "name": "ImperceptibleBackdoor",
     "shortDescription": {"text": "The classifier carries an imperceptible additive backdoor."},
     "fullDescription": {"text": "L-RED estimated, for every putative target class, the smallest additive "
                                 "pattern that sends clean images of the other classes to it; one class needs "
                                 "an abnormally small one (order-statistic p-value below alpha), as a planted "
                                 "backdoor's target does."},
     "help": {"text": "Do not deploy the model. Its report names the target and source classes and the "
                      "estimated pattern; retrain from trusted data, or ask the vendor how the model was trained."},
     "helpUri": INFORMATION_URI,
     "defaultConfiguration": {"level": "error"},
     "properties": {"tags": ["security", "backdoor", "machine-learning"]}},
    {"id": RULE_NO_VERDICT, "name": "NoVerdict",
     "shortDescription": {"text": "The model could not be scanned, or the scan was inconclusive."},
     "fullDescription": {"text": "No verdict: the model or the clean data could not be used, the conversion "
                                 "was not faithful, the scan ran out of time or memory, or the estimates "
                                 "cannot carry a verdict. This is not a clean verdict."},
     "help": {"text": "Read the reason in the message, fix the model file, the clean data or the options, "
                      "and scan again (lred inspect MODEL shows whether the model converts faithfully)."},
     "helpUri": INFORMATION_URI,
     "defaultConfiguration": {"level": "note"},
     "properties": {"tags": ["security", "backdoor", "machine-learning"]}},
)


def batch_outcomes(rows: Iterable[BatchRow]) -> list[ModelOutcome | BatchRow]:
    """The rows of a batch summary (``scanner.summary``) as SARIF items: a row without a verdict
    becomes the FailedScan it records; the others are rendered from the row itself."""
    return [FailedScan(row.model, row.error or "no verdict", row.error_type or "LredError", row.model_sha256)
            if row.verdict not in ("backdoor", "clean") else row for row in rows]


def render_sarif(items: Iterable[ModelOutcome | BatchRow]) -> str:
    """The SARIF 2.1.0 log of ``items`` (ScanReport or FailedScan, one result each), as JSON text."""
    return json.dumps(sarif_log(items), indent=2, allow_nan=False) + "\n"


def render_scan_sarif(item: ModelOutcome) -> str:
    """The SARIF log of one scan: its report, or why it has none."""
    return render_sarif([item])


def sarif_log(items: Iterable[ModelOutcome | BatchRow]) -> dict[str, Any]:
    """The SARIF log as a JSON-ready dict (see the module docstring for the mapping)."""
    artifacts: list[dict[str, Any]] = []
    index_of: dict[tuple[str, str | None], int] = {}
    results = []
    for item in items:
        path, sha256 = _model_of(item)
        index = None
        if path is not None:
            key = (path, sha256)
            if key not in index_of:
                index_of[key] = len(artifacts)
                artifacts.append(_artifact(path, sha256))
            index = index_of[key]
        results.append(_result(item, path, index))
    run: dict[str, Any] = {
        "tool": {"driver": {"name": "lred", "version": __version__, "semanticVersion": __version__,
                            "informationUri": INFORMATION_URI, "rules": [dict(rule) for rule in RULES]}},
        "artifacts": artifacts,
        "results": results,
    }
    return {"$schema": SARIF_SCHEMA_URI, "version": SARIF_VERSION, "runs": [run]}


def artifact_uri(path: str) -> str:
    """``path`` as a SARIF artifact URI: a ``file:`` URI when absolute, else a relative URI reference."""
    if Path(path).is_absolute():
        return Path(path).as_uri()
    return urllib.parse.quote(PurePath(path).as_posix())


def _model_of(item: ModelOutcome | BatchRow) -> tuple[str | None, str | None]:
    if isinstance(item, ScanReport):
        return item.model.path, item.model.sha256
    if isinstance(item, BatchRow):
        return item.model, item.model_sha256
    return item.model, item.sha256


def _artifact(path: str, sha256: str | None) -> dict[str, Any]:
    artifact: dict[str, Any] = {"location": {"uri": artifact_uri(path)}, "roles": ["analysisTarget"]}
    if sha256:
        artifact["hashes"] = {"sha-256": sha256}
    return artifact


def _result(item: ModelOutcome | BatchRow, path: str | None, index: int | None) -> dict[str, Any]:
    if isinstance(item, ScanReport):
        result = _report_result(item)
    elif isinstance(item, BatchRow):
        result = _row_result(item)
    else:
        result = _failure_result(item)
    if path is not None and index is not None:
        result["locations"] = [{"physicalLocation": {"artifactLocation": {"uri": artifact_uri(path),
                                                                          "index": index}}}]
    return result


def _report_result(report: ScanReport) -> dict[str, Any]:
    return _verdict_result(
        report.model.path, report.backdoor_found, report.target_class, report.source_classes,
        report.log10_p_value, report.p_value_basis, report.alpha,
        f"; most suspicious class {report.most_suspicious_class}",
        {"verdict": report.verdict, "method": report.method, "target_class": report.target_class,
         "source_classes": list(report.source_classes), "most_suspicious_class": report.most_suspicious_class,
         "p_value": _finite(report.p_value), "log10_p_value": _finite(report.log10_p_value),
         "p_value_basis": report.p_value_basis, "alpha": report.alpha, "model_sha256": report.model.sha256,
         "data_sha256": report.audit.data_sha256 if report.audit is not None else None,
         "warnings": list(report.warnings)})


def _row_result(row: BatchRow) -> dict[str, Any]:
    """A batch row with a verdict: as ``_report_result``, from the figures the summary keeps."""
    return _verdict_result(
        row.model, row.verdict == "backdoor", row.target_class, row.source_classes,
        row.log10_p_value if row.log10_p_value is not None else math.nan, row.p_value_basis, row.alpha, "",
        {"verdict": row.verdict, "target_class": row.target_class, "source_classes": list(row.source_classes),
         "p_value": row.p_value, "log10_p_value": row.log10_p_value, "p_value_basis": row.p_value_basis,
         "alpha": row.alpha, "model_sha256": row.model_sha256, "data_sha256": row.data_sha256})


def _verdict_result(model: str, backdoor: bool, target: int | None, sources: Sequence[int], log10_p: float,
                    basis: str | None, alpha: float | None, clean_detail: str,
                    properties: dict[str, Any]) -> dict[str, Any]:
    """The result of a model with a verdict: level "error" naming target and sources for a
    backdoor, kind "pass" for a clean model; ``clean_detail`` ends a clean model's message."""
    evidence = f"p-value {_format_p(log10_p)} ({basis}; alpha {alpha:g})"
    if backdoor:
        text = (f"Backdoor detected in {model}: target class {target}, "
                f"source class(es) {_classes(sources) or 'none identified'}; {evidence}.")
        result: dict[str, Any] = {"ruleId": RULE_BACKDOOR, "ruleIndex": 0, "level": "error"}
    else:
        text = f"No backdoor detected in {model}: {evidence}{clean_detail}."
        result = {"ruleId": RULE_BACKDOOR, "ruleIndex": 0, "kind": "pass", "level": "none"}
    result["message"] = {"text": text}
    result["properties"] = properties
    return result


def _failure_result(failure: FailedScan) -> dict[str, Any]:
    what = "the estimates are inconclusive" if failure.inconclusive else "the model was NOT scanned"
    where = f" for {failure.model}" if failure.model is not None else ""
    text = f"No verdict{where}: {what} ({failure.error}). This is not a clean verdict."
    return {"ruleId": RULE_NO_VERDICT, "ruleIndex": 1, "level": "note", "message": {"text": text},
            "properties": {"verdict": "error", "error": failure.error, "error_type": failure.error_type,
                           "model_sha256": failure.sha256}}


def _classes(classes: Sequence[int]) -> str:
    return ", ".join(str(c) for c in classes)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
