"""Step 4: from pixels in [0, 1] to what the model takes as input.

The pattern v is added in pixel space and clipped (eq. (1): ``[x + v]_c`` with c = [0, 1]);
only then is the model's own input transform applied::

    model input = (clip(x + v, 0, 1) * input_scale - mean) / std

``mean`` and ``std`` are per channel, in the model's input units. Pixel tensors are kept in
the model's layout (nchw: (C, H, W), nhwc: (H, W, C), flat: (H*W*C,) in H, W, C order).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from .config import ScanConfig
from .errors import ConfigError, DataError
from .model import LoadedModel

if TYPE_CHECKING:
    import torch

# numpy arrays and torch tensors alike (normalize works on both)
Pixels = TypeVar("Pixels", np.ndarray, "torch.Tensor")


@dataclass(frozen=True, eq=False)
class InputTransform:
    """Layout plus normalization of one model. ``offset``/``scale`` have the pixel tensor's shape."""

    layout: str
    pixel_shape: tuple[int, ...]       # one image in model layout, no batch dimension
    image_shape: tuple[int, int, int]  # (H, W, C)
    scale: np.ndarray                  # input = pixels * scale + offset (float32)
    offset: np.ndarray

    def to_pixels(self, images: np.ndarray) -> np.ndarray:
        """uint8 (n, H, W, C) -> float32 pixel tensors (n, *pixel_shape) in [0, 1]."""
        x = images.astype(np.float32) / 255.0
        if self.layout == "nchw":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x.reshape((x.shape[0],) + self.pixel_shape))

    def from_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Pixel tensor(s) in model layout -> (..., H, W, C), e.g. to save a pattern as an image."""
        lead = pixels.shape[:pixels.ndim - len(self.pixel_shape)]
        if self.layout == "nchw":
            c, h, w = self.pixel_shape
            return np.moveaxis(pixels.reshape(lead + (c, h, w)), -3, -1)
        return pixels.reshape(lead + self.image_shape)

    def normalize(self, pixels: Pixels) -> Pixels:
        """Model input from clipped pixels; works on numpy arrays and torch tensors alike."""
        return pixels * self.scale + self.offset


def expected_image_size(model: LoadedModel, config: ScanConfig) -> tuple[int, int] | None:
    """(H, W) that clean images must have, when the model's input shape fixes it (so that images
    of another size are refused from their headers, before decoding); None when it does not."""
    dims = model.input_shape[1:]
    try:
        layout = config.layout if config.layout != "auto" else _guess_layout(dims)
    except ConfigError:
        return None                       # resolve_transform says why, with the images at hand
    spatial = {"nchw": dims[1:3], "nhwc": dims[0:2], "nhw": dims[0:2]}.get(layout) if len(dims) >= 2 else None
    if spatial is None or len(spatial) != 2:
        return None
    height, width = spatial
    if height is None or width is None:
        return None
    return int(height), int(width)


def resolve_transform(model: LoadedModel, config: ScanConfig,
                      image_shape: tuple[int, int, int]) -> InputTransform:
    """Match the clean images (H, W, C) to the model input and build its transform."""
    dims = model.input_shape[1:]
    layout = config.layout if config.layout != "auto" else _guess_layout(dims)
    h, w, c = image_shape
    expected: tuple[int, ...] | None
    if layout == "nchw":
        expected = (c, h, w)
    elif layout == "nhwc":
        expected = (h, w, c)
    elif layout == "flat":
        expected = (h * w * c,)
    else:  # rank-3 input (N, H, W): one grey channel
        expected = (h, w) if c == 1 else None
    if expected is None or len(expected) != len(dims) or any(
            d is not None and d != e for d, e in zip(dims, expected)):
        shown = "x".join("?" if d is None else str(d) for d in dims)
        raise DataError(f"clean images are {h}x{w} with {c} channel(s) but the model input "
                        f"{model.input_name!r} is {shown} ({layout}); images are never resized: "
                        "supply images of the model's size (or set --layout)")
    mean = _per_channel(config.mean, c, "mean", 0.0)
    std = _per_channel(config.std, c, "std", 1.0)
    scale_hwc = np.broadcast_to((config.input_scale / std).astype(np.float32), (h, w, c))
    offset_hwc = np.broadcast_to((-mean / std).astype(np.float32), (h, w, c))
    return InputTransform(layout, expected, (h, w, c),
                          np.ascontiguousarray(_arrange(scale_hwc, layout, expected)),
                          np.ascontiguousarray(_arrange(offset_hwc, layout, expected)))


def _arrange(hwc: np.ndarray, layout: str, expected: tuple[int, ...]) -> np.ndarray:
    if layout == "nchw":
        return hwc.transpose(2, 0, 1).copy()
    return hwc.reshape(expected).copy()


def _guess_layout(dims: tuple[int | None, ...]) -> str:
    if len(dims) == 1:
        return "flat"
    if len(dims) == 2:
        return "nhw"
    first, last = dims[0], dims[2]
    channel_like = (1, 3, 4)
    if first in channel_like and last not in channel_like:
        return "nchw"
    if last in channel_like and first not in channel_like:
        return "nhwc"
    raise ConfigError(f"cannot tell the layout of input shape {dims}; pass --layout nchw or nhwc")


def _per_channel(values: tuple[float, ...] | None, channels: int, name: str, default: float) -> np.ndarray:
    if values is None:
        return np.full(channels, default, dtype=np.float64)
    if len(values) == 1:
        return np.full(channels, values[0], dtype=np.float64)
    if len(values) != channels:
        raise ConfigError(f"--{name} has {len(values)} values but the images have {channels} channel(s)")
    return np.asarray(values, dtype=np.float64)
