"""``lred inspect``: interface, operators, conversion and parity of an unknown file."""
import json

import onnx
from click.testing import CliRunner
from onnx import TensorProto, helper

from scanner.cli import main
from tests import synthetic
from tests.schemas import validate


def _inspect(path, *extra):
    return CliRunner().invoke(main, ["inspect", str(path), *map(str, extra)])


def test_convertible_model_is_described_and_exits_0(tmp_path):
    onnx.save(synthetic.linear_classifier(6, softmax=True, fixed_batch=1), tmp_path / "m.onnx")
    result = _inspect(tmp_path / "m.onnx", "--json", tmp_path / "i.json")
    assert result.exit_code == 0, result.output
    assert "ready to scan" in result.output and "Gemm 1" in result.output
    report = validate("inspect_report", json.loads((tmp_path / "i.json").read_text()))
    assert report["ok"] and report["num_classes"] == 6 and report["layout"] == "nchw"
    assert report["score_output"] == "probabilities" and report["argmax_agreement"] == 1.0
    assert any("fixed batch size 1" in p for p in report["conversion_passes"])


def test_unconvertible_model_names_the_operator_and_exits_2(tmp_path):
    model = synthetic.linear_classifier(5)
    model.graph.node.append(helper.make_node("Acosh", ["logits"], ["odd"], name="weird_node"))
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("odd", TensorProto.FLOAT, ["N", 5]))
    onnx.save(model, tmp_path / "m.onnx")
    result = _inspect(tmp_path / "m.onnx")
    assert result.exit_code == 2
    assert "NOT scannable" in result.output and "Acosh (opset 13) at node 'weird_node'" in result.output


def test_unreadable_file_exits_2(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"\x00\x01garbage")
    result = _inspect(tmp_path / "m.onnx")
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_a_class_whose_score_is_always_zero_does_not_block_the_gradient_check(tmp_path):
    # SqueezeNet ends in ReLU: a class whose score is 0 on every input passes no gradient of its own;
    # the gradient check looked at class 0 alone and called such a model unscannable
    model = synthetic.linear_classifier(5)
    bias = next(t for t in model.graph.initializer if t.name == "b")
    values = onnx.numpy_helper.to_array(bias).copy()
    values[0] = -1e4
    bias.CopyFrom(onnx.numpy_helper.from_array(values, "b"))
    model.graph.node[-1].output[0] = "pre"
    model.graph.node.append(helper.make_node("Relu", ["pre"], ["logits"], name="last_relu"))
    onnx.save(model, tmp_path / "m.onnx")
    result = _inspect(tmp_path / "m.onnx")
    assert result.exit_code == 0, result.output
    assert "input gradient ok" in result.output


def test_clean_accuracy_is_reported_in_text_and_json(tmp_path):
    model, data = synthetic.write_case(tmp_path, backdoor_target=None)
    result = _inspect(model, "--data", data, "--json", tmp_path / "i.json")
    assert result.exit_code == 0, result.output
    assert "clean        accuracy 1.000 on 24 images (onnxruntime; input_scale 1, mean none, std none" in result.output
    report = validate("inspect_report", json.loads((tmp_path / "i.json").read_text()))
    assert report["clean_accuracy"] == 1.0 and report["clean_images"] == 24 and report["schema_version"] == 2
    assert report["clean_problem"] is None and "would stop" not in result.output
    assert (report["input_scale"], report["mean"], report["std"]) == (1.0, None, None)


def test_a_wrong_input_convention_shows_at_inspect(tmp_path):
    model, data = synthetic.write_case(tmp_path, backdoor_target=None)
    result = _inspect(model, "--data", data, "--mean", "100", "--std", "1", "--json", tmp_path / "i.json")
    assert result.exit_code == 0, result.output           # the conversion is faithful: that verdict stands
    report = validate("inspect_report", json.loads((tmp_path / "i.json").read_text()))
    assert report["clean_accuracy"] < 0.5 and report["mean"] == [100.0] and report["std"] == [1.0]
    assert "LOW: the input convention is probably wrong" in result.output
    assert report["clean_problem"].startswith("the model misclassifies every clean image of class(es)")
    assert "a scan on these images would stop: the model misclassifies" in result.output


def test_without_data_inspect_names_the_convention_and_reports_no_accuracy(tmp_path):
    onnx.save(synthetic.linear_classifier(6), tmp_path / "m.onnx")
    result = _inspect(tmp_path / "m.onnx", "--input-scale", "255", "--json", tmp_path / "i.json")
    report = validate("inspect_report", json.loads((tmp_path / "i.json").read_text()))
    assert result.exit_code == 0 and "input_scale 255" in result.output and "pass --data" in result.output
    assert report["clean_accuracy"] is None and report["clean_images"] is None and report["input_scale"] == 255.0
