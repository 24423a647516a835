"""Renderers of a ScanReport: pure functions from the report to text."""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from .report import ScanReport

JSON_SCHEMA_VERSION = 3   # 2: p_value_basis, paper_log10_p_value, calibrated_log10_p_value; 3: cuda_graphs


def report_to_dict(report: ScanReport) -> dict[str, Any]:
    """Plain JSON-ready dict (tuples become lists; non-finite floats become None)."""
    data = _plain(dataclasses.asdict(report))
    data["schema_version"] = JSON_SCHEMA_VERSION
    return data


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def render_json(report: ScanReport) -> str:
    return json.dumps(report_to_dict(report), indent=2, allow_nan=False) + "\n"


def _format_p(log10_p: float) -> str:
    if log10_p > -4:
        return f"{10.0 ** log10_p:.4f}"
    return f"10^{log10_p:.1f}"


def render_text(report: ScanReport) -> str:
    """A short summary for a person: verdict first, then the evidence."""
    lines = []
    if report.backdoor_found:
        sources = ", ".join(str(s) for s in report.source_classes) or "none identified"
        lines.append(f"BACKDOOR DETECTED  target class {report.target_class}, source class(es) {sources}")
    elif report.p_value_basis == "calibrated" and report.paper_log10_p_value < math.log10(report.alpha):
        lines.append(f"no backdoor detected  (borderline: the paper's p-value alone would flag class "
                     f"{report.most_suspicious_class}; see the warning)")
    else:
        lines.append("no backdoor detected")
    other, other_log10 = (("paper", report.paper_log10_p_value) if report.p_value_basis == "calibrated"
                          else ("calibrated", report.calibrated_log10_p_value))
    lines.append(f"  p-value {_format_p(report.log10_p_value)} ({report.p_value_basis}; alpha {report.alpha:g}; "
                 f"{other} {_format_p(other_log10)}); most suspicious class {report.most_suspicious_class}")
    lines.append(f"  model {report.model.path} (sha256 {report.model.sha256[:12]}..., "
                 f"{report.model.num_classes} classes, {report.model.score_kind})")
    lines.append(f"  {sum(report.data.images_per_class)} clean images "
                 f"({min(report.data.images_per_class)}-{max(report.data.images_per_class)} per class), "
                 f"device {report.device}{_graphs_note(report.cuda_graphs)}, "
                 f"{report.timing.get('total_seconds', 0.0):.1f} s")
    lines.append("  class  ||v_t||    r_t      iters  Q_t torch  Q_t onnxruntime  status")
    for c in report.classes:
        mark = "*" if c.target_class == report.most_suspicious_class else " "
        lines.append(f" {mark}{c.target_class:5d}  {c.pattern_norm:8.4f}  {c.statistic:7.3f}  {c.iterations:6d}"
                     f"  {c.torch_fraction:9.3f}  {c.verified_fraction:15.3f}  {c.status}")
    for warning in report.warnings:
        lines.append(f"  warning: {warning}")
    return "\n".join(lines) + "\n"


def _graphs_note(cuda_graphs: str) -> str:
    return {"n/a": "", "on": " (CUDA graphs)", "off": " (CUDA graphs off)"}.get(
        cuda_graphs, f" (CUDA graphs {cuda_graphs})")
