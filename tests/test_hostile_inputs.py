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
from tests.schemas import validate_scan_report
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
    assert validate_scan_report(json.loads(report_path.read_text()))["verdict"] == "error"


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


def test_a_huge_png_is_refused_from_its_header_without_being_decoded(tmp_path, monkeypatch):
    from scanner import data as data_module
    from tests import hostile_corpus
    root = _write_folder(tmp_path / "d")
    hostile_corpus._zero_png(root / "2" / "huge.png", 9000, 9000)
    monkeypatch.setattr(data_module, "_decode", lambda *a: pytest.fail("an image was decoded"))
    with pytest.raises(DataError, match="huge.png is 9000x9000 pixels"):
        load_clean_images(root)


def test_images_not_of_the_model_size_are_refused_before_decoding(tmp_path, monkeypatch):
    from scanner import data as data_module
    root = _write_folder(tmp_path / "d", size=(5, 4))
    monkeypatch.setattr(data_module, "_decode", lambda *a: pytest.fail("an image was decoded"))
    with pytest.raises(DataError, match="is 5x4 but the model takes 8x8 images"):
        load_clean_images(root, image_size=(8, 8))
    with pytest.raises(DataError, match="is 5x4 but the model takes 8x8 images"):
        np.savez(tmp_path / "c.npz", x=np.zeros((2, 4, 5), np.uint8), y=np.array([0, 1]))
        load_clean_images(tmp_path / "c.npz", image_size=(8, 8))


def test_a_compressed_npz_bomb_is_refused_by_its_declared_size_before_loading(tmp_path, monkeypatch):
    from scanner import data as data_module
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, x=np.zeros((64, 128, 128), np.uint8), y=np.zeros(64, np.int64))
    assert path.stat().st_size < 20_000                      # 1 MiB of pixels in a few KB
    monkeypatch.setattr(data_module, "MAX_CLEAN_BYTES", 512 * 1024)
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("the archive was loaded"))
    with pytest.raises(DataError, match=r"declares 64x128x128 uint8 pixels .* pass a smaller set"):
        load_clean_images(path)


def test_sixteen_bit_png_is_rescaled_to_eight_bits_not_clipped(tmp_path):
    from PIL import Image
    wide = np.array([[0, 128, 257, 32896], [65278, 65407, 65535, 1000]], np.uint16)
    (tmp_path / "d" / "0").mkdir(parents=True)
    Image.fromarray(wide).save(tmp_path / "d" / "0" / "a.png")
    assert Image.open(tmp_path / "d" / "0" / "a.png").mode == "I;16"
    pixels = load_clean_images(tmp_path / "d").pixels[0, ..., 0]
    assert pixels.tolist() == np.round(wide.astype(np.float64) * 255 / 65535).astype(np.uint8).tolist()
    assert pixels.tolist() == [[0, 0, 1, 128], [254, 255, 255, 4]]   # PIL's mode L gave only 0 and 255


def test_npz_labels_that_do_not_fit_int64_are_refused(tmp_path):
    path = tmp_path / "c.npz"
    np.savez(path, x=np.zeros((2, 4, 4), np.uint8), y=np.array([0, 2**63], np.uint64))
    with pytest.raises(DataError, match=f"label {2**63}, too large"):
        load_clean_images(path)


def test_running_out_of_memory_on_external_data_gives_the_reason(tmp_path, monkeypatch):
    from onnx import external_data_helper

    from scanner.errors import ModelError
    from scanner.model import load_model
    model = synthetic.linear_classifier(6)
    onnx.save(model, tmp_path / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    def fail(*args, **kwargs):
        raise MemoryError()
    monkeypatch.setattr(external_data_helper, "load_external_data_for_model", fail)
    with pytest.raises(ModelError, match=r"out of memory reading the external tensor data of .*m.onnx \(\d+ bytes"):
        load_model(tmp_path / "m.onnx")


def test_external_data_that_does_not_match_the_tensor_shape_is_refused(tmp_path):
    from scanner.errors import ModelError
    from scanner.model import load_model
    model = synthetic.linear_classifier(6)
    onnx.save(model, tmp_path / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    with open(tmp_path / "weights.bin", "ab") as handle:
        handle.write(b"\x00" * 12)
    proto = onnx.load(tmp_path / "m.onnx", load_external_data=False)
    last = max(proto.graph.initializer, key=lambda t: int({e.key: e.value for e in t.external_data}["offset"]))
    for entry in last.external_data:
        if entry.key == "length":
            entry.value = str(int(entry.value) + 12)
    (tmp_path / "m.onnx").write_bytes(proto.SerializeToString())
    with pytest.raises(ModelError, match=rf"tensor {last.name!r} declares shape .* but reads \d+ bytes"):
        load_model(tmp_path / "m.onnx")
