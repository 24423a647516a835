"""From pixels in [0, 1] to the model input: layout, scale and per-channel normalization."""
import numpy as np
import pytest

from scanner.config import ScanConfig
from scanner.errors import ConfigError, DataError
from scanner.model import LoadedModel
from scanner.preprocess import resolve_transform


def _model(shape):
    return LoadedModel(path="m.onnx", sha256="", proto=None, opset=13, producer="", input_name="image",
                       input_shape=shape, input_dtype="float32", output_name="logits",
                       output_shape=(None, 10), score_producer="Gemm")


@pytest.mark.parametrize("shape, layout", [((None, 3, 6, 5), "nchw"), ((None, 6, 5, 3), "nhwc"),
                                           ((None, 90), "flat")])
def test_normalization_follows_the_channel_in_every_layout(shape, layout):
    config = ScanConfig(mean=(0.5, 0.25, 0.0), std=(2.0, 4.0, 1.0), input_scale=255.0)
    transform = resolve_transform(_model(shape), config, (6, 5, 3))
    assert transform.layout == layout
    images = np.random.default_rng(0).integers(0, 256, (2, 6, 5, 3), dtype=np.uint8)
    model_input = transform.normalize(transform.to_pixels(images))
    expected_hwc = (images / 255.0 * 255.0 - np.array([0.5, 0.25, 0.0])) / np.array([2.0, 4.0, 1.0])
    back = transform.from_pixels(model_input.astype(np.float64))
    np.testing.assert_allclose(back, expected_hwc, rtol=1e-5)


def test_pixels_are_unit_range_in_model_layout():
    transform = resolve_transform(_model((None, 3, 4, 5)), ScanConfig(), (4, 5, 3))
    pixels = transform.to_pixels(np.full((1, 4, 5, 3), 255, np.uint8))
    assert pixels.shape == (1, 3, 4, 5) and pixels.max() == 1.0


def test_wrong_image_size_is_an_error_not_a_resize():
    with pytest.raises(DataError, match="never resized"):
        resolve_transform(_model((None, 1, 28, 28)), ScanConfig(), (32, 32, 1))


def test_mean_with_the_wrong_number_of_channels_is_an_error():
    with pytest.raises(ConfigError, match="--mean has 2 values"):
        resolve_transform(_model((None, 3, 4, 5)), ScanConfig(mean=(0.1, 0.2)), (4, 5, 3))


def test_ambiguous_layout_asks_for_layout():
    with pytest.raises(ConfigError, match="--layout"):
        resolve_transform(_model((None, 3, 5, 3)), ScanConfig(), (5, 3, 3))
    transform = resolve_transform(_model((None, 3, 5, 3)), ScanConfig(layout="nhwc"), (3, 5, 3))
    assert transform.pixel_shape == (3, 5, 3)
