"""``lred scan --html FILE``: one self-contained HTML page a person can read, print and defend.

``render_html(outcome)`` is a pure function of a ScanOutcome (its report, patterns and the
onnxruntime-labelled examples; class names come with the report): the verdict with both
p-values and alpha, the statistic r_t of every class against the fitted Gamma null with the
thresholds alpha sets (Sec. 3.2), every estimated pattern (signed, on one stated scale, as the
paper's Figs. 3 and 5), the suspected target's pattern on clean images of its top sources with
onnxruntime's labels, its source weights, the per-class verification, model facts, configuration,
versions, timing and the audit trail. Images are embedded as base64 PNG data URIs: the file needs
no network and no script. jinja2 renders it with autoescaping on: model metadata, file names and
class names are untrusted text.
"""
from __future__ import annotations

import base64
import math
import re
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import markupsafe
import numpy as np
from scipy import special

from . import plots
from .class_names import class_label
from .detection import null_log_p_values
from .reporters import printable

if TYPE_CHECKING:
    from .pipeline import ScanOutcome
    from .report import ScanReport

MAX_PATTERNS = 100          # more classes than this: the patterns with the largest r_t are shown


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(loader=jinja2.PackageLoader("scanner", "templates"), autoescape=True,
                                     undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    environment.filters["printable"] = printable
    environment.filters["power"] = power
    return environment


def power(text: str) -> markupsafe.Markup:
    """``text`` escaped, with each power of ten written 10^x set as 10<sup>x</sup>."""
    return markupsafe.Markup(re.sub(r"10\^(-?[0-9.]+)", r"10<sup>\1</sup>", str(markupsafe.escape(text))))


def data_uri(png: bytes) -> str:
    """``png`` as a data: URI (base64), for an <img> that needs no file and no network."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def format_p(log10_p: float) -> str:
    """A p-value from its log10: plain above 1e-4, else 10^x."""
    if not math.isfinite(log10_p):
        return "0 (underflow)" if log10_p < 0 else "1"
    return f"{10.0 ** log10_p:.4f}" if log10_p > -4 else f"10^{log10_p:.1f}"


def thresholds(report: ScanReport) -> list[tuple[str, float]]:
    """(p-value basis, r) where r_max's p-value equals alpha, for the paper's and the calibrated p-value:
    the largest r_t is flagged beyond r. Paper: 1 - G(r)^K = alpha; calibrated: the paper's p-value at
    the alpha-quantile of its Monte Carlo null (``detection.null_log_p_values``); inf when unreachable."""
    k, shape, scale, alpha = len(report.classes), report.null_gamma_shape, report.null_gamma_scale, report.alpha

    def r_at(log_p: float) -> float:
        """r with 1 - G(r)^K = exp(log_p): G's survival there is 1 - (1 - p)^(1/K)."""
        survival = -math.expm1(math.log1p(-math.exp(log_p)) / k) if log_p < 0 else 1.0
        return float(special.gammainccinv(shape, survival) * scale) if survival > 0 else math.inf

    null = np.sort(null_log_p_values(shape, k))
    most = math.ceil(alpha * (null.size + 1) - 1) - 1      # calibrated p < alpha: at most this many at or below
    calibrated = r_at(float(null[most])) if 0 <= most < null.size and np.isfinite(null[most]) else math.inf
    found = [("paper", r_at(math.log(alpha))), ("calibrated", calibrated)]
    return sorted(found, key=lambda pair: pair[0] != report.p_value_basis)   # the deciding one first


def _patterns(outcome: ScanOutcome, labels: Sequence[str]) -> tuple[list[dict[str, Any]], str]:
    """Pattern tiles (at most MAX_PATTERNS, those with the largest r_t when cut), and a note when cut.
    Each pattern is amplified to its own largest |v| (stated in its caption), as in the paper's figures."""
    report = outcome.report
    statistic: dict[int | tuple[int, int], float] = {c.target_class: c.statistic for c in report.classes}
    statistic.update({(p.source_class, p.target_class): p.statistic for p in report.pairs})
    keys = sorted(outcome.patterns, key=lambda key: (isinstance(key, tuple), key))
    note = ""
    if len(keys) > MAX_PATTERNS:
        keys = sorted(sorted(keys, key=lambda key: -statistic.get(key, 0.0))[:MAX_PATTERNS],
                      key=lambda key: (isinstance(key, tuple), key))
        note = f"the {MAX_PATTERNS} patterns with the largest r_t of {len(outcome.patterns)}"
    tiles = []
    for key in keys:
        v = outcome.patterns[key]
        name = f"class {labels[key]}" if isinstance(key, int) else f"pair {labels[key[0]]} → {labels[key[1]]}"
        suspect = key == report.most_suspicious_class or (isinstance(key, tuple) and key[1] ==
                                                           report.most_suspicious_class)
        largest = float(np.abs(v).max())
        tiles.append({"name": name, "image": data_uri(plots.pattern_tile(v, largest)), "suspect": suspect,
                      "norm": float(np.linalg.norm(v)), "largest": largest,
                      "gain": 1.0 / largest if largest > 0 else 1.0, "statistic": statistic.get(key, math.nan)})
    return tiles, note


def _masks(outcome: ScanOutcome, labels: Sequence[str]) -> list[dict[str, Any]]:
    """Patch scans (eq. (13)): each class's mask m_t (white = 1) and masked pattern m_t * u_t, as
    estimated; the most suspicious class of the patch test is framed."""
    report = outcome.report
    patch_test = next((t for t in report.tests if t.trigger == "patch"), None)
    suspect = patch_test.most_suspicious_class if patch_test is not None else report.most_suspicious_class
    norms = {c.target_class: c.pattern_norm for c in (report.patch_classes or report.classes)}
    return [{"name": f"class {labels[t]}", "suspect": t == suspect, "l1": norms.get(t, math.nan),
             "mask": data_uri(plots.image_tile(np.asarray(outcome.masks[t])[..., None])),
             "masked": data_uri(plots.image_tile(outcome.masked_patterns[t]))}
            for t in sorted(outcome.masks) if t in outcome.masked_patterns]


def _examples(outcome: ScanOutcome, labels: Sequence[str]) -> list[dict[str, Any]]:
    target = outcome.report.most_suspicious_class
    return [{"source": labels[e.source_class], "original": data_uri(plots.image_tile(e.original)),
             "patched": data_uri(plots.image_tile(e.patched)), "original_label": labels[e.original_label],
             "patched_label": labels[e.patched_label], "flipped": e.patched_label == target}
            for e in outcome.examples]


def context(outcome: ScanOutcome) -> dict[str, Any]:
    """Everything the template shows, computed from ``outcome`` alone."""
    report = outcome.report
    k = report.model.num_classes
    labels = [class_label(c, report.class_names) for c in range(k)]
    suspect = report.most_suspicious_class
    lines = thresholds(report)
    tiles, note = _patterns(outcome, labels)
    channels = next(iter(outcome.patterns.values())).shape[-1] if outcome.patterns else 1
    weights = report.classes[suspect].source_weights
    other_basis = "paper" if report.p_value_basis == "calibrated" else "calibrated"
    return {
        "report": report, "labels": labels, "suspect": suspect, "suspect_label": labels[suspect],
        "target_label": labels[report.target_class] if report.target_class is not None else None,
        "source_labels": [labels[s] for s in report.source_classes],
        "p_value": format_p(report.log10_p_value), "other_basis": other_basis,
        "other_p_value": format_p(report.paper_log10_p_value if other_basis == "paper"
                                  else report.calibrated_log10_p_value),
        "paper_p_value": format_p(report.paper_log10_p_value),
        "calibrated_p_value": format_p(report.calibrated_log10_p_value),
        "thresholds": lines,
        "statistic_plot": data_uri(plots.statistic_plot([c.statistic for c in report.classes],
                                                        report.null_gamma_shape, report.null_gamma_scale,
                                                        lines, suspect, labels)),
        "patterns": tiles, "patterns_note": note, "channels": channels,
        "examples": _examples(outcome, labels), "masks": _masks(outcome, labels),
        "weights_plot": data_uri(plots.source_weights_plot(weights, suspect, labels)) if k > 1 else None,
        "config": sorted(report.config.items()), "versions": sorted(report.versions.items()),
        "timing": sorted(report.timing.items()),
        "audit": asdict(report.audit) if report.audit is not None else None,
    }


def render_html(outcome: ScanOutcome) -> str:
    """The HTML report of one scan (module docstring): a pure function of ``outcome``."""
    return _environment().get_template("report.html.j2").render(context(outcome))


def write_html_report(outcome: ScanOutcome, path: Path) -> None:
    """Write the HTML report of ``outcome`` to ``path`` atomically (the batch's per-model writer)."""
    from .failure import atomic_write
    atomic_write(Path(path), render_html(outcome).encode("utf-8"))
