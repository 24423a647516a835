"""Step 3: the auditor's clean images, read from a class-folder tree or an .npz archive.

Folder layout: ``DATA/<class index>/<image>.png|.jpg|.jpeg`` (sub-folders named 0, 1, ...).
Archive layout: ``x`` uint8 of shape (N, H, W) or (N, H, W, C), ``y`` integer labels (N,).
Pixels are returned as uint8 (N, H, W, C); the scanner maps them to [0, 1] (App. A.4).
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
MAX_IMAGES = 200_000


@dataclass(frozen=True, eq=False)
class CleanImages:
    """Clean images with their true classes. ``pixels`` uint8 (N, H, W, C); ``labels`` int64 (N,)."""

    pixels: np.ndarray
    labels: np.ndarray
    names: tuple[str, ...]
    source: str

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.pixels.shape[1:])  # type: ignore[return-value]


def load_clean_images(path: str | os.PathLike, channels: int | None = None) -> CleanImages:
    """Read clean images from a class-folder tree or an .npz archive.

    ``channels`` (1 or 3), when the model fixes it, decides how PNG/JPEG files are decoded.
    """
    path = Path(path)
    if path.is_dir():
        return _load_folder(path, channels)
    if path.is_file() and path.suffix.lower() == ".npz":
        return _load_npz(path)
    if not path.exists():
        raise DataError(f"clean data not found: {path}")
    raise DataError(f"clean data must be a folder of class sub-folders or an .npz file, got {path}")


def _load_npz(path: Path) -> CleanImages:
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive.files or "y" not in archive.files:
                raise DataError(f"{path} must hold arrays 'x' and 'y'; it holds {sorted(archive.files)}")
            x, y = archive["x"], archive["y"]
    except DataError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"cannot read {path} as an .npz archive without pickles: {exc}") from exc
    if x.dtype != np.uint8:
        raise DataError(f"'x' in {path} must be uint8 pixels 0-255, found {x.dtype}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise DataError(f"'x' in {path} must have shape (N, H, W) or (N, H, W, C) with C 1 or 3, found {x.shape}")
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
        raise DataError(f"'y' in {path} must be a 1-d integer array, found {y.dtype} {y.shape}")
    if y.shape[0] != x.shape[0]:
        raise DataError(f"{path} has {x.shape[0]} images but {y.shape[0]} labels")
    if x.shape[0] == 0:
        raise DataError(f"{path} holds no images")
    if y.min() < 0:
        raise DataError(f"'y' in {path} has a negative label ({int(y.min())})")
    names = tuple(f"x[{i}]" for i in range(x.shape[0]))
    return CleanImages(np.ascontiguousarray(x), y.astype(np.int64), names, str(path))


def _load_folder(path: Path, channels: int | None) -> CleanImages:
    from PIL import Image, UnidentifiedImageError

    class_dirs = sorted((d for d in path.iterdir() if d.is_dir()), key=lambda d: d.name)
    if not class_dirs:
        raise DataError(f"{path} has no class sub-folders (expected 0/, 1/, ...)")
    bad = [d.name for d in class_dirs if not d.name.isdigit()]
    if bad:
        raise DataError(f"class sub-folders of {path} must be named by class index; found {bad[0]!r}")
    pixels, labels, names = [], [], []
    for class_dir in class_dirs:
        label = int(class_dir.name)
        for file in sorted(class_dir.iterdir()):
            if file.suffix.lower() not in IMAGE_SUFFIXES or not file.is_file():
                continue
            if len(pixels) >= MAX_IMAGES:
                raise DataError(f"{path} holds more than {MAX_IMAGES} images; pass a smaller set")
            try:
                with Image.open(file) as image:
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
    if not pixels:
        raise DataError(f"no PNG/JPEG images under {path}")
    return CleanImages(np.stack(pixels), np.asarray(labels, dtype=np.int64), tuple(names), str(path))


def _decode(image, channels: int | None) -> np.ndarray:
    """Decode to uint8 (H, W, C). Grayscale stays grayscale; colour is only reduced when lossless."""
    if image.mode in ("L", "1", "I;16", "I", "F"):
        mode = "L"
    else:
        mode = "RGB"
    array = np.asarray(image.convert(mode), dtype=np.uint8)
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
