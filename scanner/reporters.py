"""Every renderer of what lred finds: pure functions from a frozen report to a string.

``render_text`` / ``render_json`` render a ScanReport (``lred scan``), ``render_inspection_text`` /
``render_inspection_json`` an Inspection (``lred inspect``), ``render_error_json`` the report of a
command that could not run (verdict "error"). A new format (HTML, SARIF) is one more function here.
"""
from __future__ import annotations

import dataclasses
import importlib.resources
import json
import math
from typing import Any

from .class_names import class_label
from .report import ClassReport, Inspection, ScanReport

# The version of each JSON report, checked by its JSON Schema (scanner/schemas/, ``schema(name)``).
# Scan (and error) report: 2: p_value_basis, paper_log10_p_value, calibrated_log10_p_value;
# 3: cuda_graphs; 4: audit (and the error report's schema_version follows it); 5: class_names,
# config_digest; trigger, tests, patch_classes, saved_arrays and per class mask_l1, anomaly_index (patch
# triggers, methods lred-patch, nc); image_passes, forward_images, scalable.
JSON_SCHEMA_VERSION = 5
# Inspect report: 1: the first versioned one; 2: input_scale, mean, std, clean_accuracy, clean_images,
# clean_problem.
INSPECT_SCHEMA_VERSION = 2
SCHEMAS = ("scan_report", "inspect_report", "error_report", "batch_summary")   # batch_summary: scanner/summary.py


def schema(name: str) -> dict[str, Any]:
    """The shipped JSON Schema (draft 2020-12) of report ``name``: one of ``SCHEMAS``."""
    if name not in SCHEMAS:
        raise ValueError(f"no schema {name!r}; the schemas are {', '.join(SCHEMAS)}")
    text = importlib.resources.files("scanner").joinpath("schemas").joinpath(f"{name}.schema.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


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


def printable(text: object) -> str:
    """``text`` with every character a terminal would act on (control and format characters: ESC,
    newline, carriage return, bidirectional overrides, ...) written as an escape. Model files and
    folder names come from third parties: an input name must not print a fake "no backdoor
    detected" line, hide the next one, or recolour the terminal."""
    return "".join(c if c.isprintable() or c == " " else c.encode("unicode_escape").decode("ascii")
                   for c in str(text))


def _format_p(log10_p: float) -> str:
    if log10_p > -4:
        return f"{10.0 ** log10_p:.4f}"
    return f"10^{log10_p:.1f}"


def render_text(report: ScanReport) -> str:
    """A short summary for a person: verdict first, then the evidence."""
    lines = []
    names = report.class_names
    name = lambda c: printable(class_label(c, names))  # noqa: E731
    if report.backdoor_found and report.target_class is not None:
        sources = ", ".join(name(s) for s in report.source_classes) or "none identified"
        lines.append(f"BACKDOOR DETECTED  target class {name(report.target_class)}, source class(es) {sources}")
    elif report.p_value_basis == "calibrated" and report.paper_log10_p_value < math.log10(report.alpha):
        lines.append(f"no backdoor detected  (borderline: the paper's p-value alone would flag class "
                     f"{name(report.most_suspicious_class)}; see the warning)")
    else:
        lines.append("no backdoor detected")
    other, other_log10 = (("paper", report.paper_log10_p_value) if report.p_value_basis == "calibrated"
                          else ("calibrated", report.calibrated_log10_p_value))
    if report.method == "nc":         # Neural Cleanse decides by its anomaly index: no p-value
        lines.append(f"  anomaly index {report.tests[0].anomaly_index:.2f} (Neural Cleanse: flagged when > 2, "
                     f"below the median); most suspicious class {name(report.most_suspicious_class)}")
    else:
        lines.append(f"  p-value {_format_p(report.log10_p_value)} ({report.p_value_basis}; alpha {report.alpha:g}; "
                     f"{other} {_format_p(other_log10)}); most suspicious class {name(report.most_suspicious_class)}")
    lines.append(f"  model {printable(report.model.path)} (sha256 {report.model.sha256[:12]}..., "
                 f"{report.model.num_classes} classes, {report.model.score_kind})")
    lines.append(f"  {sum(report.data.images_per_class)} clean images "
                 f"({min(report.data.images_per_class)}-{max(report.data.images_per_class)} per class), "
                 f"device {report.device}{_graphs_note(report.cuda_graphs)}, "
                 f"{report.timing.get('total_seconds', 0.0):.1f} s")
    lines.append(f"  {report.image_passes:,} image passes (forward+backward) in pattern estimation"
                 + ("" if report.scalable is None else
                    f"; scalable mode: {len(report.classes)} of {report.model.num_classes} targets estimated "
                    f"fully ({len(report.scalable.candidates)} screened candidates, "
                    f"{len(report.scalable.null_targets)} random null targets)"))
    lines.extend(_class_table(report.classes, report.most_suspicious_class,
                              "||m_t||_1" if report.trigger == "patch" else "||v_t||", names))
    lines.extend(_patch_lines(report))
    for warning in report.warnings:
        lines.append(f"  warning: {printable(warning)}")
    return "\n".join(lines) + "\n"


def _class_table(classes: tuple[ClassReport, ...], suspect: int, norm: str,
                 names: tuple[str, ...] = ()) -> list[str]:
    lines = [f"  class  {norm:9s}  r_t      iters  Q_t torch  Q_t onnxruntime  status" + ("     name" if names else "")]
    for c in classes:
        mark = "*" if c.target_class == suspect else " "
        label = f"  {printable(names[c.target_class])}" if c.target_class < len(names) else ""
        lines.append(f" {mark}{c.target_class:5d}  {c.pattern_norm:9.4f}  {c.statistic:7.3f}  {c.iterations:6d}"
                     f"  {c.torch_fraction:9.3f}  {c.verified_fraction:15.3f}  {c.status:9s}{label}".rstrip())
    return lines


def _patch_lines(report: ScanReport) -> list[str]:
    """The tests of a patch or --trigger both scan, and under both the lred-patch masks."""
    lines = []
    for test in report.tests if report.trigger == "both" or report.method != "nc" else ():
        found = (f"target {test.target_class}, sources {', '.join(map(str, test.source_classes)) or 'none'}"
                 if test.detected else f"nothing (most suspicious {test.most_suspicious_class})")
        level = (f"p {_format_p(test.log10_p_value)} at alpha {test.alpha:g}" if test.log10_p_value is not None
                 and test.alpha is not None else "anomaly index rule")
        lines.append(f"  test {test.method} ({test.trigger}, {test.statistic}): {found}; {level}; "
                     f"anomaly index {test.anomaly_index:.2f}{' (flagged)' if test.anomaly_flagged else ''}")
    if report.patch_classes:
        lines.append("  lred-patch masks:")
        suspect = report.tests[1].most_suspicious_class if len(report.tests) > 1 else -1
        lines.extend(_class_table(report.patch_classes, suspect, "||m_t||_1", report.class_names))
    return lines


def _graphs_note(cuda_graphs: str) -> str:
    return {"n/a": "", "on": " (CUDA graphs)", "off": " (CUDA graphs off)"}.get(
        cuda_graphs, f" (CUDA graphs {cuda_graphs})")


def render_inspection_text(report: Inspection) -> str:
    """The inspection for a person: interface, operators, graph passes, parity, verdict."""
    shape = lambda dims: "x".join("?" if d is None else str(d) for d in dims)  # noqa: E731
    lines = [f"{printable(report.path)}  (sha256 {report.sha256[:12]}...)",
             f"  producer     {printable(report.producer)}; IR {report.ir_version}; opsets "
             + ", ".join(f"{printable(k)} {v}" for k, v in report.opsets.items()),
             f"  input        {report.input_name!r} {shape(report.input_shape)} {report.input_dtype}, "
             f"layout {report.layout or 'unknown (pass --layout)'}"]
    for name, dims, kind in report.outputs:
        mark = "  <- class scores" if name == report.score_output else ""
        lines.append(f"  output       {name!r} {shape(dims)} {kind}{mark}")
    lines.append(f"  classes      {report.num_classes if report.num_classes is not None else 'unknown'}")
    lines.append("  operators    " + ", ".join(f"{printable(op)} {n}" for op, n in report.op_histogram))
    for step in report.conversion_passes:
        lines.append(f"  graph pass   {printable(step)}")
    if report.max_abs_difference is not None:
        lines.append(f"  parity       max |torch - onnxruntime| {report.max_abs_difference:.3g} (tolerance "
                     f"{report.tolerance:.3g}), argmax agreement {report.argmax_agreement:.3f} on "
                     f"{report.parity_inputs} inputs; input gradient {'ok' if report.input_gradient_ok else 'BAD'}")
    convention = (f"input_scale {report.input_scale:g}, mean {_numbers(report.mean)}, std {_numbers(report.std)}, "
                  f"layout {report.layout or 'unknown'}")
    if report.clean_accuracy is not None:
        low = ("; LOW: the input convention is probably wrong (--input-scale, --mean/--std, --layout)"
               if report.clean_accuracy < 0.5 else "")
        lines.append(f"  clean        accuracy {report.clean_accuracy:.3f} on {report.clean_images} images "
                     f"(onnxruntime; {convention}){low}")
        if report.clean_problem:
            lines.append(f"  clean        a scan on these images would stop: {printable(report.clean_problem)}")
    else:
        lines.append(f"  convention   {convention}; pass --data to check it on clean images")
    lines.append("  verdict      " + ("converts faithfully: ready to scan" if report.ok
                                       else f"NOT scannable: {printable(report.problem)}"))
    return "\n".join(lines) + "\n"


def _numbers(values: tuple[float, ...] | None) -> str:
    return "none" if values is None else ",".join(f"{v:g}" for v in values)


def render_inspection_json(report: Inspection) -> str:
    """Every field of the inspection, plus ``ok``."""
    data = dataclasses.asdict(report)
    data["ok"] = report.ok
    data["schema_version"] = INSPECT_SCHEMA_VERSION
    return json.dumps(data, indent=2, allow_nan=False, default=str) + "\n"


def render_error_json(message: str, error_type: str, exit_code: int) -> str:
    """The JSON report of a command that failed: verdict "error", the one-line message, the
    exception's type name and the exit status."""
    error = {"schema_version": JSON_SCHEMA_VERSION, "verdict": "error", "error": message,
             "error_type": error_type, "exit_code": exit_code}
    return json.dumps(error, indent=2) + "\n"
