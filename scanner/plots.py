"""The pictures of the HTML report, as PNG bytes: matplotlib (Agg backend, no display) for the plots,
PIL for the pattern and image tiles. Pure functions of their arguments."""
from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib
import numpy as np
from PIL import Image
from scipy import special

matplotlib.use("Agg")                              # no display, no GUI toolkit; before pyplot is imported
from matplotlib import pyplot  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

TILE_PIXELS = 112                                  # small images are enlarged (nearest neighbour) to about this
PATTERN_COLOURS = "RdBu_r"                         # one channel: negative blue, zero white, positive red


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    pyplot.close(figure)
    return buffer.getvalue()


def statistic_plot(statistics: Sequence[float], gamma_shape: float, gamma_scale: float,
                   thresholds: Sequence[tuple[str, float]], suspect: int, labels: Sequence[str]) -> bytes:
    """r_t = 1/||v_t|| of every class against the Gamma null fitted to the K - 1 others (Sec. 3.2), with
    a vertical line at each (name, r) of ``thresholds``: where r_max's p-value reaches alpha."""
    r = np.asarray(statistics, dtype=np.float64)
    finite = [x for _, x in thresholds if np.isfinite(x)]
    top = max([float(r.max())] + finite) * 1.15
    grid = np.linspace(top / 2000, top, 600)
    density = np.exp((gamma_shape - 1) * np.log(grid) - grid / gamma_scale - special.gammaln(gamma_shape)
                     - gamma_shape * np.log(gamma_scale))
    figure, axes = pyplot.subplots(figsize=(8, 3.6))
    axes.plot(grid, density, color="0.3", label=f"Gamma null (shape {gamma_shape:.3g}, scale {gamma_scale:.3g})")
    peak = float(np.nanmax(density[np.isfinite(density)])) if np.isfinite(density).any() else 1.0
    axes.set_ylim(0, peak * 1.3)
    others = np.delete(np.arange(r.size), suspect)
    axes.plot(r[others], np.zeros(others.size), "o", color="tab:blue", clip_on=False, label="r_t, other classes")
    axes.plot([r[suspect]], [0], "D", color="tab:red", markersize=9, clip_on=False,
              label=f"r_t, most suspicious: {labels[suspect]}")
    axes.annotate(labels[suspect], (r[suspect], 0), xytext=(0, 14), textcoords="offset points", ha="center",
                  color="tab:red")
    for (name, x), style in zip(thresholds, ("--", ":")):
        if np.isfinite(x):
            axes.axvline(x, color="tab:orange", linestyle=style, label=f"{name}: p = alpha at r = {x:.3g}")
    axes.set_xlabel("r_t = 1 / ||v_t||_2")
    axes.set_ylabel("null density")
    axes.set_xlim(0, top)
    axes.legend(fontsize=8, loc="upper right")
    return _png(figure)


def source_weights_plot(weights: Sequence[float], target: int, labels: Sequence[str],
                        largest: int = 40) -> bytes:
    """Bar chart of the source weights w_s of ``target`` (Algorithm 1; w_t = 0), at most ``largest`` bars
    (the heaviest, in class order)."""
    w = np.asarray(weights, dtype=np.float64)
    shown = sorted(np.argsort(-w, kind="stable")[:largest].tolist())
    figure, axes = pyplot.subplots(figsize=(max(4.0, 0.45 * len(shown) + 1.5), 3.2))
    axes.bar(range(len(shown)), w[shown], color=["0.7" if s == target else "tab:purple" for s in shown])
    axes.set_xticks(range(len(shown)), [labels[s] for s in shown], rotation=45, ha="right", fontsize=8)
    axes.set_ylabel("w_s")
    axes.set_ylim(0, max(1e-12, float(w.max())) * 1.1)
    axes.set_title(f"source weights of target {labels[target]}", fontsize=10)
    return _png(figure)


def _tile(rgb: np.ndarray) -> bytes:
    """(H, W, 3) uint8 as PNG, enlarged by an integer factor when small."""
    factor = max(1, TILE_PIXELS // max(rgb.shape[0], rgb.shape[1]))
    image = Image.fromarray(rgb, mode="RGB")
    if factor > 1:
        image = image.resize((rgb.shape[1] * factor, rgb.shape[0] * factor), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def image_tile(image: np.ndarray) -> bytes:
    """A pixel image (H, W, C) in [0, 1], C = 1 or 3, as PNG."""
    pixels = np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    return _tile(np.round(pixels[..., :3] * 255).astype(np.uint8))


def pattern_tile(pattern: np.ndarray, amplitude: float) -> bytes:
    """A signed pattern v (H, W, C) shown on a common scale: values in [-amplitude, amplitude] span the
    whole range. One channel: the diverging colour map (white = 0); three: 0.5 + v / (2 amplitude)
    per channel (mid-grey = 0)."""
    v = np.asarray(pattern, dtype=np.float64) / max(amplitude, 1e-12)
    if v.shape[-1] == 1:
        rgba = matplotlib.colormaps[PATTERN_COLOURS](np.clip(v[..., 0] * 0.5 + 0.5, 0.0, 1.0))
        return _tile(np.round(rgba[..., :3] * 255).astype(np.uint8))
    return _tile(np.round(np.clip(0.5 + 0.5 * v[..., :3], 0.0, 1.0) * 255).astype(np.uint8))
