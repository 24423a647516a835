"""--html and --class-names: the report a person reads (scanner/html_report.py), its structure and its
failure modes. tests/test_html_browser.py opens the same report in a real browser."""
from __future__ import annotations

import base64
import io
import json
import math
import re

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from scanner import html_report
from scanner.class_names import class_label, parse_class_names
from scanner.cli import main
from scanner.detection import calibrate_log_p_value, order_statistic_log_p_value
from scanner.errors import ConfigError
from scanner.pipeline import scan
from tests.conftest import FAST_OPTIONS
from tests.html_fixtures import FASHION_MNIST
from tests.schemas import validate_scan_report


@pytest.mark.slow
def test_backdoored_sample_report_names_the_verdict_target_sources_and_both_p_values(backdoored_html_scan):
    scan_, report = backdoored_html_scan, backdoored_html_scan.report
    assert scan_.result.exit_code == 1, scan_.result.output
    assert report["verdict"] == "backdoor" and report["target_class"] == 2
    assert "BACKDOOR DETECTED" in scan_.html
    assert '<strong id="target">2 (Pullover)</strong>' in scan_.html
    assert "0 (T-shirt/top)" in scan_.html
    assert f"p-value {html_report.power(html_report.format_p(report['log10_p_value']))} (calibrated, decides)" \
        in scan_.html
    assert f"paper p-value {html_report.power(html_report.format_p(report['paper_log10_p_value']))}" in scan_.html
    assert "paper p-value 10<sup>-" in scan_.html              # far below alpha: set as a power of ten
    assert "alpha 0.05" in scan_.html
    assert f"shape {report['null_gamma_shape']:.4g}, scale {report['null_gamma_scale']:.4g}" in scan_.html
    assert report["model"]["sha256"] in scan_.html and report["audit"]["data_sha256"] in scan_.html


@pytest.mark.slow
def test_class_names_reach_the_json_report_and_the_text_summary(backdoored_html_scan):
    report = validate_scan_report(backdoored_html_scan.report)
    assert report["schema_version"] == 5
    assert report["class_names"] == FASHION_MNIST
    first = backdoored_html_scan.result.output.splitlines()[0]
    assert first.startswith("BACKDOOR DETECTED  target class 2 (Pullover), source class(es) 0 (T-shirt/top)")


@pytest.mark.slow
def test_report_is_self_contained_with_every_image_an_embedded_png(backdoored_html_scan):
    html = backdoored_html_scan.html
    sources = re.findall(r'\b(?:src|href)="([^"]*)"', html)
    images = re.findall(r'<img\b[^>]*\bsrc="([^"]*)"', html)
    # the plot, the source weights, 10 patterns, 2 images per top source (3 sources)
    assert len(images) == 1 + 1 + 10 + 2 * 2 * 3
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    for uri in images:
        Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).verify()
    assert not re.search(r"https?:|<script|<link|@import|url\(|<iframe|<object", html, re.IGNORECASE)


def test_a_hostile_class_name_is_escaped_not_interpreted(backdoored_case, tmp_path):
    model, data = backdoored_case
    hostile = '<script>alert(1)</script>'
    names = tmp_path / "names.json"
    names.write_text(json.dumps(["a", "b", hostile, "d", "e", "<img src=x onerror=alert(2)>"]))
    result = CliRunner().invoke(main, ["scan", str(model), "--data", str(data), *FAST_OPTIONS,
                                       "--class-names", str(names), "--html", str(tmp_path / "r.html")])
    assert result.exit_code == 1, result.output
    html = (tmp_path / "r.html").read_text()
    assert hostile not in html and "<img src=x" not in html
    assert '<strong id="target">2 (&lt;script&gt;alert(1)&lt;/script&gt;)</strong>' in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in html


@pytest.mark.slow
def test_examples_carry_onnxruntime_labels_of_the_patched_source_images(backdoored_html_scan):
    flipped = re.findall(r'\+ v → <span class="flipped">2 \(Pullover\)</span>', backdoored_html_scan.html)
    assert len(flipped) >= 3        # the backdoor's pattern flips images of its sources to the target


def test_thresholds_are_where_each_p_value_reaches_alpha(backdoored_case):
    outcome = scan(*backdoored_case, _fast_config())
    report = outcome.report
    k, shape, scale = len(report.classes), report.null_gamma_shape, report.null_gamma_scale
    found = dict(html_report.thresholds(report))
    paper, calibrated = found["paper"], found["calibrated"]
    assert order_statistic_log_p_value(paper, shape, scale, k) == pytest.approx(math.log(report.alpha), rel=1e-6)
    for r, below_alpha in ((calibrated * 1.001, True), (calibrated * 0.999, False)):
        calibrated_log_p = calibrate_log_p_value(order_statistic_log_p_value(r, shape, scale, k), shape, k)
        assert (calibrated_log_p < math.log(report.alpha)) is below_alpha


def test_the_renderer_is_a_pure_function_of_the_outcome(backdoored_case):
    outcome = scan(*backdoored_case, _fast_config(), class_names=[f"c{i}" for i in range(6)])
    first = html_report.render_html(outcome)
    assert first == html_report.render_html(outcome)
    assert [e.patched_label for e in outcome.examples].count(report_target := outcome.report.target_class) >= 1
    assert f'<strong id="target">{report_target} (c{report_target})</strong>' in first


def test_a_clean_model_gets_the_clean_banner(clean_case, tmp_path):
    model, data = clean_case
    result = CliRunner().invoke(main, ["scan", str(model), "--data", str(data), *FAST_OPTIONS,
                                       "--html", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "r.html").read_text()
    assert "No backdoor detected" in html and "BACKDOOR DETECTED" not in html


def test_a_failed_html_report_keeps_the_verdict_but_exits_2(backdoored_case, tmp_path, monkeypatch):
    def broken(outcome):
        raise RuntimeError("renderer broke")
    monkeypatch.setattr(html_report, "render_html", broken)
    model, data = backdoored_case
    stale = tmp_path / "r.html"
    stale.write_text("an older report")
    result = CliRunner().invoke(main, ["scan", str(model), "--data", str(data), *FAST_OPTIONS, "--html", str(stale),
                                       "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 2
    assert result.stdout.startswith("BACKDOOR DETECTED")
    assert "the HTML report could not be written (RuntimeError: renderer broke)" in result.stderr
    assert not stale.exists()
    assert json.loads((tmp_path / "r.json").read_text())["verdict"] == "backdoor"


def test_a_scan_that_fails_leaves_no_older_html_report(tmp_path):
    stale = tmp_path / "r.html"
    stale.write_text("an older report")
    result = CliRunner().invoke(main, ["scan", str(tmp_path / "missing.onnx"), "--data", str(tmp_path),
                                       "--html", str(stale)])
    assert result.exit_code == 2 and not stale.exists()


def test_class_names_of_the_wrong_length_stop_the_scan_with_one_line(backdoored_case, tmp_path):
    model, data = backdoored_case
    result = CliRunner().invoke(main, ["scan", str(model), "--data", str(data), *FAST_OPTIONS,
                                       "--class-names", "a,b,c", "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == ("lred: error: --class-names gives 3 names, but the model has 6 "
                                             "classes")
    assert json.loads((tmp_path / "r.json").read_text())["error_type"] == "ConfigError"


@pytest.mark.parametrize("content, message", [
    ("[\"a\", 2]", "expected a JSON list of strings"),
    ("[\"a\", ", "not a valid JSON list"),
    ("a\n\nc\n", "the name of class 1 is empty"),
    ("a\nb\na\n", "classes 0 and 2 have the same name 'a'"),
])
def test_a_bad_class_names_file_is_a_one_line_error_with_exit_2(tmp_path, content, message):
    names = tmp_path / "names.txt"
    names.write_text(content)
    result = CliRunner().invoke(main, ["scan", str(tmp_path / "m.onnx"), "--data", str(tmp_path),
                                       "--class-names", str(names)])
    assert result.exit_code == 2
    assert message in result.stderr.splitlines()[0]


def test_class_names_come_from_lines_a_json_list_or_a_comma_list(tmp_path):
    lines, listed = tmp_path / "lines.txt", tmp_path / "list.json"
    lines.write_bytes("\ufeffcat\r\ndog \nbird\n\n".encode())
    listed.write_text(json.dumps(["cat", "dog", "bird"]))
    assert parse_class_names(str(lines)) == parse_class_names(str(listed)) == ("cat", "dog", "bird")
    assert parse_class_names("cat, dog,bird") == ("cat", "dog", "bird")
    with pytest.raises(ConfigError, match="no such file, and not a comma-separated list"):
        parse_class_names(str(tmp_path / "absent.txt"))
    assert class_label(1, ("cat", "dog")) == "1 (dog)" and class_label(1, ()) == "1"


def _fast_config():
    from scanner.config import ScanConfig
    return ScanConfig(images_per_class=4, delta=0.01)


def test_powers_of_ten_are_set_as_superscripts_after_escaping():
    assert html_report.power("10^-4.3") == "10<sup>-4.3</sup>"
    assert html_report.power("<b>10^2") == "&lt;b&gt;10<sup>2</sup>"


def test_pattern_tiles_put_zero_at_the_middle_of_the_colour_range():
    from scanner import plots
    v = np.zeros((4, 4, 3), np.float32)
    v[0, 0] = 0.5
    tile = np.asarray(Image.open(io.BytesIO(plots.pattern_tile(v, 0.5))))
    assert tuple(tile[-1, -1]) == (128, 128, 128) and tuple(tile[0, 0]) == (255, 255, 255)
