"""``--manifest FILE`` (TOML): per-model settings by path or glob, the command line winning over
them, and a one-line error naming the file and the key for every bad entry (exit 2)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from scanner import ScanConfig
from scanner.batch import plan
from scanner.cli import main
from scanner.errors import ConfigError
from scanner.manifest import load_manifest
from tests import synthetic
from tests.conftest import FAST_OPTIONS
from tests.schemas import validate


@pytest.fixture
def vendor(tmp_path: Path) -> Path:
    """tmp/models/{a,b}.onnx (clean synthetic models), tmp/clean.npz."""
    (tmp_path / "models").mkdir()
    for name in ("a", "b"):
        onnx.save(synthetic.linear_classifier(6, backdoor_target=None), tmp_path / "models" / f"{name}.onnx")
    x, y = synthetic.clean_images(6, 4)
    np.savez(tmp_path / "clean.npz", x=x, y=y)
    return tmp_path


def write(directory: Path, text: str) -> Path:
    path = directory / "lred.toml"
    path.write_text(text)
    return path


def test_settings_merge_defaults_then_entries_in_order_and_paths_are_relative_to_the_file(vendor):
    manifest = load_manifest(write(vendor, """
[defaults]
data = "clean.npz"
input_scale = 255
[[model]]
glob = "models/*.onnx"
layout = "nchw"
mean = 0.5
[[model]]
path = "models/b.onnx"
mean = [0.25]
std = [0.5]
output = "logits"
class_names = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal"]
"""))
    a, b = vendor / "models" / "a.onnx", vendor / "models" / "b.onnx"
    assert manifest.models() == [a.resolve(), b.resolve()]
    assert manifest.settings_for(a) == {"data": vendor.resolve() / "clean.npz", "input_scale": 255.0,
                                        "layout": "nchw", "mean": (0.5,)}
    assert manifest.settings_for(b)["mean"] == (0.25,) and manifest.settings_for(b)["std"] == (0.5,)
    tasks = plan([a, b], None, ScanConfig(), manifest, keep={"input_scale"})    # input_scale given: it wins
    assert [t.config.input_scale for t in tasks] == [1.0, 1.0]
    assert tasks[1].config.output_name == "logits" and tasks[1].class_names[2] == "pullover"
    assert tasks[0].data == vendor.resolve() / "clean.npz" and tasks[0].class_names is None


BAD = {
    "unknown key": ('[[model]]\npath = "models/a.onnx"\nmeen = [0.5]\n', "'meen'"),
    "wrong type": ('[[model]]\npath = "models/a.onnx"\nmean = "0.5"\n', "'mean'"),
    "bad layout": ('[defaults]\nlayout = "chw"\n', "'layout'"),
    "boolean scale": ('[defaults]\ninput_scale = true\n', "'input_scale'"),
    "negative std": ('[defaults]\nstd = [-1.0]\n', "'std'"),
    "class names": ('[defaults]\nclass_names = [1, 2]\n', "'class_names'"),
    "glob names nothing": ('[[model]]\nglob = "vendor/**/*.onnx"\n', "'glob'"),
    "path and glob": ('[[model]]\npath = "models/a.onnx"\nglob = "*.onnx"\n', "'path' and 'glob'"),
    "unknown table": ('[model_defaults]\nlayout = "nchw"\n', "'model_defaults'"),
    "not TOML": ('[defaults\n', "not valid TOML"),
    "model not a table array": ('model = "a.onnx"\n', "'model'"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_a_bad_manifest_is_one_line_naming_the_file_and_key_with_exit_2(vendor, case):
    text, key = BAD[case]
    path = write(vendor, text)
    with pytest.raises(ConfigError, match=str(path)):
        load_manifest(path)
    result = CliRunner().invoke(main, ["scan", str(vendor / "models" / "a.onnx"), "--data", str(vendor / "clean.npz"),
                                       "--manifest", str(path), "-q"])
    assert result.exit_code == 2, result.output
    first = result.output.splitlines()[0]
    assert first.startswith(f"lred: error: manifest {path}") and key in first, first
    assert "Traceback" not in result.output


def test_a_model_without_data_anywhere_is_an_error(vendor):
    path = write(vendor, '[[model]]\npath = "models/a.onnx"\nlayout = "nchw"\n')
    result = CliRunner().invoke(main, ["scan", "--manifest", str(path), "-q"])
    assert result.exit_code == 2 and "no clean data" in result.output and "--data" in result.output


def test_inspect_shows_the_manifest_convention_and_a_given_option_overrides_it(vendor):
    path = write(vendor, '[defaults]\ndata = "clean.npz"\nmean = 100\n')    # a wrong convention
    model = vendor / "models" / "a.onnx"
    wrong = CliRunner().invoke(main, ["inspect", str(model), "--manifest", str(path), "--json", str(vendor / "i.json")])
    report = validate("inspect_report", json.loads((vendor / "i.json").read_text()))
    assert wrong.exit_code == 0 and report["mean"] == [100.0] and report["clean_accuracy"] < 0.5
    assert "LOW" in wrong.output and "check the input convention" in report["clean_problem"]
    right = CliRunner().invoke(main, ["inspect", str(model), "--manifest", str(path), "--mean", "0"])
    assert right.exit_code == 0 and "accuracy 1.000 on 24 images" in right.output and "mean 0," in right.output


def test_a_batch_from_the_manifest_alone_takes_its_models_and_data(vendor):
    path = write(vendor, '[defaults]\ndata = "clean.npz"\n[[model]]\npath = "models/b.onnx"\n'
                         'class_names = ["c0", "c1", "c2", "c3", "c4", "c5"]\n')
    out = vendor / "out"
    result = CliRunner().invoke(main, ["scan", "--manifest", str(path), "--out", str(out), *FAST_OPTIONS])
    assert result.exit_code == 0, result.output
    summary = validate("batch_summary", json.loads((out / "summary.json").read_text()))
    assert [Path(r["model"]).name for r in summary["models"]] == ["b.onnx"]
    assert summary["models"][0]["verdict"] == "clean"
