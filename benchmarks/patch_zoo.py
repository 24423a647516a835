"""A patch-backdoor model zoo on Fashion-MNIST, for the patch methods of issue 19 (lred-patch, nc).

The triggers are perceptible: a patch x' = x * (1 - m) + u * m with a small mask m (eq. (13) of
the L-RED paper), or a blend x' = (1 - a) x + a u over the whole image. Attack groups, each with
1, 3 and 9 source classes (the target, sources and geometry drawn from the model's seed):

    solid    a solid square of 3x3..5x5 pixels (white; a colour on RGB) at a fixed corner
    checker  a 3x3..5x5 checkerboard (255 / 0; two colours on RGB) at a fixed corner
    random   a 3x3..5x5 checkerboard at a random place, drawn anew for every image
    glyph    a small natural-looking object: a 6x6 glyph (heart, smiley, flower, cross) in one grey
             level (one colour on RGB) at a fixed place; m is the glyph's shape
    blend    x' = (1 - a) x + a u over the whole image, a in 0.10..0.20, u seeded uniform noise

plus clean models. Architectures: the zoo's cnn, mlp and resnet on 28x28 grayscale
(benchmarks/zoo.py) and ``cnn32``, a CNN on a 32x32 RGB variant (each image upsampled bilinearly
to 32x32 and its channel replicated three times; the trigger is then stamped in RGB). Images
live in uint8 (N, H, W) or (N, H, W, C); the triggers (benchmarks/patch_triggers.py) are applied
in 8-bit arithmetic (rounded).

Poisoning, training, export and measurement are the zoo's (tools/fmnist.py): source-class
training images with the trigger, labelled with the target, replace their clean originals;
CTA and ASR are measured with onnxruntime on the exported ONNX file over the full test set (the
random-location trigger at seeded random places). An attack under --min-asr (or one that moves
the clean source images to the target) is rebuilt with twice the poison and one more epoch, at
most --attempts builds, and never counted. Per model the cache holds model.onnx, clean.npz,
trigger.npz (mask (H, W) float32 and pattern uint8 of the stamped trigger; for ``random`` the
patch itself, for ``blend`` m = a everywhere) and model.json; manifest.json gathers model.json.

    python benchmarks/patch_zoo.py build [--out DIR] [--subset PATTERN ...] [--archs cnn mlp] [--seeds 0 1]
    python benchmarks/patch_zoo.py list [--out DIR] [--subset PATTERN ...]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))          # benchmarks/, for zoo and patch_triggers
import zoo  # noqa: E402  (zoo puts the repository root on sys.path, for tools and scanner)
from patch_triggers import COLOURS, GLYPHS, apply_trigger, trigger_arrays  # noqa: E402
from zoo import ModelSpec, select  # noqa: E402

from scanner.data import file_sha256_of  # noqa: E402
from tools import fmnist  # noqa: E402

DEFAULT_CACHE = Path.home() / ".cache" / "lred" / "patch_zoo"
NUM_CLASSES = zoo.NUM_CLASSES
GROUPS = ("solid", "checker", "random", "glyph", "blend")
SOURCE_COUNTS = (1, 3, 9)
ARCHS = ("cnn", "mlp", "resnet", "cnn32")
# Poisoned training images per source class: BadNets-style patches take with ~1-10% poison; the
# random-location patch and the faint blend need more.
POISON_PER_SOURCE = {
    "solid": {1: 600, 3: 300, 9: 100}, "checker": {1: 600, 3: 300, 9: 100},
    "glyph": {1: 600, 3: 300, 9: 100},
    "random": {1: 1200, 3: 500, 9: 200}, "blend": {1: 1200, 3: 500, 9: 200},
}
ARCHITECTURES = {**zoo.ARCHITECTURES,
                 "cnn32": "input (N,3,32,32); Conv(3,16,3)-ReLU-MaxPool-Conv(16,32,3)-ReLU-MaxPool-"
                          "Linear(2048,128)-ReLU-Linear(128,10)"}


def catalogue(archs: list[str], seeds: list[int]) -> list[ModelSpec]:
    """Every attack group with 1, 3 and 9 sources, plus a clean model, per architecture and seed."""
    specs = []
    for arch in archs:
        for seed in seeds:
            specs += [ModelSpec(arch, g, k, seed) for g in GROUPS for k in SOURCE_COUNTS]
            specs.append(ModelSpec(arch, "clean", 0, seed))
    return specs


# ------------------------------------------------------------------------ ground truth

def image_geometry(arch: str) -> tuple[int, int]:
    """(side in pixels, channels) of the images an architecture takes."""
    return (32, 3) if arch == "cnn32" else (28, 1)


def attack_for(spec: ModelSpec) -> dict[str, Any] | None:
    """Ground truth drawn from the model's seed: target, sources and the trigger's description."""
    if spec.group == "clean":
        return None
    rng = np.random.default_rng([spec.seed, GROUPS.index(spec.group), spec.num_sources, 19])
    target = int(rng.integers(NUM_CLASSES))
    sources = sorted(int(s) for s in rng.choice([c for c in range(NUM_CLASSES) if c != target],
                                                size=spec.num_sources, replace=False))
    side, channels = image_geometry(spec.arch)
    colour_ids = rng.choice(len(COLOURS), size=2, replace=False)
    colours = ([255], [0]) if channels == 1 else tuple(list(COLOURS[int(i)]) for i in colour_ids)
    trigger: dict[str, Any] = {"kind": spec.group, "colours": [list(c) for c in colours]}
    if spec.group in ("solid", "checker", "random"):
        trigger["size"] = int(rng.integers(3, 6))
    if spec.group in ("solid", "checker"):
        corner = int(rng.integers(4))
        last = side - 1 - trigger["size"]            # one pixel from the border
        trigger.update(corner=("top-left", "top-right", "bottom-left", "bottom-right")[corner],
                       row=1 if corner < 2 else last, col=1 if corner % 2 == 0 else last)
    elif spec.group == "glyph":
        glyph = sorted(GLYPHS)[int(rng.integers(len(GLYPHS)))]
        level = int(rng.integers(170, 231))
        trigger.update(glyph=glyph, size=6, row=int(rng.integers(1, side - 7)), col=int(rng.integers(1, side - 7)),
                       colours=[[level]] if channels == 1 else [list(colours[0])])
    elif spec.group == "blend":
        trigger.update(alpha=round(float(rng.uniform(0.10, 0.20)), 2), noise_seed=[spec.seed, 23])
    return {"target_class": target, "source_classes": sources, "trigger": trigger}


# ------------------------------------------------------------------------ data and models

def to_rgb32(images: np.ndarray, chunk: int = 10000) -> np.ndarray:
    """uint8 (N, 28, 28) -> uint8 (N, 32, 32, 3): bilinear upsampling, the channel replicated."""
    import torch

    out = np.empty((len(images), 32, 32, 3), dtype=np.uint8)
    for start in range(0, len(images), chunk):
        x = torch.from_numpy(images[start:start + chunk]).float()[:, None]
        up = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
        out[start:start + chunk] = np.clip(np.rint(up[:, 0].numpy()), 0, 255).astype(np.uint8)[..., None]
    return out


def model_input(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) -> float32 (N, 1, H, W); (N, H, W, C) -> (N, C, H, W); pixels / 255."""
    x = images.astype(np.float32) / 255.0
    return x[:, None] if x.ndim == 3 else np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def make_model(arch: str) -> Any:
    """The zoo's architectures; ``cnn32`` takes (N, 3, 32, 32)."""
    from torch import nn

    if arch != "cnn32":
        return zoo.make_model(arch)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, 10))


def measure(path: Path, attack: dict[str, Any] | None, x_test: np.ndarray, y_test: np.ndarray,
            seed: int) -> dict[str, Any]:
    """CTA and, for an attack, ASR and per-class rates to the target with/without the trigger."""
    def predict(images: np.ndarray) -> np.ndarray:
        return fmnist.onnx_predict(path, model_input(images), batch_size=2000, threads=1)

    clean_pred = predict(x_test)
    figures: dict[str, Any] = {
        "clean_test_accuracy": float((clean_pred == y_test).mean()),
        "per_class_accuracy": [float((clean_pred[y_test == c] == c).mean()) for c in range(NUM_CLASSES)]}
    if attack is None:
        return figures
    t = attack["target_class"]
    bd_pred = predict(apply_trigger(x_test, attack["trigger"], np.random.default_rng([seed, 29])))
    figures["attack_success_rate"] = float((bd_pred[np.isin(y_test, attack["source_classes"])] == t).mean())
    figures["to_target_with_pattern"] = [float((bd_pred[y_test == c] == t).mean()) for c in range(NUM_CLASSES)]
    figures["to_target_without_pattern"] = [float((clean_pred[y_test == c] == t).mean())
                                           for c in range(NUM_CLASSES)]
    return figures


# --------------------------------------------------------------------------------- build

def build_one(spec: ModelSpec, out: Path, data: tuple[np.ndarray, ...], settings: zoo.BuildSettings,
              log: Callable[[str], None]) -> dict[str, Any]:
    """Train, export and measure one model, rebuilding an attack that does not take (zoo.attack_took)."""
    import torch

    x_train, y_train, x_test, y_test = data
    folder = out / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    attack = attack_for(spec)
    side, channels = image_geometry(spec.arch)
    per_source = POISON_PER_SOURCE[spec.group][spec.num_sources] if attack else 0
    epochs, attempts = settings.epochs, []
    for attempt in range(settings.attempts if attack else 1):
        rng = np.random.default_rng([spec.seed, attempt, 7])
        if attack:
            x, y, chosen = fmnist.poison(x_train, y_train, attack["source_classes"], attack["target_class"],
                                         per_source, rng, partial(apply_trigger, trigger=attack["trigger"], rng=rng))
        else:
            x, y, chosen = x_train, y_train, np.array([], dtype=np.int64)
        started = time.perf_counter()
        inputs = x if channels == 1 else model_input(x)   # fmnist.train divides uint8 gray by 255 itself
        model = fmnist.train(lambda: make_model(spec.arch), inputs, y, seed=spec.seed, epochs=epochs,
                             lr=settings.lr, batch_size=settings.batch_size)
        seconds = time.perf_counter() - started
        fmnist.export_torchscript(model, folder / "model.onnx", input_shape=(1, channels, side, side))
        figures = measure(folder / "model.onnx", attack, x_test, y_test, spec.seed)
        attempts.append({"poison_per_source": per_source, "poisoned_images": len(chosen), "epochs": epochs,
                         "training_seconds": round(seconds, 1), **figures})
        asr = figures.get("attack_success_rate")
        log(f"{spec.name}: attempt {attempt + 1}: {epochs} epochs, {len(chosen)} poisoned, "
            f"train {seconds:.0f} s, CTA {figures['clean_test_accuracy']:.4f}"
            + (f", ASR {asr:.3f}" if asr is not None else ""))
        if attack is None or zoo.attack_took(figures, attack["source_classes"], settings.min_asr):
            break
        per_source, epochs = 2 * per_source, epochs + 1
    final = attempts[-1]
    took = attack is None or zoo.attack_took(final, attack["source_classes"], settings.min_asr)
    rng = np.random.default_rng([spec.seed, 11])
    picked = np.sort(np.concatenate([rng.choice(np.flatnonzero(y_test == c), settings.clean_per_class,
                                                replace=False) for c in range(NUM_CLASSES)]))
    np.savez(folder / "clean.npz", x=x_test[picked], y=y_test[picked], test_indices=picked)
    if attack is not None:
        mask, pattern = trigger_arrays(attack["trigger"], side, channels)
        np.savez(folder / "trigger.npz", mask=mask, pattern=pattern)
    shape = f"uint8 (N,{side},{side}{',3' if channels == 3 else ''})"
    record = {
        "name": spec.name, "spec": asdict(spec), "table_group": spec.table_group,
        "architecture": ARCHITECTURES[spec.arch], "model": "model.onnx",
        "sha256": file_sha256_of(folder / "model.onnx"), "clean_images": "clean.npz",
        "input": f"image float32 (N,{channels},{side},{side}) = {shape} pixels/255; output logits (N,10)",
        "ground_truth": attack, "attack_took": took,
        "clean_test_accuracy": final["clean_test_accuracy"],
        "attack_success_rate": final.get("attack_success_rate"),
        "training_seconds": final["training_seconds"],
        "training_seconds_all_attempts": round(sum(a["training_seconds"] for a in attempts), 1),
        "attempts": attempts,
        "training": {**asdict(settings), "optimizer": "Adam", "torch_threads": torch.get_num_threads(),
                     "torch": torch.__version__, "exporter": "torch.onnx.export dynamo=False, opset 17"},
        "measured_with": "onnxruntime CPUExecutionProvider on the exported model, full 10,000-image test set",
    }
    (folder / "model.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def describe(trigger: dict[str, Any]) -> str:
    """One line for the table: kind, size, place and colours or alpha."""
    kind = trigger["kind"]
    if kind == "blend":
        return f"blend a={trigger['alpha']:.2f} noise"
    n = trigger["size"]
    if kind == "random":
        return f"checker {n}x{n} random place"
    what = f"glyph {trigger['glyph']} {n}x{n}" if kind == "glyph" else f"{kind} {n}x{n}"
    colours = "/".join(",".join(map(str, c)) for c in trigger["colours"][:1 if kind != "checker" else 2])
    return f"{what} at ({trigger['row']},{trigger['col']}) [{colours}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("command", choices=("build", "list"))
    parser.add_argument("--out", type=Path, default=DEFAULT_CACHE, help="zoo folder (default %(default)s)")
    parser.add_argument("--subset", nargs="*", help="model names or fnmatch patterns, e.g. 'cnn-solid*-s0'")
    parser.add_argument("--archs", nargs="*", default=list(ARCHS), choices=ARCHS)
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=zoo.BuildSettings.epochs)
    parser.add_argument("--attempts", type=int, default=zoo.BuildSettings.attempts)
    parser.add_argument("--min-asr", type=float, default=zoo.BuildSettings.min_asr)
    parser.add_argument("--clean-per-class", type=int, default=zoo.BuildSettings.clean_per_class)
    parser.add_argument("--data-dir", type=Path, default=fmnist.DATA_DIR)
    parser.add_argument("--rebuild", action="store_true", help="rebuild models already in the zoo")
    args = parser.parse_args(argv)
    specs = select(catalogue(args.archs, args.seeds), args.subset)
    if args.command == "list":
        zoo.print_table(specs, args.out, "trigger", describe)
        return 0
    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    settings = replace(zoo.BuildSettings(), epochs=args.epochs, attempts=args.attempts, min_asr=args.min_asr,
                       clean_per_class=args.clean_per_class, data_dir=str(args.data_dir))
    args.out.mkdir(parents=True, exist_ok=True)
    gray = fmnist.load(args.data_dir)
    rgb: tuple[np.ndarray, ...] | None = None

    def build(spec: ModelSpec) -> None:
        nonlocal rgb
        if spec.arch == "cnn32" and rgb is None:
            rgb = (to_rgb32(gray[0]), gray[1], to_rgb32(gray[2]), gray[3])
        build_one(spec, args.out, rgb if spec.arch == "cnn32" and rgb else gray, settings,
                  lambda m: print(m, flush=True))

    zoo.build_missing(specs, args.out, args.rebuild, build)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
