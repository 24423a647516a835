"""The command line: verdicts, exit status, reports, and failing closed."""
import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from scanner.cli import main
from tests import synthetic
from tests.conftest import FAST_OPTIONS
from tests.schemas import validate_scan_report

REQUIRED_FIELDS = {"verdict", "p_value", "log10_p_value", "alpha", "target_class", "source_classes",
                   "classes", "model", "config", "timing", "versions"}
CLASS_FIELDS = {"pattern_norm", "statistic", "iterations", "torch_fraction", "verified_fraction",
                "source_weights"}


def _scan(*args):
    return CliRunner().invoke(main, ["scan", *map(str, args)], catch_exceptions=False)


def _scan_model(model, tmp_path, *extra):
    """Save ``model`` and 4 synthetic clean images per class of its 6 classes, scan them at
    FAST_OPTIONS plus ``extra``; returns (result, the JSON report)."""
    onnx.save(model, tmp_path / "m.onnx")
    x, y = synthetic.clean_images(6, 4)
    np.savez(tmp_path / "c.npz", x=x, y=y)
    report_path = tmp_path / "r.json"
    result = _scan(tmp_path / "m.onnx", "--data", tmp_path / "c.npz", *FAST_OPTIONS, "--json", report_path, *extra)
    return result, validate_scan_report(json.loads(report_path.read_text()))


def test_backdoored_model_is_detected_with_exit_1_and_full_json(backdoored_case, tmp_path):
    model, data = backdoored_case
    report_path, patterns = tmp_path / "out" / "report.json", tmp_path / "patterns"
    result = _scan(model, "--data", data, *FAST_OPTIONS, "--json", report_path, "--save-patterns", patterns)
    assert result.exit_code == 1, result.output
    assert "BACKDOOR DETECTED  target class 2" in result.output
    report = validate_scan_report(json.loads(report_path.read_text()))
    assert REQUIRED_FIELDS <= report.keys()
    assert report["verdict"] == "backdoor" and report["target_class"] == 2
    assert report["p_value"] < 0.05 and report["log10_p_value"] < np.log10(0.05)
    assert len(report["classes"]) == 6 and all(CLASS_FIELDS <= c.keys() for c in report["classes"])
    assert all(c["verified_fraction"] >= 0.9 for c in report["classes"])
    assert report["source_classes"] and 2 not in report["source_classes"]
    assert {"path", "sha256", "opset", "producer"} <= report["model"].keys()
    assert report["config"]["images_per_class"] == 4 and report["config"]["seed"] == 0
    # CUDA graphs replay the passes on a GPU only (scanner/cuda_graphs.py)
    assert report["cuda_graphs"] == ("on" if report["device"].startswith("cuda") else "n/a")
    assert {"lred", "torch", "onnx", "onnxruntime", "onnx2torch"} <= report["versions"].keys()
    assert report["timing"]["total_seconds"] > 0
    pattern = np.load(patterns / "pattern_class_2.npy")
    assert pattern.shape == (8, 8, 1)
    assert np.linalg.norm(pattern) == pytest.approx(report["classes"][2]["pattern_norm"], rel=1e-5)
    assert pattern[-1, -1, 0] == pattern.max()   # the planted pixel carries the estimated pattern


def test_clean_model_is_not_detected_with_exit_0(clean_case, tmp_path):
    model, data = clean_case
    report_path = tmp_path / "r.json"
    result = _scan(model, "--data", data, *FAST_OPTIONS, "--json", report_path)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("no backdoor detected")
    report = validate_scan_report(json.loads(report_path.read_text()))
    assert report["verdict"] == "clean" and report["target_class"] is None and report["source_classes"] == []
    assert report["p_value"] >= 0.05


def test_missing_model_exits_2(tmp_path, backdoored_case):
    _, data = backdoored_case
    result = CliRunner().invoke(main, ["scan", str(tmp_path / "none.onnx"), "--data", str(data), "-q"])
    assert result.exit_code == 2 and "not found" in result.output


def test_image_size_mismatch_exits_2_and_names_both_sizes(backdoored_case, tmp_path):
    model, _ = backdoored_case
    data = tmp_path / "small.npz"
    np.savez(data, x=np.zeros((6, 5, 5), np.uint8), y=np.arange(6))
    result = CliRunner().invoke(main, ["scan", str(model), "--data", str(data), "-q"])
    assert result.exit_code == 2
    assert "5x5" in result.output and "never resized" in result.output


def test_usage_error_exits_2(backdoored_case):
    model, _ = backdoored_case
    result = CliRunner().invoke(main, ["scan", str(model)])
    assert result.exit_code == 2


def test_invalid_parameter_exits_2(backdoored_case):
    model, data = backdoored_case
    result = CliRunner().invoke(main, ["scan", str(model), "--data", str(data), "--pi", "1.5", "-q"])
    assert result.exit_code == 2 and "pi must lie in (0, 1)" in result.output


def test_probability_output_and_nhwc_layout_are_handled(tmp_path):
    model = synthetic.linear_classifier(6, backdoor_target=2, softmax=True, layout="nhwc")
    result, report = _scan_model(model, tmp_path)
    assert report["model"]["score_kind"] == "probabilities" and report["model"]["layout"] == "nhwc"
    assert result.exit_code == 1 and report["target_class"] == 2


@pytest.mark.parametrize("method", ["ured", "pred"])
def test_baseline_methods_find_the_planted_backdoor(backdoored_case, tmp_path, method):
    model, data = backdoored_case
    report_path = tmp_path / "r.json"
    # The planted backdoor reaches class 2 from every class, so P-RED's 30 pair statistics hold
    # five small ones and its largest barely stands out: paper p = 0.031, calibrated 0.094
    # (the multi-source weakness of P-RED, Sec. 4.3). Checked here on the paper's p-value.
    basis = ["--p-value", "paper"] if method == "pred" else []
    result = _scan(model, "--data", data, *FAST_OPTIONS, "--method", method, "--json", report_path, *basis)
    report = validate_scan_report(json.loads(report_path.read_text()))
    assert result.exit_code == 1 and report["method"] == method and report["target_class"] == 2
    assert report["p_value_basis"] == ("paper" if basis else "calibrated")
    if method == "pred":
        assert len(report["pairs"]) == 30 and len(report["source_classes"]) == 1
    else:
        assert report["pairs"] == [] and report["source_classes"] == [0, 1, 3, 4, 5]


def test_exact_mode_gives_the_same_norms_as_the_batched_engine(backdoored_case, tmp_path):
    model, data = backdoored_case
    reports = []
    for extra in (["--fixed-step"], ["--exact"], ["--weight-update-length", "0.01"]):
        path = tmp_path / f"r{len(reports)}.json"
        _scan(model, "--data", data, *FAST_OPTIONS, "--json", path, *extra)
        reports.append(validate_scan_report(json.loads(path.read_text())))
    fixed, exact, adaptive = ([c["pattern_norm"] for c in r["classes"]] for r in reports)
    np.testing.assert_allclose(fixed, exact, rtol=1e-4)
    assert [r["verdict"] for r in reports] == ["backdoor"] * 3
    assert reports[2]["target_class"] == reports[1]["target_class"]
    assert [r["config"]["step_schedule"] for r in reports] == ["fixed", "fixed", "adaptive"]
    assert reports[2]["config"]["largest_step"] == 0.02 and reports[1]["config"]["largest_step"] is None
    assert reports[2]["config"]["weight_update_length"] == 0.01   # as the exact run's delta
    np.testing.assert_allclose(adaptive, exact, rtol=0.1)    # the default schedule: lengths between delta and 2e-2


def test_adaptive_step_conflicts_are_usage_errors(backdoored_case):
    model, data = backdoored_case
    for extra in (["--fixed-step"], ["--exact"], ["--relative-step", "0.01"]):
        result = CliRunner().invoke(main, ["scan", str(model), "--data", str(data), "--adaptive-step", "0.02",
                                           *extra])
        assert result.exit_code == 2 and "--adaptive-step cannot be combined" in result.output


@pytest.mark.parametrize("n", ["1", "2"])
def test_one_or_two_images_per_class_still_scan(backdoored_case, tmp_path, n):
    model, data = backdoored_case
    report_path = tmp_path / "r.json"
    result = _scan(model, "--data", data, "--delta", "0.01", "-q", "--images-per-class", n, "--json", report_path)
    report = validate_scan_report(json.loads(report_path.read_text()))
    assert result.exit_code in (0, 1)
    assert report["data"]["images_per_class"] == [int(n)] * 6
    assert report["most_suspicious_class"] == 2


def test_model_exported_with_a_fixed_batch_of_one_is_scanned(tmp_path):
    result, report = _scan_model(synthetic.linear_classifier(6, backdoor_target=2, fixed_batch=1), tmp_path)
    assert result.exit_code == 1 and report["target_class"] == 2
    assert any("fixed batch size 1" in p for p in report["model"]["conversion_passes"])


def test_text_headline_names_a_borderline_class(clean_case):
    """A clean verdict whose paper p-value alone would flag a class says so on its first line."""
    import dataclasses

    from scanner import ScanConfig, scan
    from scanner.reporters import render_text

    model, data = clean_case
    report = scan(model, data, ScanConfig(images_per_class=4, delta=0.01)).report
    assert report.verdict == "clean" and report.p_value_basis == "calibrated"
    borderline = dataclasses.replace(report, paper_log10_p_value=-2.9, calibrated_log10_p_value=-1.2)
    assert render_text(borderline).startswith(
        f"no backdoor detected  (borderline: the paper's p-value alone would flag class "
        f"{report.most_suspicious_class}")
    plain = dataclasses.replace(report, paper_log10_p_value=-1.0, calibrated_log10_p_value=-0.5)
    assert render_text(plain).startswith("no backdoor detected\n")


@pytest.mark.parametrize("failure", [MemoryError(), RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                     RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried ...")])
def test_running_out_of_memory_exits_2_and_names_the_knob(backdoored_case, tmp_path, monkeypatch, failure):
    from scanner import lred

    def exhausted(*args, **kwargs):
        raise failure

    monkeypatch.setattr(lred, "estimate_patterns", exhausted)
    model, data = backdoored_case
    report_path = tmp_path / "r.json"
    result = _scan(model, "--data", data, *FAST_OPTIONS, "--batch-images", "512", "--json", report_path)
    assert result.exit_code == 2
    assert "ran out of memory" in result.output and "--batch-images (now 512" in result.output
    assert "NOT scanned" in result.output and "Traceback" not in result.output
    report = validate_scan_report(json.loads(report_path.read_text()))
    assert report["verdict"] == "error" and report["error_type"] == "ResourceError"


def test_an_unexpected_runtime_error_is_not_called_out_of_memory(backdoored_case, monkeypatch):
    from scanner import lred

    def broken(*args, **kwargs):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(lred, "estimate_patterns", broken)
    model, data = backdoored_case
    result = _scan(model, "--data", data, *FAST_OPTIONS)
    assert result.exit_code == 2
    assert "internal error (RuntimeError: shape mismatch)" in result.output
    assert "ran out of memory" not in result.output


def test_scores_given_as_n_k_1_1_are_flattened_and_scanned(tmp_path):
    # a classifier ending in a 1x1 convolution and global pooling without Flatten (SqueezeNet)
    from onnx import TensorProto, helper, numpy_helper
    model = synthetic.linear_classifier(6, backdoor_target=2)
    model.graph.node[-1].output[0] = "logits2d"
    model.graph.node.append(helper.make_node("Unsqueeze", ["logits2d", "axes"], ["scores"]))
    model.graph.initializer.append(numpy_helper.from_array(np.array([2, 3], np.int64), "axes"))
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 6, 1, 1]))
    result, report = _scan_model(model, tmp_path)
    assert result.exit_code == 1 and report["target_class"] == 2
    result, report = _scan_model(model, tmp_path, "--output", "scores", "-q")
    assert result.exit_code == 1 and report["target_class"] == 2, result.output


def test_a_confident_softmax_model_is_scanned_through_its_logits(tmp_path):
    # probabilities that float32 rounds to exactly 0 pass no gradient through log p: before the
    # scan took the logits in front of the Softmax, such targets stalled and the scan failed
    from onnx import numpy_helper
    model = synthetic.linear_classifier(6, backdoor_target=2, softmax=True)
    for tensor in model.graph.initializer:
        tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * 200.0, tensor.name))
    import onnxruntime as ort
    x, _ = synthetic.clean_images(6, 4)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    probabilities = session.run(None, {"image": x[:, None].astype(np.float32) / 255})[0]
    assert (probabilities == 0).mean() > 0.5          # the case under test: most probabilities underflow
    result, report = _scan_model(model, tmp_path)
    assert result.exit_code == 1 and report["target_class"] == 2, result.output
    assert report["model"]["score_kind"] == "probabilities"
    assert any("before the output Softmax" in p for p in report["model"]["conversion_passes"])


def test_a_float16_model_is_scanned_through_its_float32_twin(tmp_path):
    from onnx import TensorProto, numpy_helper
    model = synthetic.linear_classifier(6, backdoor_target=2)
    for tensor in model.graph.initializer:
        tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), tensor.name))
    for value in list(model.graph.input) + list(model.graph.output):
        value.type.tensor_type.elem_type = TensorProto.FLOAT16
    result, report = _scan_model(model, tmp_path)
    assert result.exit_code == 1 and report["target_class"] == 2, result.output
    assert any("float16" in p for p in report["model"]["conversion_passes"])
    assert all(c["verified_fraction"] >= 0.9 for c in report["classes"])


def test_an_estimation_stuck_at_zero_is_an_error_not_a_verdict(backdoored_case, monkeypatch):
    import dataclasses

    import scanner.pipeline
    real = scanner.pipeline.lred.estimate_patterns

    def stuck_on_class_1(*args, **kwargs):
        estimates = real(*args, **kwargs)
        estimates[1] = dataclasses.replace(estimates[1], pattern=np.zeros_like(estimates[1].pattern),
                                           status="zero_gradient", iterations=0)
        return estimates

    monkeypatch.setattr(scanner.pipeline.lred, "estimate_patterns", stuck_on_class_1)
    model, data = backdoored_case
    result = _scan(model, "--data", data, *FAST_OPTIONS, "-q")
    assert result.exit_code == 2
    assert "class 1 could not leave v = 0 (status zero_gradient)" in result.output
    assert "NOT scanned" in result.output
