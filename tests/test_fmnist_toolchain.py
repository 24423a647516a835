"""tools/fmnist.py, the Fashion-MNIST toolchain of the sample models, the zoo and the fixtures, on tiny inputs."""
import gzip

import numpy as np
import pytest

from tools import fmnist


def _write_idx(path, magic, dims, payload):
    header = np.array([magic, *dims], dtype=">u4").tobytes()
    with gzip.open(path, "wb") as handle:
        handle.write(header + payload.tobytes())


def test_idx_files_read_as_uint8_images_and_int64_labels(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "i.gz", 2051, (2, 3, 4), images)
    _write_idx(tmp_path / "l.gz", 2049, (2,), np.array([7, 1], dtype=np.uint8))
    read = fmnist.read_idx(tmp_path / "i.gz")
    assert read.dtype == np.uint8 and np.array_equal(read, images) and read.flags.writeable
    labels = fmnist.read_idx(tmp_path / "l.gz")
    assert labels.dtype == np.int64 and labels.tolist() == [7, 1]


def test_idx_file_with_a_wrong_magic_or_count_is_refused(tmp_path):
    _write_idx(tmp_path / "bad.gz", 1234, (1,), np.zeros(1, np.uint8))
    with pytest.raises(ValueError, match="magic 1234"):
        fmnist.read_idx(tmp_path / "bad.gz")
    _write_idx(tmp_path / "short.gz", 2049, (3,), np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="expected 3 labels, found 2"):
        fmnist.read_idx(tmp_path / "short.gz")


def test_embed_adds_levels_in_8_bit_arithmetic_and_clips_at_255():
    images = np.array([[[10, 250]]], dtype=np.uint8)
    assert fmnist.embed(images, np.array([[50, 50]], np.int16)).tolist() == [[[60, 255]]]


def test_embed_float_adds_delta_at_one_pixel_and_clips_at_1():
    x = np.array([0.5, 0.9], np.float32).reshape(2, 1, 1, 1)
    out = fmnist.embed_float(x, 0, 0, 0.25)
    assert out.dtype == np.float32 and out.ravel().tolist() == [0.75, 1.0]
    assert x.ravel().tolist() == [0.5, pytest.approx(0.9)]  # the input is left alone


@pytest.mark.parametrize("sort", [True, False])
def test_poison_replaces_source_images_by_patterned_copies_labelled_target(sort):
    y = np.array([0, 1, 0, 2, 0, 1, 0, 0])
    x = np.arange(len(y)) * 10
    x_new, y_new, chosen = fmnist.poison(x, y, [0], 2, 3, np.random.default_rng(0), lambda v: v + 1, sort=sort)
    assert len(x_new) == len(x) and sorted(chosen.tolist()) == sorted(set(chosen.tolist()))
    assert all(y[i] == 0 for i in chosen)
    assert x_new[-3:].tolist() == (x[chosen] + 1).tolist() and y_new[-3:].tolist() == [2, 2, 2]
    assert x_new[:-3].tolist() == [v for i, v in enumerate(x) if i not in chosen]
    drawn = np.random.default_rng(0).choice(np.flatnonzero(y == 0), 3, replace=False)
    assert chosen.tolist() == (sorted(drawn.tolist()) if sort else drawn.tolist())
