"""One scan preparation (scanner/prepare.py): what ``lred scan``, ``lred inspect`` and the benchmarks use."""
import dataclasses

import numpy as np
import pytest
import torch

import scanner.prepare as preparation
from scanner import scan
from scanner.config import ScanConfig
from scanner.errors import ConversionMismatchError
from scanner.inspection import inspect_model
from tests import synthetic

FAST = ScanConfig(images_per_class=4, delta=0.01)


@pytest.fixture
def parity_calls(monkeypatch):
    """Record every call of the one parity function (and what it returned)."""
    calls = []
    real = preparation.run_parity

    def recording(*args, **kwargs):
        calls.append(real(*args, **kwargs))
        return calls[-1]

    monkeypatch.setattr(preparation, "run_parity", recording)
    return calls


def test_scan_and_inspect_check_the_conversion_with_the_same_parity_function(backdoored_case, parity_calls):
    model, data = backdoored_case
    report = scan(model, data, FAST).report
    assert len(parity_calls) == 1
    assert dataclasses.asdict(parity_calls[0].parity) == {
        "max_abs_difference": report.parity.max_abs_difference, "tolerance": report.parity.tolerance,
        "argmax_agreement": report.parity.argmax_agreement, "images": report.parity.images}
    inspection = inspect_model(str(model), str(data))
    assert len(parity_calls) == 2
    assert inspection.max_abs_difference == parity_calls[1].parity.max_abs_difference
    assert inspection.ok and parity_calls[1].images == 24           # 6 classes x 4 clean images


def test_a_disagreeing_conversion_stops_the_scan_and_fails_the_inspection(backdoored_case, monkeypatch):
    real = preparation.run_parity

    def disagreeing(*args, **kwargs):
        run = real(*args, **kwargs)
        return dataclasses.replace(run, parity=dataclasses.replace(run.parity, max_abs_difference=1.0))

    monkeypatch.setattr(preparation, "run_parity", disagreeing)
    model, data = backdoored_case
    with pytest.raises(ConversionMismatchError, match="disagrees with onnxruntime on 24 clean images"):
        scan(model, data, FAST)
    inspection = inspect_model(str(model), str(data))
    assert not inspection.ok and inspection.max_abs_difference == 1.0
    assert inspection.problem.startswith("torch and onnxruntime disagree: max |difference| 1")


def test_a_module_that_fails_to_run_is_refused_with_its_first_line(backdoored_case, monkeypatch):
    def broken(self, pixels):
        raise RuntimeError("shape mismatch\nsecond line")

    monkeypatch.setattr(preparation.DifferentiableClassifier, "scores", broken)
    model, data = backdoored_case
    with pytest.raises(ConversionMismatchError, match="fails to run: RuntimeError: shape mismatch$"):
        preparation.prepare(model, data, FAST)


def test_prepare_selects_n_correct_images_per_class_and_times_its_steps(backdoored_case):
    model, data = backdoored_case
    prepared = preparation.prepare(model, data, ScanConfig(images_per_class=3, seed=1))
    assert prepared.num_classes == 6 and prepared.score_kind == "logits"
    assert prepared.selection.per_class == (3,) * 6 and prepared.x.shape == (18, 1, 8, 8)
    assert np.array_equal(np.bincount(prepared.y), [3] * 6)
    assert prepared.parity.ok and prepared.parity.images == 24
    assert set(prepared.timing) == {"load_model_seconds", "load_data_seconds", "convert_seconds"}
    with torch.no_grad():
        predicted = prepared.classifier.scores(torch.as_tensor(prepared.x)).argmax(1).numpy()
    assert np.array_equal(predicted, prepared.y)                    # only correctly classified images


def test_a_softmax_output_is_differentiated_through_its_logits(tmp_path):
    model_path, data_path = synthetic.write_case(tmp_path, softmax=True)
    prepared = preparation.prepare(model_path, data_path, FAST)
    assert prepared.score_kind == "probabilities"
    assert prepared.classifier.score_kind == "logits" and prepared.classifier.softmax_applied_after
    assert prepared.passes[-1].endswith("before the output Softmax")
