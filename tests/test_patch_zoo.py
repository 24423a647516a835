"""benchmarks/patch_zoo.py and patch_triggers.py: triggers, ground truth, the listing and tiny builds."""
from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from tests.benchmark_scripts import load_benchmark


def _load(name: str) -> ModuleType:
    return load_benchmark(name)


@pytest.fixture(scope="module")
def pz() -> ModuleType:
    return _load("patch_zoo")


@pytest.fixture(scope="module")
def tr() -> ModuleType:
    return _load("patch_triggers")


def test_stamp_puts_the_pattern_where_the_mask_is_one_and_mixes_where_it_is_fractional(tr: ModuleType) -> None:
    images = np.full((2, 4, 4), 100, dtype=np.uint8)
    mask = np.zeros((4, 4), np.float32)
    mask[0, 0], mask[1, 1] = 1.0, 0.5
    pattern = np.full((4, 4), 201, dtype=np.uint8)
    out = tr.stamp(images, mask, pattern)
    assert out.dtype == np.uint8 and out[:, 0, 0].tolist() == [201, 201]
    assert out[:, 1, 1].tolist() == [150, 150]                    # 0.5 * 100 + 0.5 * 201 = 150.5 -> 150 (even)
    untouched = mask == 0
    assert (out[:, untouched] == 100).all() and (images == 100).all()


def test_stamp_shares_the_mask_over_the_channels_of_rgb_images(tr: ModuleType) -> None:
    images = np.zeros((1, 3, 3, 3), dtype=np.uint8)
    mask = np.zeros((3, 3), np.float32)
    mask[2, 2] = 1.0
    pattern = np.zeros((3, 3, 3), np.uint8)
    pattern[2, 2] = (255, 0, 128)
    out = tr.stamp(images, mask, pattern)
    assert out[0, 2, 2].tolist() == [255, 0, 128] and out.sum() == 255 + 128


def test_blend_is_one_minus_a_times_x_plus_a_times_u_everywhere(tr: ModuleType) -> None:
    images = np.array([[[0, 100], [200, 255]]], dtype=np.uint8)
    u = np.array([[255, 0], [100, 255]], dtype=np.uint8)
    out = tr.blend(images, u, 0.2)
    assert out.tolist() == [[[51, 80], [180, 255]]]


def test_random_place_stamps_the_whole_patch_inside_each_image_at_varying_places(tr: ModuleType) -> None:
    images = np.full((40, 28, 28), 7, dtype=np.uint8)
    mask, pattern = tr.patch_arrays("checker", 4, ((255,), (0,)), 1)
    out = tr.stamp_at_random(images, mask, pattern, np.random.default_rng(0))
    corners = set()
    for img in out:
        rows, cols = np.nonzero(img != 7)
        r, c = rows.min(), cols.min()
        assert np.array_equal(img[r:r + 4, c:c + 4], pattern)
        assert (np.delete(img.ravel(), [(r + i) * 28 + c + j for i in range(4) for j in range(4)]) == 7).all()
        corners.add((r, c))
    assert len(corners) > 30


def test_patch_arrays_draw_a_checkerboard_and_a_glyph_shaped_mask(tr: ModuleType) -> None:
    mask, pattern = tr.patch_arrays("checker", 3, ((255,), (0,)), 1)
    assert mask.tolist() == [[1] * 3] * 3 and pattern.tolist() == [[255, 0, 255], [0, 255, 0], [255, 0, 255]]
    mask, pattern = tr.patch_arrays("glyph", 6, ((200,), (200,)), 1, "cross")
    assert mask.sum() == 20 and mask[0].tolist() == [0, 0, 1, 1, 0, 0] and (pattern == 200).all()
    _, rgb = tr.patch_arrays("solid", 5, ((255, 0, 0), (0, 255, 0)), 3)
    assert rgb.shape == (5, 5, 3) and (rgb == (255, 0, 0)).all()


@pytest.mark.parametrize("arch", ["cnn", "cnn32"])
@pytest.mark.parametrize("group", ["solid", "checker", "random", "glyph", "blend"])
@pytest.mark.parametrize("num_sources", [1, 3, 9])
def test_ground_truth_is_seeded_and_the_trigger_fits_the_image(pz: ModuleType, tr: ModuleType, arch: str,
                                                               group: str, num_sources: int) -> None:
    spec = pz.ModelSpec(arch, group, num_sources, 3)
    truth = pz.attack_for(spec)
    assert truth == pz.attack_for(pz.ModelSpec(arch, group, num_sources, 3))
    assert len(truth["source_classes"]) == num_sources and truth["target_class"] not in truth["source_classes"]
    side, channels = pz.image_geometry(arch)
    mask, pattern = tr.trigger_arrays(truth["trigger"], side, channels)
    if group == "blend":
        assert mask.shape == (side, side) and 0.1 <= mask.max() == mask.min() <= 0.2
    elif group == "random":
        assert mask.shape == (truth["trigger"]["size"],) * 2
    else:
        size = truth["trigger"]["size"]
        assert 3 <= size <= 6 and mask.shape == (side, side)
        rows, cols = np.nonzero(mask)
        assert rows.min() >= 1 and cols.min() >= 1 and rows.max() <= side - 2 and cols.max() <= side - 2
        assert rows.max() - rows.min() < size and cols.max() - cols.min() < size
        if group in ("solid", "checker"):     # a corner: both coordinates at 1 or at side - 1 - size
            assert {rows.min(), cols.min()} <= {1, side - 1 - size}
    assert pattern.shape[2:] == (() if channels == 1 else (3,))
    assert pz.attack_for(pz.ModelSpec(arch, "clean", 0, 3)) is None


def test_catalogue_names_every_group_with_1_3_9_sources_plus_clean_and_subset_globs_select(pz: ModuleType) -> None:
    specs = pz.catalogue(["cnn", "mlp"], [0, 1])
    names = [s.name for s in specs]
    assert len(names) == len(set(names)) == 2 * 2 * (5 * 3 + 1)
    assert "cnn-solid1-s0" in names and "mlp-blend9-s1" in names and "cnn-clean-s1" in names
    chosen = [s.name for s in pz.select(specs, ["cnn-glyph*-s0", "mlp-clean-*"])]
    assert chosen == ["cnn-glyph1-s0", "cnn-glyph3-s0", "cnn-glyph9-s0", "mlp-clean-s0", "mlp-clean-s1"]


def test_rgb_variant_upsamples_and_replicates_the_channel(pz: ModuleType) -> None:
    images = np.full((2, 28, 28), 90, dtype=np.uint8)
    images[1, :, 14:] = 250
    rgb = pz.to_rgb32(images)
    assert rgb.shape == (2, 32, 32, 3) and (rgb[0] == 90).all()
    assert (rgb[1, ..., 0] == rgb[1, ..., 2]).all() and rgb[1, 0, 0, 0] == 90 and rgb[1, 0, 31, 1] == 250
    x = pz.model_input(rgb)
    assert x.shape == (2, 3, 32, 32) and x.dtype == np.float32 and x[0, 2, 5, 5] == pytest.approx(90 / 255)
    assert pz.model_input(images).shape == (2, 1, 28, 28)


def test_a_tiny_build_that_does_not_take_is_rebuilt_with_more_poison_and_listed_as_not_taken(
        pz: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (300, 28, 28)).astype(np.uint8)
    y_train = np.arange(300) % 10
    x_test = rng.integers(0, 256, (200, 28, 28)).astype(np.uint8)
    y_test = np.arange(200) % 10
    settings = pz.zoo.BuildSettings(epochs=1, attempts=2, min_asr=1.01, clean_per_class=2)  # unreachable
    spec = pz.ModelSpec("mlp", "solid", 1, 0)
    record = pz.build_one(spec, tmp_path, (x_train, y_train, x_test, y_test), settings, lambda m: None)
    assert [a["poisoned_images"] for a in record["attempts"]] == [30, 30]      # capped at the class size
    assert [a["epochs"] for a in record["attempts"]] == [1, 2] and record["attack_took"] is False
    assert (tmp_path / spec.name / "model.onnx").exists()
    assert np.load(tmp_path / spec.name / "clean.npz")["x"].shape == (20, 28, 28)
    assert np.load(tmp_path / spec.name / "trigger.npz")["mask"].sum() == record["ground_truth"]["trigger"]["size"] ** 2
    assert json.loads((tmp_path / spec.name / "model.json").read_text())["sha256"] == record["sha256"]
    pz.main(["list", "--out", str(tmp_path), "--archs", "mlp", "--subset", "mlp-solid*"])
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 2 + 3
    assert table[2].startswith("| mlp-solid1-s0 | solid-1 | ") and "| no (2 builds) |" in table[2]
    assert table[3] == "| mlp-solid3-s0 | solid-3 | not built |" + " |" * 8


def test_a_tiny_rgb_build_exports_a_3x32x32_model_and_rgb_clean_images(pz: ModuleType, tmp_path: Path) -> None:
    import onnx

    rng = np.random.default_rng(1)
    x_train = rng.integers(0, 256, (200, 32, 32, 3)).astype(np.uint8)
    x_test = rng.integers(0, 256, (100, 32, 32, 3)).astype(np.uint8)
    y_train, y_test = np.arange(200) % 10, np.arange(100) % 10
    settings = pz.zoo.BuildSettings(epochs=1, attempts=1, clean_per_class=3)
    spec = pz.ModelSpec("cnn32", "glyph", 3, 0)
    record = pz.build_one(spec, tmp_path, (x_train, y_train, x_test, y_test), settings, lambda m: None)
    dims = onnx.load(str(tmp_path / spec.name / "model.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value or d.dim_param for d in dims] == ["batch", 3, 32, 32]
    assert np.load(tmp_path / spec.name / "clean.npz")["x"].shape == (30, 32, 32, 3)
    assert np.load(tmp_path / spec.name / "trigger.npz")["pattern"].shape == (32, 32, 3)
    assert record["input"].startswith("image float32 (N,3,32,32)") and 0.0 <= record["attack_success_rate"] <= 1.0
