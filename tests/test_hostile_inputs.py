"""Hostile and malformed input: vendor model files and image folders are untrusted.

Every case must end in exit status 2 or a DataError/ModelError with a one-line message, never a
traceback and never a report that reads as clean.
"""
import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from scanner.cli import main
from scanner.data import load_clean_images
from scanner.errors import DataError
from tests import synthetic
from tests.test_data import _write_folder


def test_garbage_model_file_exits_2_with_one_line_error_and_error_json(tmp_path, backdoored_case):
    _, data = backdoored_case
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not protobuf at all \x00\xff")
    report_path = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["scan", str(bad), "--data", str(data), "--quiet", "--json", str(report_path)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "lred: error:" in result.output and "NOT scanned" in result.output
    assert json.loads(report_path.read_text())["verdict"] == "error"


def test_model_with_two_inputs_is_refused(tmp_path, backdoored_case):
    _, data = backdoored_case
    model = synthetic.linear_classifier(6)
    model.graph.input.append(onnx.helper.make_tensor_value_info("extra", onnx.TensorProto.FLOAT, ["N", 3]))
    path = tmp_path / "two.onnx"
    onnx.save(model, path)
    result = CliRunner().invoke(main, ["scan", str(path), "--data", str(data), "-q"])
    assert result.exit_code == 2 and "expected one image input" in result.output


def test_external_data_outside_the_model_folder_is_refused(tmp_path, backdoored_case):
    _, data = backdoored_case
    model = synthetic.linear_classifier(6)
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    del weight.float_data[:]
    weight.data_location = onnx.TensorProto.EXTERNAL
    entry = weight.external_data.add()
    entry.key, entry.value = "location", "../../etc/passwd"
    path = tmp_path / "m" / "evil.onnx"
    path.parent.mkdir()
    path.write_bytes(model.SerializeToString())
    result = CliRunner().invoke(main, ["scan", str(path), "--data", str(data), "-q"])
    assert result.exit_code == 2 and "outside the model's folder" in result.output


def test_npz_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "pickle.npz"
    np.savez(path, x=np.array([object()], dtype=object), y=np.array([0]))
    with pytest.raises(DataError):
        load_clean_images(path)


def test_corrupt_png_is_named(tmp_path):
    root = _write_folder(tmp_path / "d")
    (root / "1" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="broken.png"):
        load_clean_images(root)
