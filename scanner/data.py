"""Step 3: the auditor's clean images, read from a class-folder tree or an .npz archive.

Folder layout: ``DATA/<class index>/<image>.png|.jpg|.jpeg`` (sub-folders named 0, 1, ...).
Archive layout: ``x`` uint8 of shape (N, H, W) or (N, H, W, C), ``y`` integer labels (N,).
Pixels are returned as uint8 (N, H, W, C); the scanner maps them to [0, 1] (App. A.4).
"""
from __future__ import annotations

import hashlib
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.lib import format as npy_format

from .errors import DataError

if TYPE_CHECKING:
    from PIL import Image

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
MAX_IMAGES = 200_000
MAX_IMAGE_PIXELS = 4096 * 4096          # per image (H * W), read from its header before decoding
MAX_CLEAN_BYTES = 8 * 1024**3           # uint8 pixels of the whole set; the scan holds ~9x this as float32
MAX_LABEL = np.iinfo(np.int64).max      # labels are held as int64


@dataclass(frozen=True, eq=False)
class CleanImages:
    """Clean images with their true classes. ``pixels`` uint8 (N, H, W, C); ``labels`` int64 (N,)."""

    pixels: np.ndarray
    labels: np.ndarray
    names: tuple[str, ...]
    source: str
    sha256: str = ""                                  # of the .npz file; over file_sha256 for a folder
    file_sha256: tuple[tuple[str, str], ...] = ()     # folder only: (relative path, sha256), sorted by path

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.pixels.shape[1:])


def load_clean_images(path: str | os.PathLike, channels: int | None = None,
                      image_size: tuple[int, int] | None = None) -> CleanImages:
    """Read clean images from a class-folder tree or an .npz archive.

    ``channels`` (1 or 3), when the model fixes it, decides how PNG/JPEG files are decoded.
    ``image_size`` (H, W), when the model fixes it, refuses images of another size (images are
    never resized). Sizes are read from each PNG/JPEG header and from the .npy headers inside an
    .npz before any pixel is decoded, so that an oversized or decompression-bomb input is refused
    without being loaded.
    """
    path = Path(path)
    if path.is_dir():
        return _load_folder(path, channels, image_size)
    if path.is_file() and path.suffix.lower() == ".npz":
        return _load_npz(path, image_size)
    if not path.exists():
        raise DataError(f"clean data not found: {path}")
    raise DataError(f"clean data must be a folder of class sub-folders or an .npz file, got {path}")


def _check_size(what: str, height: int, width: int, image_size: tuple[int, int] | None) -> None:
    if height * width > MAX_IMAGE_PIXELS:
        raise DataError(f"{what} is {width}x{height} pixels, more than the {MAX_IMAGE_PIXELS} pixels per image "
                        "this scanner decodes; supply images of the model's input size")
    if image_size is not None and (height, width) != tuple(image_size):
        raise DataError(f"{what} is {width}x{height} but the model takes {image_size[1]}x{image_size[0]} "
                        "images; images are never resized: supply images of the model's size")


def _check_bytes(what: str, shape: tuple[int, ...], nbytes: int) -> None:
    if nbytes > MAX_CLEAN_BYTES:
        raise DataError(f"{what} {'x'.join(map(str, shape))} uint8 pixels ({nbytes / 1e9:.1f} GB), more than "
                        f"the {MAX_CLEAN_BYTES / 1e9:.1f} GB of clean images this scanner loads; L-RED needs "
                        "only a few images per class: pass a smaller set")


def _npy_header(archive: zipfile.ZipFile, key: str, path: Path) -> tuple[zipfile.ZipInfo, tuple, np.dtype, int]:
    """The zip entry of array ``key``, the shape and dtype its .npy header declares and the entry's
    size they imply (nothing else is read)."""
    info = next((i for i in archive.infolist() if i.filename in (f"{key}.npy", key)), None)
    if info is None:
        names = sorted(i.filename.removesuffix(".npy") for i in archive.infolist())
        raise DataError(f"{path} must hold arrays 'x' and 'y'; it holds {names}")
    try:
        with archive.open(info) as member:
            version = npy_format.read_magic(member)
            if version == (1, 0):
                shape, _, dtype = npy_format.read_array_header_1_0(member)
            elif version == (2, 0):
                shape, _, dtype = npy_format.read_array_header_2_0(member)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
            offset = member.tell()
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, RuntimeError, NotImplementedError) as exc:
        raise DataError(f"array {key!r} in {path} is not a valid .npy array: {exc}") from exc
    if dtype.hasobject:
        raise DataError(f"array {key!r} in {path} holds Python objects (pickles); refusing to load it")
    return info, shape, dtype, offset + int(np.prod(shape, dtype=object)) * dtype.itemsize


def _check_stored(key: str, path: Path, info: zipfile.ZipInfo, shape: tuple, declared: int) -> None:
    if info.file_size < declared:
        raise DataError(f"array {key!r} in {path} declares shape {shape} ({declared} bytes) but the archive "
                        f"stores {info.file_size}; the file is truncated or forged")


def _load_npz(path: Path, image_size: tuple[int, int] | None = None) -> CleanImages:
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path} is not a valid .npz archive (not a zip file)")
    try:
        with zipfile.ZipFile(path) as archive:
            x_info, x_shape, x_dtype, x_bytes = _npy_header(archive, "x", path)
            y_info, y_shape, y_dtype, y_bytes = _npy_header(archive, "y", path)
    except zipfile.BadZipFile as exc:
        raise DataError(f"{path} is not a valid .npz archive: {exc}") from exc
    if x_dtype != np.uint8:
        raise DataError(f"'x' in {path} must be uint8 pixels 0-255, found {x_dtype}")
    if len(x_shape) not in (3, 4) or (len(x_shape) == 4 and x_shape[-1] not in (1, 3)):
        raise DataError(f"'x' in {path} must have shape (N, H, W) or (N, H, W, C) with C 1 or 3, found {x_shape}")
    if not np.issubdtype(y_dtype, np.integer) or len(y_shape) != 1:
        raise DataError(f"'y' in {path} must be a 1-d integer array, found {y_dtype} {y_shape}")
    if y_shape[0] != x_shape[0]:
        raise DataError(f"{path} has {x_shape[0]} images but {y_shape[0]} labels")
    if x_shape[0] == 0:
        raise DataError(f"{path} holds no images")
    if x_shape[0] > MAX_IMAGES:
        raise DataError(f"{path} holds {x_shape[0]} images, more than {MAX_IMAGES}; pass a smaller set")
    _check_size(f"each image of 'x' in {path}", x_shape[1], x_shape[2], image_size)
    _check_bytes(f"'x' in {path} declares", x_shape, int(np.prod(x_shape, dtype=object)))
    _check_stored("x", path, x_info, x_shape, x_bytes)
    _check_stored("y", path, y_info, y_shape, y_bytes)
    try:
        with np.load(path, allow_pickle=False) as archive:
            x = archive[x_info.filename.removesuffix(".npy")]
            y = archive[y_info.filename.removesuffix(".npy")]
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"cannot read {path} as an .npz archive without pickles: {exc}") from exc
    if x.ndim == 3:
        x = x[..., None]
    if y.min() < 0:
        raise DataError(f"'y' in {path} has a negative label ({int(y.min())})")
    if int(y.max()) > MAX_LABEL:
        raise DataError(f"'y' in {path} has label {int(y.max())}, too large for a class index")
    names = tuple(f"x[{i}]" for i in range(x.shape[0]))
    return CleanImages(np.ascontiguousarray(x), y.astype(np.int64), names, str(path), file_sha256_of(path))


def _load_folder(path: Path, channels: int | None, image_size: tuple[int, int] | None = None) -> CleanImages:
    from PIL import Image, UnidentifiedImageError

    class_dirs = sorted((d for d in path.iterdir() if d.is_dir()), key=lambda d: d.name)
    if not class_dirs:
        raise DataError(f"{path} has no class sub-folders (expected 0/, 1/, ...)")
    bad = [d.name for d in class_dirs if not (d.name.isascii() and d.name.isdigit())]
    if bad:
        raise DataError(f"class sub-folders of {path} must be named by class index (digits 0-9); "
                        f"found {bad[0]!r}")
    too_large = [d.name for d in class_dirs if int(d.name) > MAX_LABEL]
    if too_large:
        raise DataError(f"class sub-folder {too_large[0]!r} of {path} is too large for a class index")
    # first every header (cheap: PIL reads the size lazily), so that no pixel is decoded
    # before the sizes of all images are known to be usable
    files: list[tuple[Path, int]] = []
    first: tuple[Path, tuple[int, int]] | None = None
    total_bytes = 0
    for class_dir in class_dirs:
        for file in sorted(class_dir.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES or not file.is_file():
                continue
            if len(files) >= MAX_IMAGES:
                raise DataError(f"{path} holds more than {MAX_IMAGES} images; pass a smaller set")
            try:
                with Image.open(file) as image:
                    width, height = image.size
                    bands = 1 if image.mode in GREY_MODES else 3
            except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
                raise DataError(f"cannot decode image {file}: {exc}") from exc
            _check_size(f"image {file}", height, width, image_size)
            if first is None:
                first = (file, (width, height))
            elif (width, height) != first[1]:
                raise DataError(f"image {file} is {width}x{height}, unlike {first[0].relative_to(path)} "
                                f"({first[1][0]}x{first[1][1]}); all clean images must have one size")
            total_bytes += width * height * bands
            files.append((file, int(class_dir.name)))
    if not files or first is None:           # first is set with the first file
        raise DataError(f"no PNG/JPEG images under {path}")
    _check_bytes(f"{path} holds", (len(files), first[1][1], first[1][0]), total_bytes)
    pixels: list[np.ndarray] = []
    labels: list[int] = []
    names: list[str] = []
    hashes: list[tuple[str, str]] = []
    for file, label in files:
        try:
            content = file.read_bytes()
            with Image.open(io.BytesIO(content)) as image:
                array = _decode(image, channels)
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            raise DataError(f"cannot decode image {file}: {exc}") from exc
        if pixels and array.shape != pixels[0].shape:
            raise DataError(f"image {file} is {array.shape[1]}x{array.shape[0]}x{array.shape[2]}, "
                            f"unlike {names[0]} ({pixels[0].shape[1]}x{pixels[0].shape[0]}x"
                            f"{pixels[0].shape[2]}); all clean images must have one size")
        pixels.append(array)
        labels.append(label)
        names.append(str(file.relative_to(path)))
        hashes.append((file.relative_to(path).as_posix(), hashlib.sha256(content).hexdigest()))
    hashes.sort()
    return CleanImages(np.stack(pixels), np.asarray(labels, dtype=np.int64), tuple(names), str(path),
                       folder_sha256(hashes), tuple(hashes))


def file_sha256_of(path: Path) -> str:
    """sha256 of one file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_sha256(hashes: list[tuple[str, str]]) -> str:
    """sha256 over the sorted (relative path, file sha256) list of a class-folder tree: one line
    ``<sha256>  <relative path>`` per file (as ``sha256sum`` prints them), newline-terminated."""
    return hashlib.sha256("".join(f"{digest}  {name}\n" for name, digest in sorted(hashes)).encode()).hexdigest()


GREY_MODES = ("L", "1", "I;16", "I;16L", "I;16B", "I")
WIDE_GREY_MODES = ("I;16", "I;16L", "I;16B", "I")


def _decode(image: Image.Image, channels: int | None) -> np.ndarray:
    """Decode to uint8 (H, W, C). Grayscale stays grayscale; colour is only reduced when lossless.

    16-bit grey PNGs (PIL modes I;16 and I) hold intensities 0-65535 on the same scale as 8-bit
    0-255 (the PNG sample depth only refines it), so they are rescaled to 8 bits by
    round(v * 255 / 65535): the nearest 8-bit level, as an 8-bit export of the same image would
    hold. (Converting through PIL's mode L clips them to 0 or 255 instead.) 16-bit colour PNGs
    are read by PIL as 8-bit RGB (the high byte, within one level of the same rounding).
    Other modes (32-bit float) are refused.
    """
    if image.mode in WIDE_GREY_MODES:
        wide = np.asarray(image).astype(np.int64)
        if wide.size and (wide.min() < 0 or wide.max() > 65535):
            raise ValueError(f"mode {image.mode} image with values outside 0-65535")
        array = ((wide * 255 + 32767) // 65535).astype(np.uint8)
    elif image.mode in ("L", "1"):
        array = np.asarray(image.convert("L"), dtype=np.uint8)
    elif image.mode == "F":
        raise ValueError("32-bit float image; the scanner reads 8- and 16-bit images")
    else:
        array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    if array.ndim == 2:
        array = array[..., None]
    if channels == 1 and array.shape[2] == 3:
        if not (np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 0], array[..., 2])):
            raise ValueError("colour image, but the model takes one channel")
        array = array[..., :1]
    elif channels == 3 and array.shape[2] == 1:
        raise ValueError("grayscale image, but the model takes three channels")
    return array


@dataclass(frozen=True)
class Selection:
    """Indices of the clean images chosen per class (only correctly classified ones, Sec. 4.3)."""

    indices: np.ndarray                 # into CleanImages, grouped by class
    per_class: tuple[int, ...]          # how many were used for each class 0..K-1
    correct_available: tuple[int, ...]  # how many correctly classified images each class had


def select_images(labels: np.ndarray, predictions: np.ndarray, num_classes: int,
                  images_per_class: int, seed: int) -> Selection:
    """Pick up to N correctly classified images per class, reproducibly from ``seed``.

    A class with no correctly classified image makes the scan impossible (raises DataError).
    """
    if labels.max() >= num_classes:
        raise DataError(f"clean data has label {int(labels.max())} but the model has {num_classes} classes")
    rng = np.random.default_rng(seed)
    chosen, used, available = [], [], []
    missing, empty = [], []
    for c in range(num_classes):
        of_class = np.flatnonzero(labels == c)
        correct = of_class[predictions[of_class] == c]
        available.append(int(correct.size))
        if of_class.size == 0:
            missing.append(c)
        elif correct.size == 0:
            empty.append(c)
        pick = rng.permutation(correct)[:images_per_class]
        chosen.append(np.sort(pick))
        used.append(int(pick.size))
    if missing:
        raise DataError(f"no clean images for class(es) {_short(missing)}; L-RED needs images of every class")
    if empty:
        accuracy = float((predictions == labels).mean())
        hint = "add images of those classes that it classifies correctly"
        if accuracy < 0.5:
            # a model that is right on under half of its own classes' images is usually fed the wrong
            # input convention, not given bad images
            hint = (f"it classifies only {accuracy:.0%} of all clean images correctly: check the input "
                    "convention (--input-scale 255 for a model that takes 0-255, --mean/--std, --layout) "
                    "and that the labels are the model's class indices")
        raise DataError(f"the model misclassifies every clean image of class(es) {_short(empty)}; {hint}")
    return Selection(np.concatenate(chosen), tuple(used), tuple(available))


def _short(values: list[int]) -> str:
    text = ", ".join(str(v) for v in values[:10])
    return text + (f" and {len(values) - 10} more" if len(values) > 10 else "")
