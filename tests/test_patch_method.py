"""lred-patch: masks and patterns for patch triggers (eq. (13)) with L-RED's source weights, the
test on 1/||m_t||_1, onnxruntime's confirmation (fail closed), --trigger and the saved masks."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from scanner.cli import main
from scanner.config import ScanConfig
from scanner.errors import ConfigError, InconclusiveError
from scanner.jobs import Job
from scanner.patch_engine import PatchEngine, patched
from scanner.patch_scan import PatchCheck, to_layout
from scanner.pipeline import scan
from scanner.prepare import prepare
from tests import patch_synthetic
from tests.schemas import validate

SOURCES = (0, 4)


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory):
    """A 6-class model whose checkerboard corner sends classes 0 and 4 to class 2."""
    return patch_synthetic.write_patch_case(tmp_path_factory.mktemp("patch"), sources=SOURCES)


def test_patched_images_follow_eq_13():
    x = np.full((2, 1, 2, 2), 0.5, np.float32)
    mask = np.array([[[1.0, 0.0], [0.25, 0.0]]], np.float32)
    pattern = np.ones((1, 2, 2), np.float32)
    assert patched(x, mask, pattern)[0, 0].tolist() == [[1.0, 0.5], [0.625, 0.5]]


def test_the_planted_corner_sends_the_sources_and_only_them_to_the_target(two_sources):
    import onnxruntime as ort
    model, data = two_sources
    clean = np.load(data)
    x, y = clean["x"].astype(np.float32)[:, None] / 255, clean["y"]
    x[:, :, :3, :3] = patch_synthetic.checkerboard()
    predicted = ort.InferenceSession(str(model)).run(None, {"image": x})[0].argmax(axis=1)
    assert sorted(set(y[predicted == 2].tolist())) == [0, 2, 4]


def test_the_engine_finds_a_small_mask_for_the_target_and_weights_on_its_sources(two_sources):
    model, data = two_sources
    config = ScanConfig(method="lred-patch", images_per_class=4, device="cpu")
    prepared = prepare(model, data, config)
    engine = PatchEngine(prepared.classifier, torch.as_tensor(prepared.x), torch.as_tensor(prepared.y), 6,
                         [Job(2, (0, 1, 3, 4, 5)), Job(3, (0, 1, 2, 4, 5))], prepared.transform.image_shape,
                         to_layout(prepared), pi=0.9, max_iterations=400, batch_images=2048)
    target, other = engine.run()
    assert target.status == other.status == "converged"
    assert target.pattern_norm < 0.3 * other.pattern_norm          # the non-target's mask is larger
    assert target.mask[:3, :3].sum() > 0.5 * target.pattern_norm   # and the target's sits on the corner
    assert set(np.flatnonzero(target.source_weights > 0.05)) <= set(SOURCES)
    assert target.masked_pattern.shape == prepared.x.shape[1:]
    rows = [int(np.isin(prepared.y, job.sources).sum()) for job in engine.jobs]     # one pass per row and iteration
    assert engine.image_passes == rows[0] * target.iterations + rows[1] * other.iterations > 0


def test_onnxruntime_disagreeing_with_every_mask_fails_closed(two_sources, monkeypatch):
    model, data = two_sources
    monkeypatch.setattr(PatchCheck, "confirm_patches", lambda self, t, m, u, w: np.zeros(len(t), dtype=bool))
    with pytest.raises(InconclusiveError, match="unverified"):
        scan(model, data, ScanConfig(method="lred-patch", images_per_class=4, device="cpu", patch_iterations=40))


def test_trigger_options_are_validated():
    with pytest.raises(ConfigError, match="method must be lred"):
        ScanConfig(method="ured", trigger="both")
    with pytest.raises(ConfigError, match="patch method"):
        ScanConfig(method="lred", trigger="patch")
    with pytest.raises(ConfigError, match="patch_iterations"):
        ScanConfig(method="nc", patch_iterations=0)


@pytest.mark.parametrize("options", [["--trigger", "both", "--method", "ured"],
                                     ["--trigger", "additive", "--method", "nc"],
                                     ["--trigger", "patch", "--method", "pred"],
                                     ["--trigger", "sideways"]])
def test_contradictory_trigger_options_exit_2(tmp_path, options):
    (tmp_path / "m.onnx").write_bytes(b"x")
    result = CliRunner().invoke(main, ["scan", str(tmp_path / "m.onnx"), "--data", str(tmp_path), *options])
    assert result.exit_code == 2


@pytest.mark.slow
def test_lred_patch_finds_the_target_and_a_source_and_saves_the_masks(two_sources, tmp_path):
    model, data = two_sources
    arrays = tmp_path / "arrays"
    result = CliRunner().invoke(main, ["scan", str(model), "--data", str(data), "-n", "4", "--trigger", "patch",
                                       "--quiet", "--json", str(tmp_path / "r.json"), "--save-patterns", str(arrays)])
    report = validate("scan_report", json.loads((tmp_path / "r.json").read_text()))
    assert result.exit_code == 1, result.output
    assert report["method"] == "lred-patch" and report["trigger"] == "patch" and report["target_class"] == 2
    assert report["source_classes"] and set(report["source_classes"]) <= set(SOURCES)
    assert report["log10_p_value"] < np.log10(0.05)
    (test,) = report["tests"]
    assert test["statistic"] == "1/||m_t||_1" and test["detected"] and test["anomaly_index"] > 2
    for c in report["classes"]:
        assert c["mask_l1"] == c["pattern_norm"] and c["statistic"] == pytest.approx(1 / c["mask_l1"])
        assert c["verified_fraction"] >= 0.9 and c["status"] == "converged"
    mask, masked = np.load(arrays / "mask_class_2.npy"), np.load(arrays / "masked_pattern_class_2.npy")
    assert mask.shape == (16, 16) and masked.shape == (16, 16, 1)
    assert mask.sum() == pytest.approx(report["classes"][2]["mask_l1"], rel=1e-4)
    assert np.all(masked <= mask[..., None] + 1e-6)
    assert sorted(report["saved_arrays"]) == sorted(p.name for p in arrays.iterdir())
    assert len(report["saved_arrays"]) == 12
    assert "||m_t||_1" in result.output
    assert [w for w in report["warnings"] if w.startswith("the patch method lred-patch is experimental")]
    assert report["image_passes"] >= sum(c["iterations"] for c in report["classes"]) * 4    # >= 4 images per row


@pytest.mark.slow
def test_trigger_both_runs_both_tests_at_half_alpha_on_one_preparation(two_sources, tmp_path):
    model, data = two_sources
    result = CliRunner().invoke(main, ["scan", str(model), "--data", str(data), "-n", "4", "--delta", "1e-2",
                                       "--trigger", "both", "--quiet", "--json", str(tmp_path / "r.json")])
    report = validate("scan_report", json.loads((tmp_path / "r.json").read_text()))
    assert result.exit_code == 1, result.output
    assert report["trigger"] == "both" and report["alpha"] == 0.05 and report["config"]["trigger"] == "both"
    assert [t["method"] for t in report["tests"]] == ["lred", "lred-patch"]
    assert [t["alpha"] for t in report["tests"]] == [0.025, 0.025]
    assert report["tests"][1]["detected"] and report["tests"][1]["target_class"] == 2
    assert len(report["patch_classes"]) == 6 and report["patch_classes"][2]["mask_l1"] > 0
    assert all(c["mask_l1"] is None for c in report["classes"])              # the additive patterns
    assert "patch_estimate_seconds" in report["timing"] and "Bonferroni" in " ".join(report["warnings"])
    assert "test lred-patch" in result.output
    patch_notes = [w for w in report["warnings"] if "is experimental" in w]
    assert patch_notes == [w for w in patch_notes if w.startswith("lred-patch: the patch method lred-patch")] != []


@pytest.mark.slow
def test_the_html_report_of_a_patch_scan_shows_every_mask_and_masked_pattern(two_sources, tmp_path):
    import base64
    import io
    import re

    from PIL import Image

    model, data = two_sources
    page = tmp_path / "r.html"
    result = CliRunner().invoke(main, ["scan", str(model), "--data", str(data), "-n", "4", "--trigger", "patch",
                                       "--quiet", "--html", str(page), "--class-names", "a,b,c,d,e,f"])
    assert result.exit_code == 1, result.output
    text = page.read_text()
    masks = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="mask of class \d \((\w)\)"', text)
    masked = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="masked pattern of class \d \((\w)\)"', text)
    assert [name for _, name in masks] == list("abcdef") == [name for _, name in masked]
    for encoded, _ in masks + masked:
        assert Image.open(io.BytesIO(base64.b64decode(encoded))).size[0] >= 16
    assert re.search(r'class="suspect">\s*<img src="[^"]+" alt="mask of class 2 \(c\)"', text)


def test_patch_shift_needs_a_patch_estimation_and_a_non_negative_size():
    with pytest.raises(ConfigError, match="patch_shift must be >= 0"):
        ScanConfig(method="lred-patch", patch_shift=-1)
    with pytest.raises(ConfigError, match="needs a patch method"):
        ScanConfig(method="lred", patch_shift=2)
    assert ScanConfig(method="lred", trigger="both", patch_shift=2).patch_shift == 2
    assert ScanConfig(method="nc", patch_shift=2).as_dict()["patch_shift"] == 2


def test_each_row_is_moved_by_its_own_shift_and_zero_filled(two_sources):
    model, data = two_sources
    prepared = prepare(model, data, ScanConfig(method="lred-patch", images_per_class=4, device="cpu"))
    x = torch.as_tensor(prepared.x)
    engine = PatchEngine(prepared.classifier, x, torch.as_tensor(prepared.y), 6, [Job(2, (0, 1, 3, 4, 5))],
                         prepared.transform.image_shape, to_layout(prepared), pi=0.9, max_iterations=1,
                         batch_images=2048, seed=5, shift=2,
                         images_hwc=torch.as_tensor(prepared.transform.from_pixels(prepared.x)))
    rows = torch.arange(x.shape[0])
    moves = torch.randint(-2, 3, (2, rows.numel()), generator=torch.Generator().manual_seed(6))
    out = engine.shifted(rows)
    assert out.shape == x.shape and bool((moves != 0).any())
    h, w, _ = prepared.transform.image_shape
    hwc = torch.as_tensor(prepared.transform.from_pixels(prepared.x))
    moved = torch.as_tensor(prepared.transform.from_pixels(out.numpy()))
    for i in range(rows.numel()):
        dy, dx = int(moves[0, i]), int(moves[1, i])
        expected = torch.zeros_like(hwc[i])
        expected[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
            hwc[i, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
        assert torch.equal(moved[i], expected)


def test_a_patch_shift_scan_reports_the_departure_and_a_shift_as_large_as_the_image_exits_2(two_sources, tmp_path):
    model, data = two_sources
    base = ["scan", str(model), "--data", str(data), "-n", "4", "--trigger", "patch", "--quiet"]
    result = CliRunner().invoke(main, [*base, "--patch-shift", "1", "--json", str(tmp_path / "r.json")])
    assert result.exit_code in (0, 1), result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["config"]["patch_shift"] == 1
    assert [w for w in report["warnings"] if w.startswith("patch shift: every clean image")]
    result = CliRunner().invoke(main, [*base, "--patch-shift", "16"])
    assert result.exit_code == 2 and "--patch-shift 16 is not below the image size 16x16" in result.output


def test_an_unfinished_mask_estimation_names_the_patch_iteration_bound(two_sources):
    model, data = two_sources
    result = CliRunner().invoke(main, ["scan", str(model), "--data", str(data), "-n", "4", "--trigger", "patch",
                                       "--quiet", "--patch-iterations", "3"])
    assert result.exit_code == 2, result.output
    assert "raise --patch-iterations" in result.output and "--max-iterations" not in result.output
