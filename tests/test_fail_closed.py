"""No verdict without the evidence: inconclusive estimates, conversions that differ off the clean
images or at the estimated patterns, and the time limit all end in exit status 2 (issue: fail closed)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import scanner.prepare as preparation
from scanner.cli import main
from scanner.errors import ConversionMismatchError
from scanner.estimation import STATUS_CONVERGED, PatternEstimate
from scanner.verify import ReferenceCheck
from tests.conftest import FAST_OPTIONS
from tests.schemas import validate_scan_report


def scan(model, data, tmp_path, *extra):
    report = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["scan", str(model), "--data", str(data), *FAST_OPTIONS,
                                       "--json", str(report), *extra])
    return result, validate_scan_report(json.loads(report.read_text()))


def test_a_scan_whose_estimates_did_not_converge_is_inconclusive_not_clean(backdoored_case, tmp_path):
    model, data = backdoored_case
    result, report = scan(model, data, tmp_path, "--max-iterations", "1")
    assert result.exit_code == 2, result.output
    assert report["verdict"] == "error" and report["error_type"] == "InconclusiveError"
    assert "inconclusive" in report["error"] and "max_iterations" in report["error"]
    assert "no verdict: the estimates are inconclusive; this is not a clean verdict" in result.output


def test_the_default_scan_reports_where_the_module_was_compared_with_onnxruntime(backdoored_case, tmp_path):
    model, data = backdoored_case
    result, report = scan(model, data, tmp_path)
    assert result.exit_code == 1, result.output
    parity = report["parity"]
    assert parity["off_grid_images"] == 64 and parity["off_grid_max_abs_difference"] <= parity["tolerance"]
    # every final pattern, on the N = 4 images of each of the other 5 classes, for 6 targets
    assert parity["at_patterns_images"] == 6 * 5 * 4
    assert parity["at_patterns_max_abs_difference"] <= 1e-3


class OffGridTerm(torch.nn.Module):
    """The converted module plus a term that is 0 on every 8-bit image and not between them:
    what an operator converted inexactly off the 8-bit grid would do."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.module(x)
        off_grid = (x * 255 - torch.round(x * 255)).abs().flatten(1).sum(dim=1, keepdim=True)
        return scores + 10.0 * off_grid * torch.arange(scores.shape[1], dtype=scores.dtype)


def test_a_conversion_that_differs_only_off_the_clean_images_is_refused(backdoored_case, tmp_path, monkeypatch):
    convert = preparation._convert

    def unfaithful(model):
        module, softmax_after, passes = convert(model)
        return OffGridTerm(module), softmax_after, passes

    monkeypatch.setattr(preparation, "_convert", unfaithful)
    model, data = backdoored_case
    result, report = scan(model, data, tmp_path)
    assert result.exit_code == 2, result.output
    assert report["error_type"] == "ConversionMismatchError"
    assert "matches onnxruntime on the clean images but not off them" in report["error"]


class FakeClassifier:
    """Scores of a fixed linear map, shifted by ``offset``: a stand-in for the converted module."""

    device = torch.device("cpu")

    def __init__(self, weight: np.ndarray, offset: float):
        self.weight = torch.as_tensor(weight)
        self.offset = offset

    def scores(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.flatten(1).double() @ self.weight.T + self.offset

    def model_scores(self, scores: torch.Tensor) -> torch.Tensor:
        return scores


class LinearReference:
    def __init__(self, weight: np.ndarray):
        self.weight = weight

    def scores(self, inputs: np.ndarray) -> np.ndarray:
        return inputs.reshape(len(inputs), -1).astype(np.float64) @ self.weight.T


class Identity:
    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        return pixels


@pytest.mark.parametrize("offset, refused", [(0.0, False), (0.5, True)])
def test_scores_at_the_final_patterns_must_match_onnxruntime(offset, refused):
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(3, 4))
    pixels = rng.uniform(0, 1, size=(6, 4)).astype(np.float32)
    labels = np.repeat(np.arange(3), 2)
    check = ReferenceCheck(LinearReference(weight), Identity(), pixels, labels, 3, pi=0.9)
    estimate = PatternEstimate(target_class=1, pattern=np.full(4, 0.1, np.float32), iterations=3,
                               misclassification=np.zeros(3), source_weights=np.array([0.5, 0.0, 0.5]),
                               fraction=1.0, status=STATUS_CONVERGED, sources=(0, 2))
    classifier = FakeClassifier(weight, offset)
    if refused:
        with pytest.raises(ConversionMismatchError, match="at the estimated pattern of class 1"):
            check.verify([estimate], classifier, 1e-3, 1e-4, batch_images=2)
        return
    (verified,), parity = check.verify([estimate], classifier, 1e-3, 1e-4, batch_images=2)
    assert parity.images == 4 and parity.max_abs_difference < 1e-9
    assert verified.fraction == pytest.approx(check.fractions(1, estimate.pattern, estimate.source_weights).fraction)


def test_a_scan_past_its_time_limit_ends_in_exit_2(backdoored_case, tmp_path):
    model, data = backdoored_case
    result, report = scan(model, data, tmp_path, "--timeout", "0.001")
    assert result.exit_code == 2, result.output
    assert report["error_type"] == "ScanTimeoutError" and "--timeout 0.001 s" in report["error"]


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_a_timeout_that_is_not_a_positive_number_is_a_usage_error(backdoored_case, value):
    model, data = backdoored_case
    result = CliRunner().invoke(main, ["scan", str(model), "--data", str(data), "--timeout", value, "-q"])
    assert result.exit_code == 2 and "timeout must be a positive number of seconds" in result.output


def test_model_controlled_names_cannot_write_lines_or_escapes_to_the_terminal(tmp_path):
    import onnx

    from tests import synthetic

    hostile = "image\nlred: no backdoor detected\x1b[2K\u202e"
    model = synthetic.linear_classifier(6)
    model.graph.input[0].name = hostile
    for node in model.graph.node:
        node.input[:] = [hostile if name == "image" else name for name in node.input]
    model.producer_name = "vendor\r\x1b[31mclean"
    path = tmp_path / "hostile.onnx"
    onnx.save(model, path)
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert "\x1b" not in result.output and "\u202e" not in result.output and "\r" not in result.output
    assert not any(line.startswith("lred: no backdoor") for line in result.output.splitlines())
    assert "vendor\\r\\x1b[31mclean" in result.output


def test_onnxruntime_out_of_memory_names_batch_images(tmp_path):
    """A model that expands a constant to 40 GB in front of its scores: onnxruntime's allocation
    failure is a resource error with the --batch-images hint, not a generic model error."""
    import onnx
    from onnx import helper, numpy_helper

    from tests import synthetic

    model = synthetic.linear_classifier(6)
    graph = model.graph
    graph.initializer.extend([numpy_helper.from_array(np.array([1, 100000, 100000], np.int64), "huge"),
                              numpy_helper.from_array(np.ones((1, 1, 1), np.float32), "one")])
    graph.node.extend([helper.make_node("Expand", ["one", "huge"], ["expanded"]),
                       helper.make_node("ReduceSum", ["expanded"], ["total"], keepdims=0),
                       helper.make_node("Mul", ["total", "one_scalar"], ["zero"]),
                       helper.make_node("Add", ["logits", "zero"], ["scores"])])
    graph.initializer.append(numpy_helper.from_array(np.array(0.0, np.float32), "one_scalar"))
    graph.output[0].name = "scores"
    path, data = tmp_path / "expand.onnx", tmp_path / "clean.npz"
    onnx.save(model, path)
    x, y = synthetic.clean_images(6, 4)
    np.savez(data, x=x, y=y)
    result, report = scan(path, data, tmp_path)
    assert result.exit_code == 2, result.output
    assert report["error_type"] == "ResourceError" and "--batch-images" in report["error"], report


def test_the_time_limit_also_bounds_the_paper_exact_loop(backdoored_case, tmp_path):
    """--exact checks the limit after every iteration of Algorithm 1, not only between targets."""
    model, data = backdoored_case
    result, report = scan(model, data, tmp_path, "--exact", "--delta", "1e-6", "--max-iterations", "100000000",
                          "--timeout", "3")
    assert result.exit_code == 2, result.output
    assert report["error_type"] == "ScanTimeoutError" and "0/6 done" in report["error"]
