"""A corpus of hostile inputs, built by code: each case is a model file, a clean set or scan options
that a third party could hand the scanner, with the error it must end in.

``CASES`` maps a case name to a builder ``build(directory) -> Case``. Every case must make
``lred scan`` exit with status 2 and print a one-line ``lred: error:`` naming the problem, with no
traceback and no "internal error". The builders are small: the whole corpus is written in about a
second, and nothing in it is decoded at the size it declares.
"""
from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from numpy.lib import format as npy_format
from PIL import Image

from scanner.errors import ConfigError, DataError, LredError, ModelError
from tests import synthetic

SIZE = 8          # the synthetic classifier takes 8x8 grey images
CLASSES = 6


@dataclass(frozen=True)
class Case:
    """One hostile input: the scan arguments, the error class it must raise and a fragment of its message."""

    model: Path
    data: Path
    options: tuple[str, ...]
    error: type[LredError]
    message: str


def _model(directory: Path, model: onnx.ModelProto | None = None) -> Path:
    path = directory / "model.onnx"
    path.write_bytes((model or synthetic.linear_classifier(CLASSES)).SerializeToString())
    return path


def _npz(directory: Path, x: np.ndarray | None = None, y: np.ndarray | None = None) -> Path:
    clean_x, clean_y = synthetic.clean_images(CLASSES, 4)
    path = directory / "clean.npz"
    np.savez(path, x=clean_x if x is None else x, y=clean_y if y is None else y)
    return path


def _folder(directory: Path, extra: Callable[[Path], None] | None = None) -> Path:
    """The synthetic clean set as class folders of 8-bit PNGs, then ``extra(root)`` adds the hostile part."""
    root = directory / "clean"
    x, y = synthetic.clean_images(CLASSES, 4)
    for i, (image, label) in enumerate(zip(x, y)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / str(label) / f"{i}.png")
    if extra is not None:
        extra(root)
    return root


def _zero_png(path: Path, width: int, height: int) -> None:
    """A valid grey PNG of ``width`` x ``height`` black pixels, written without holding its pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)                      # filter byte 0, then the row
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def _bomb_npz(path: Path, shape: tuple[int, ...]) -> None:
    """An .npz whose 'x' declares ``shape`` uint8 but stores only its header and a few bytes."""
    header = io.BytesIO()
    npy_format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", header.getvalue() + b"\x00" * 1024)
        labels = io.BytesIO()
        np.save(labels, np.zeros(shape[0], np.int64))
        archive.writestr("y.npy", labels.getvalue())


# --- the clean data -----------------------------------------------------------------------

def class_folder_with_superscript_digit(d: Path) -> Case:
    return Case(_model(d), _folder(d, lambda root: (root / "³").mkdir()), (), DataError, "'³'")


def class_folder_with_arabic_indic_digit(d: Path) -> Case:
    return Case(_model(d), _folder(d, lambda root: (root / "٣").mkdir()), (), DataError, "'٣'")


def class_folder_with_twenty_digits(d: Path) -> Case:
    def extra(root: Path) -> None:
        (root / ("1" * 20)).mkdir()
        Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(root / ("1" * 20) / "a.png")
    return Case(_model(d), _folder(d, extra), (), DataError, "1" * 20)


def npz_uint64_labels_beyond_int64(d: Path) -> Case:
    _, y = synthetic.clean_images(CLASSES, 4)
    y = y.astype(np.uint64)
    y[0] = 2**63 + 5
    return Case(_model(d), _npz(d, y=y), (), DataError, str(2**63 + 5))


def npz_of_random_bytes(d: Path) -> Case:
    path = d / "clean.npz"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return Case(_model(d), path, (), DataError, "not a valid .npz")


def npz_decompression_bomb(d: Path) -> Case:
    path = d / "clean.npz"
    _bomb_npz(path, (20_000, 1000, 1000))           # declares 20 GB of pixels, stores a few KB
    # refused from the .npy header, before anything is loaded: first by its image size (the
    # model takes 8x8); the total-size cap for images of the right size is a unit test
    return Case(_model(d), path, (), DataError, "is 1000x1000 but the model takes 8x8")


def folder_with_a_huge_png(d: Path) -> Case:
    return Case(_model(d), _folder(d, lambda root: _zero_png(root / "0" / "huge.png", 9000, 9000)),
                (), DataError, "9000x9000")


# --- the model ----------------------------------------------------------------------------

def _external(model: onnx.ModelProto, location: str, length: int | None = None) -> onnx.ModelProto:
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    del weight.float_data[:]
    weight.data_location = onnx.TensorProto.EXTERNAL
    entries = {"location": location, "offset": "0"} | ({"length": str(length)} if length is not None else {})
    for key, value in entries.items():
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    return model


def external_tensor_of_32_gib(d: Path) -> Case:
    model = _external(synthetic.linear_classifier(CLASSES), "weights.bin")
    with open(d / "weights.bin", "wb") as handle:     # sparse: 32 GiB declared, nothing on disk
        handle.truncate(32 * 1024**3)
    return Case(_model(d, model), _npz(d), (), ModelError, "'W'")


def single_score_output(d: Path) -> Case:
    model = synthetic.linear_classifier(CLASSES)
    w = onnx.numpy_helper.to_array(model.graph.initializer[0])[:1]
    model.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(w, "W"))
    model.graph.initializer[1].CopyFrom(onnx.numpy_helper.from_array(np.zeros(1, np.float32), "b"))
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 1
    return Case(_model(d, model), _npz(d), (), ModelError, "1 class")


def name_that_is_not_utf8(d: Path) -> Case:
    """Found by benchmarks/fuzz.py: protobuf hands an invalid UTF-8 string back as bytes."""
    model = synthetic.linear_classifier(CLASSES)
    model.producer_name = "lred-tests"
    data = model.SerializeToString().replace(b"lred-tests", b"lred-\xff\xfests")
    path = d / "model.onnx"
    path.write_bytes(data)
    return Case(path, _npz(d), (), ModelError, "not valid UTF-8")


def external_data_location_with_nul(d: Path) -> Case:
    """Found by benchmarks/fuzz.py: a NUL byte in the location made pathlib raise ValueError."""
    model = _external(synthetic.linear_classifier(CLASSES), "weights.bin\x00.txt")
    return Case(_model(d, model), _npz(d), (), ModelError, "outside the model's folder or missing")


def fixed_batch_of_two_billion(d: Path) -> Case:
    """Found by benchmarks/fuzz.py: onnxruntime batches were padded to the fixed batch (512 GiB)."""
    model = synthetic.linear_classifier(CLASSES)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2**31
    return Case(_model(d, model), _npz(d), (), ModelError, "fixes its batch to 2147483648")


def _with_initializer(name: str, change: Callable[[np.ndarray], None]) -> onnx.ModelProto:
    model = synthetic.linear_classifier(CLASSES)
    for tensor in model.graph.initializer:
        if tensor.name == name:
            array = onnx.numpy_helper.to_array(tensor).copy()
            change(array)
            tensor.CopyFrom(onnx.numpy_helper.from_array(array, name))
    return model


def nan_weights(d: Path) -> Case:
    model = _with_initializer("W", lambda w: w.__setitem__((0, 0), np.nan))
    return Case(_model(d, model), _npz(d), (), ModelError, "non-finite class scores")


def infinite_bias(d: Path) -> Case:
    model = _with_initializer("b", lambda b: b.__setitem__(1, np.inf))
    return Case(_model(d, model), _npz(d), (), ModelError, "non-finite class scores")


# --- the options --------------------------------------------------------------------------

def _option_case(*options: str, message: str) -> Callable[[Path], Case]:
    def build(d: Path) -> Case:
        return Case(_model(d), _npz(d), options, ConfigError, message)
    return build


CASES: dict[str, Callable[[Path], Case]] = {
    "class_folder_with_superscript_digit": class_folder_with_superscript_digit,
    "class_folder_with_arabic_indic_digit": class_folder_with_arabic_indic_digit,
    "class_folder_with_twenty_digits": class_folder_with_twenty_digits,
    "npz_uint64_labels_beyond_int64": npz_uint64_labels_beyond_int64,
    "npz_of_random_bytes": npz_of_random_bytes,
    "npz_decompression_bomb": npz_decompression_bomb,
    "folder_with_a_huge_png": folder_with_a_huge_png,
    "external_tensor_of_32_gib": external_tensor_of_32_gib,
    "single_score_output": single_score_output,
    "name_that_is_not_utf8": name_that_is_not_utf8,
    "external_data_location_with_nul": external_data_location_with_nul,
    "fixed_batch_of_two_billion": fixed_batch_of_two_billion,
    "nan_weights": nan_weights,
    "infinite_bias": infinite_bias,
    "mean_nan": _option_case("--mean", "nan", message="mean"),
    "input_scale_inf": _option_case("--input-scale", "inf", message="input_scale"),
    "delta_inf": _option_case("--delta", "inf", message="delta"),
    "seed_negative": _option_case("--seed", "-1", message="seed"),
    "seed_beyond_2_64": _option_case("--seed", str(2**70), message="seed"),
    # found by benchmarks/fuzz.py: 2e-2 / 1e-300 weight updates per step overflowed an int64 count
    # found by benchmarks/fuzz.py: bisecting a step to 1e-300 never ends (the scan hung)
    "crossing_resolution_tiny": _option_case("--crossing-resolution", "1e-300", "--fixed-step",
                                             message="crossing_resolution"),
    "delta_tiny": _option_case("--delta", "1e-300", message="delta must be >= 1e-9"),
    "weight_update_length_tiny": _option_case("--weight-update-length", "1e-300", message="weight_update_length"),
}
