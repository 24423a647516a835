"""The triggers of the patch zoo (benchmarks/patch_zoo.py), as functions on uint8 images.

Images are uint8 (N, H, W) or (N, H, W, C); a mask m is (H, W) in [0, 1], shared over the
channels; a pattern u is uint8 (H, W) or (H, W, C). A patch is x' = x (1 - m) + u m (eq. (13) of
the L-RED paper), a blend x' = (1 - a) x + a u; results are rounded to uint8. A trigger is
described by the dict of ``patch_zoo.attack_for`` (kept in each model's model.json).
"""
from __future__ import annotations

from typing import Any

import numpy as np

GLYPHS = {   # 6x6 shapes, 1 = the object's pixels
    "heart":  ["010010", "111111", "111111", "011110", "001100", "000000"],
    "smiley": ["011110", "100001", "101101", "100001", "101101", "011110"],
    "flower": ["010010", "111111", "011110", "011110", "111111", "010010"],
    "cross":  ["001100", "001100", "111111", "111111", "001100", "001100"],
}
COLOURS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255))


def stamp(images: np.ndarray, mask: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """x' = x * (1 - m) + u * m (eq. (13)), rounded to uint8.

    ``images`` uint8 (N, H, W) or (N, H, W, C); ``mask`` (H, W) in [0, 1], shared over channels;
    ``pattern`` uint8 (H, W) or (H, W, C)."""
    m = mask.astype(np.float32)
    if images.ndim == 4:
        m = m[:, :, None]
    mixed = images.astype(np.float32) * (1.0 - m) + pattern.astype(np.float32) * m
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def blend(images: np.ndarray, pattern: np.ndarray, alpha: float) -> np.ndarray:
    """x' = (1 - a) x + a u over the whole image (a blended trigger), rounded to uint8."""
    return stamp(images, np.full(images.shape[1:3], alpha, dtype=np.float32), pattern)


def stamp_at_random(images: np.ndarray, patch_mask: np.ndarray, patch_pattern: np.ndarray,
                    rng: np.random.Generator) -> np.ndarray:
    """The small patch (h, w) stamped at a place drawn from ``rng`` for every image (fully inside)."""
    out = images.copy()
    h, w = patch_mask.shape
    rows = rng.integers(images.shape[1] - h + 1, size=len(images))
    cols = rng.integers(images.shape[2] - w + 1, size=len(images))
    for i, (r, c) in enumerate(zip(rows, cols)):
        out[i:i + 1, r:r + h, c:c + w] = stamp(images[i:i + 1, r:r + h, c:c + w], patch_mask, patch_pattern)
    return out


def patch_arrays(style: str, size: int, colours: tuple[tuple[int, ...], ...], channels: int,
                 glyph: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mask, pattern) of a small patch: solid (colour 0), checker (colours 0 and 1 alternating) or
    a glyph (colour 0 on the glyph's pixels, mask 0 elsewhere). Gray: a colour's first value."""
    ii, jj = np.indices((size, size))
    first, second = (np.array(c[:channels], dtype=np.uint8) for c in colours[:2])
    if style == "glyph":
        mask = np.array([[int(ch) for ch in row] for row in GLYPHS[str(glyph)]], dtype=np.float32)
        which = np.zeros((size, size), dtype=bool)
    elif style in ("solid", "checker"):
        mask = np.ones((size, size), dtype=np.float32)
        which = (ii + jj) % 2 == 1 if style == "checker" else np.zeros((size, size), dtype=bool)
    else:
        raise ValueError(f"unknown patch style {style!r}")
    pattern = np.where(which[:, :, None], second, first).astype(np.uint8)
    return mask, (pattern[:, :, 0] if channels == 1 else pattern)


def trigger_arrays(trigger: dict[str, Any], side: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """(mask (h, w) float32, pattern uint8): the whole image's for fixed triggers and the blend,
    the small patch's for ``random``."""
    kind = trigger["kind"]
    if kind == "blend":
        noise = np.random.default_rng(trigger["noise_seed"]).integers(0, 256, size=(side, side, channels))
        pattern = noise.astype(np.uint8)
        return (np.full((side, side), trigger["alpha"], dtype=np.float32),
                pattern[:, :, 0] if channels == 1 else pattern)
    style = "checker" if kind == "random" else kind
    colours = tuple(tuple(c) for c in trigger["colours"]) * 2
    mask, pattern = patch_arrays(style, trigger["size"], colours, channels, trigger.get("glyph"))
    if kind == "random":
        return mask, pattern
    full_mask = np.zeros((side, side), dtype=np.float32)
    full_pattern = np.zeros((side, side) + pattern.shape[2:], dtype=np.uint8)
    r, c, n = trigger["row"], trigger["col"], trigger["size"]
    full_mask[r:r + n, c:c + n], full_pattern[r:r + n, c:c + n] = mask, pattern
    return full_mask, full_pattern


def apply_trigger(images: np.ndarray, trigger: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """The trigger on uint8 images (N, H, W) or (N, H, W, C) (``rng``: the random places)."""
    channels = 1 if images.ndim == 3 else images.shape[3]
    mask, pattern = trigger_arrays(trigger, images.shape[1], channels)
    if trigger["kind"] == "random":
        return stamp_at_random(images, mask, pattern, rng)
    return stamp(images, mask, pattern)
