"""Reading the clean images (class folders and .npz) and choosing N per class."""
import numpy as np
import pytest
from PIL import Image

from scanner.data import load_clean_images, select_images
from scanner.errors import DataError


def _write_folder(root, per_class=3, classes=3, size=(5, 4), mode="L"):
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / str(c)).mkdir(parents=True)
        for i in range(per_class):
            shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(root / str(c) / f"{i}.png")
    return root


def test_folder_of_class_subfolders_loads_as_uint8_nhwc(tmp_path):
    data = load_clean_images(_write_folder(tmp_path / "d"))
    assert data.pixels.dtype == np.uint8 and data.pixels.shape == (9, 4, 5, 1)
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert data.names[0] == "0/0.png"


def test_rgb_folder_keeps_three_channels(tmp_path):
    data = load_clean_images(_write_folder(tmp_path / "d", mode="RGB"), channels=3)
    assert data.pixels.shape == (9, 4, 5, 3)


def test_colour_image_for_a_grey_model_is_an_error(tmp_path):
    with pytest.raises(DataError, match="colour image"):
        load_clean_images(_write_folder(tmp_path / "d", mode="RGB"), channels=1)


def test_npz_with_hw_images_gains_a_channel_axis(tmp_path):
    path = tmp_path / "c.npz"
    np.savez(path, x=np.zeros((4, 6, 6), np.uint8), y=np.array([0, 1, 2, 2]))
    data = load_clean_images(path)
    assert data.pixels.shape == (4, 6, 6, 1) and data.labels.tolist() == [0, 1, 2, 2]


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((2, 4, 4), np.float32), "y": np.array([0, 1])}, "uint8"),
    ({"x": np.zeros((2, 4, 4), np.uint8), "y": np.array([0, 1, 1])}, "2 images but 3 labels"),
    ({"x": np.zeros((2, 4, 4), np.uint8)}, "must hold arrays"),
    ({"x": np.zeros((2, 4, 4), np.uint8), "y": np.array([0.5, 1.0])}, "integer"),
    ({"x": np.zeros((2, 4, 4, 2), np.uint8), "y": np.array([0, 1])}, "shape"),
])
def test_malformed_npz_is_a_data_error(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message):
        load_clean_images(path)


def test_non_numeric_class_folder_is_an_error(tmp_path):
    root = _write_folder(tmp_path / "d")
    (root / "cats").mkdir()
    with pytest.raises(DataError, match="cats"):
        load_clean_images(root)


def test_images_of_different_sizes_are_an_error(tmp_path):
    root = _write_folder(tmp_path / "d")
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(root / "2" / "big.png")
    with pytest.raises(DataError, match="one size"):
        load_clean_images(root)


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_clean_images(tmp_path / "nowhere")


def test_selection_uses_only_correct_images_and_is_reproducible():
    labels = np.repeat(np.arange(3), 5)
    predictions = labels.copy()
    predictions[[0, 1, 7]] = 2          # two class-0 and one class-1 image misclassified
    a = select_images(labels, predictions, 3, images_per_class=2, seed=7)
    b = select_images(labels, predictions, 3, images_per_class=2, seed=7)
    assert a.indices.tolist() == b.indices.tolist()
    assert all(predictions[i] == labels[i] for i in a.indices)
    assert a.per_class == (2, 2, 2) and a.correct_available == (3, 4, 5)
    few = select_images(labels, predictions, 3, images_per_class=8, seed=7)
    assert few.per_class == (3, 4, 5)


def test_class_without_a_correct_image_is_an_error():
    labels = np.array([0, 0, 1, 1, 2, 2])
    predictions = np.array([0, 0, 0, 0, 2, 2])
    with pytest.raises(DataError, match="class\\(es\\) 1"):
        select_images(labels, predictions, 3, images_per_class=2, seed=0)


def test_class_without_any_image_is_an_error():
    with pytest.raises(DataError, match="no clean images for class"):
        select_images(np.array([0, 1]), np.array([0, 1]), 3, images_per_class=1, seed=0)


def test_a_model_wrong_on_most_images_gets_a_hint_about_the_input_convention():
    labels = np.repeat(np.arange(4), 5)
    predictions = np.zeros_like(labels)             # a 0-255 model fed [0, 1]: one class for everything
    with pytest.raises(DataError, match=r"only 25% .*--input-scale 255"):
        select_images(labels, predictions, 4, images_per_class=2, seed=0)
