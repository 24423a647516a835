"""A model zoo for reproducing the L-RED comparison (Tables 2 and 3) on Fashion-MNIST.

The attack groups of the paper (Sec. 4.1, App. A.4) and of its Fashion-MNIST/MNIST runs
(App. A.7), adapted to 28x28 grayscale, each with 1, 3 and 9 source classes:

    G  global sparse pattern: one pixel of every 2x2 window (a stride-2 lattice at a random
       offset) raised by 16/255 (the paper's 2/255 does not take in a short schedule)
    L  local 2x2 square raised by 50/255 at a random place (App. A.4.1)
    P  single pixel raised by 50/255 near the bottom-right corner (App. A.7, FMNIST)
    C  6x6 chessboard patch, +25/255 on alternate pixels, at the bottom-right corner (App. A.7, MNIST)

plus clean models. Backdoor training images are source-class training images with the pattern
added (uint8 arithmetic, clipped to 0..255), labelled with the target; their clean originals
are removed, so the training set stays at 60,000 images (App. A.4.4). Poisoned images per
source follow App. A.4.3. Targets, sources and pattern positions come from the model's seed.

Every model is exported to ONNX (TorchScript exporter, opset 17, dynamic batch) and measured
with onnxruntime on the exported file: clean test accuracy (CTA) and attack success rate (ASR,
source-class test images with the pattern classified as the target). An attack whose ASR is
below --min-asr is rebuilt with twice the poison and one more epoch (at most --attempts
builds) and never counted as a success. So is one that also sends more than 1 - min-asr of the
clean source-class test images to the target without the pattern: that model has learnt to move
the source class (label flipping, e.g. when every training image of the class was poisoned),
not the pattern, so there is no backdoor pattern to find. Per model the cache holds model.onnx, clean.npz
(clean test images per class: x uint8 (N,28,28), y) and model.json (ground truth and figures);
manifest.json gathers every model.json.

    python benchmarks/zoo.py build --out DIR [--subset PATTERN ...] [--archs cnn mlp resnet] [--seeds 0 1]
    python benchmarks/zoo.py list [--subset PATTERN ...]
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tools.fmnist
from scanner.data import file_sha256_of  # noqa: E402
from tools import fmnist  # noqa: E402

DATA_DIR = fmnist.DATA_DIR
DEFAULT_CACHE = Path.home() / ".cache" / "lred" / "zoo"
NUM_CLASSES = 10
GROUPS = ("G", "L", "P", "C")
SOURCE_COUNTS = (1, 3, 9)
# Backdoor training images per source class, by group and number of sources (App. A.4.3:
# G 150/50/15, L 900/300/100; P as L, App. A.7 uses 900 for its single source; C after
# App. A.7's 500 per source for three sources). G is 8x the paper's counts and amplitude:
# with the short schedule (3 epochs) the paper's 2/255 and 150 images gave ASR 0.000, and so
# did 4/255 and 8/255 with 600 images and 16/255 with 150 (docs/benchmarks.md).
POISON_PER_SOURCE = {
    "G": {1: 1200, 3: 400, 9: 120},
    "L": {1: 900, 3: 300, 9: 100},
    "P": {1: 900, 3: 300, 9: 100},
    "C": {1: 500, 3: 300, 9: 100},
}
# Pattern amplitudes in 8-bit levels (x/255); the paper's G is 2 (see above).
AMPLITUDE = {"G": 16, "L": 50, "P": 50, "C": 25}
ARCHS = ("cnn", "mlp", "resnet")


# ----------------------------------------------------------------------------- catalogue

@dataclass(frozen=True)
class ModelSpec:
    """One zoo model: architecture, attack group ('clean' or G/L/P/C), sources count, seed."""

    arch: str
    group: str
    num_sources: int
    seed: int

    @property
    def name(self) -> str:
        kind = "clean" if self.group == "clean" else f"{self.group}{self.num_sources}"
        return f"{self.arch}-{kind}-s{self.seed}"

    @property
    def table_group(self) -> str:
        """Column of Table 2: 'G-1' ... 'C-9', or 'clean'."""
        return "clean" if self.group == "clean" else f"{self.group}-{self.num_sources}"


def catalogue(archs: list[str], seeds: list[int]) -> list[ModelSpec]:
    specs = []
    for arch in archs:
        for seed in seeds:
            specs += [ModelSpec(arch, g, k, seed) for g in GROUPS for k in SOURCE_COUNTS]
            specs.append(ModelSpec(arch, "clean", 0, seed))
    return specs


def select(specs: list[ModelSpec], patterns: list[str] | None) -> list[ModelSpec]:
    """Models whose name matches any of the fnmatch ``patterns`` (all when none are given)."""
    if not patterns:
        return specs
    return [s for s in specs if any(fnmatch.fnmatchcase(s.name, p) for p in patterns)]


# ------------------------------------------------------------------------------- attacks

def attack_for(spec: ModelSpec, amplitude_g: int) -> dict | None:
    """Ground truth drawn from the model's seed: target, sources and the pattern's geometry."""
    if spec.group == "clean":
        return None
    rng = np.random.default_rng([spec.seed, GROUPS.index(spec.group), spec.num_sources])
    target = int(rng.integers(NUM_CLASSES))
    others = [c for c in range(NUM_CLASSES) if c != target]
    sources = sorted(int(s) for s in rng.choice(others, size=spec.num_sources, replace=False))
    if spec.group == "G":
        row, col = (int(v) for v in rng.integers(2, size=2))
        pattern = {"kind": "global_lattice", "stride": 2, "row_offset": row, "col_offset": col,
                   "amplitude_levels": amplitude_g}
    elif spec.group == "L":
        row, col = (int(v) for v in rng.integers(27, size=2))
        pattern = {"kind": "square", "row": row, "col": col, "size": 2, "amplitude_levels": AMPLITUDE["L"]}
    elif spec.group == "P":
        row, col = (int(v) for v in rng.integers(24, 28, size=2))
        pattern = {"kind": "single_pixel", "row": row, "col": col, "amplitude_levels": AMPLITUDE["P"]}
    else:
        pattern = {"kind": "chessboard", "row": 22, "col": 22, "size": 6, "amplitude_levels": AMPLITUDE["C"]}
    return {"target_class": target, "source_classes": sources, "pattern": pattern}


def pattern_levels(pattern: dict) -> np.ndarray:
    """The additive pattern as int16 (28, 28) in 8-bit levels."""
    v = np.zeros((28, 28), dtype=np.int16)
    a = pattern["amplitude_levels"]
    if pattern["kind"] == "global_lattice":
        v[pattern["row_offset"]::2, pattern["col_offset"]::2] = a
    elif pattern["kind"] in ("square", "single_pixel"):
        size = pattern.get("size", 1)
        v[pattern["row"]:pattern["row"] + size, pattern["col"]:pattern["col"] + size] = a
    elif pattern["kind"] == "chessboard":
        r, c, n = pattern["row"], pattern["col"], pattern["size"]
        ii, jj = np.indices((n, n))
        v[r:r + n, c:c + n] = np.where((ii + jj) % 2 == 0, a, 0)
    else:
        raise ValueError(f"unknown pattern kind {pattern['kind']!r}")
    return v


embed = fmnist.embed  # x + v in 8-bit arithmetic, clipped to 0..255 (App. A.4)


def poison(x_u8: np.ndarray, y: np.ndarray, attack: dict, per_source: int, rng: np.random.Generator):
    """Replace ``per_source`` images of every source class by their backdoored copies labelled
    with the target (originals removed, App. A.4.4). Returns (x, y, chosen indices)."""
    levels = pattern_levels(attack["pattern"])
    return fmnist.poison(x_u8, y, attack["source_classes"], attack["target_class"], per_source, rng,
                         lambda images: embed(images, levels))


def load_fashion_mnist(data_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return fmnist.load(data_dir)


# -------------------------------------------------------------------------------- models

class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.conv2(torch.relu(self.conv1(x))))


def make_model(arch: str) -> nn.Module:
    """Input (N, 1, 28, 28) in [0, 1], output logits (N, 10)."""
    if arch == "cnn":
        return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))
    if arch == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                             nn.Linear(128, 10))
    if arch == "resnet":
        return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), ResidualBlock(16), nn.MaxPool2d(2),
                             nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), ResidualBlock(32), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(32 * 7 * 7, 10))
    raise ValueError(f"unknown architecture {arch!r}")


ARCHITECTURES = {
    "cnn": "Conv(1,16,3)-ReLU-MaxPool-Conv(16,32,3)-ReLU-MaxPool-Linear(1568,128)-ReLU-Linear(128,10)",
    "mlp": "Linear(784,256)-ReLU-Linear(256,128)-ReLU-Linear(128,10)",
    "resnet": "Conv(1,16,3)-ReLU-Res(16)-MaxPool-Conv(16,32,3)-ReLU-Res(32)-MaxPool-Linear(1568,10); "
              "Res(c) = relu(x + Conv(c,c,3)(relu(Conv(c,c,3)(x))))",
}


def train(arch: str, x_u8: np.ndarray, y: np.ndarray, *, seed: int, epochs: int, lr: float,
          batch_size: int) -> nn.Module:
    """Adam on cross-entropy, seeded shuffling (``fmnist.train``); one torch thread (the CPU is shared)."""
    return fmnist.train(lambda: make_model(arch), x_u8, y, seed=seed, epochs=epochs, lr=lr, batch_size=batch_size)


def export(model: nn.Module, path: Path) -> None:
    """TorchScript exporter (dynamo=False), opset 17, dynamic batch axis, weights embedded."""
    fmnist.export_torchscript(model, path)


def onnx_predict(path: Path, x_u8: np.ndarray) -> np.ndarray:
    """Predicted classes of uint8 images (N, 28, 28): onnxruntime, one thread, batches of 2000."""
    return fmnist.onnx_predict(path, fmnist.to_float(x_u8), batch_size=2000, threads=1)


def measure(path: Path, attack: dict | None, x_test: np.ndarray, y_test: np.ndarray) -> dict:
    """CTA and, for an attack, ASR and per-class rates to the target with/without the pattern."""
    clean_pred = onnx_predict(path, x_test)
    figures = {"clean_test_accuracy": float((clean_pred == y_test).mean()),
               "per_class_accuracy": [float((clean_pred[y_test == c] == c).mean()) for c in range(NUM_CLASSES)]}
    if attack is None:
        return figures
    t = attack["target_class"]
    bd_pred = onnx_predict(path, embed(x_test, pattern_levels(attack["pattern"])))
    src = np.isin(y_test, attack["source_classes"])
    figures["attack_success_rate"] = float((bd_pred[src] == t).mean())
    figures["to_target_with_pattern"] = [float((bd_pred[y_test == c] == t).mean()) for c in range(NUM_CLASSES)]
    figures["to_target_without_pattern"] = [float((clean_pred[y_test == c] == t).mean())
                                           for c in range(NUM_CLASSES)]
    return figures


# --------------------------------------------------------------------------------- build

@dataclass(frozen=True)
class BuildSettings:
    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 128
    min_asr: float = 0.8
    attempts: int = 3
    clean_per_class: int = 16
    amplitude_g: int = AMPLITUDE["G"]
    data_dir: str = str(DATA_DIR)


def attack_took(figures: dict, sources: list[int], min_asr: float) -> bool:
    """ASR at least ``min_asr`` and, without the pattern, at most 1 - min_asr of the source
    classes' clean test images classified as the target (a pattern-triggered backdoor, not a
    relabelled class)."""
    without = float(np.mean([figures["to_target_without_pattern"][s] for s in sources]))
    return figures["attack_success_rate"] >= min_asr and without <= 1.0 - min_asr


def build_one(spec: ModelSpec, out: Path, data, settings: BuildSettings, log) -> dict:
    """Train, export and measure one model (rebuilding an attack that does not take)."""
    x_train, y_train, x_test, y_test = data
    folder = out / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    attack = attack_for(spec, settings.amplitude_g)
    per_source = POISON_PER_SOURCE[spec.group][spec.num_sources] if attack else 0
    epochs = settings.epochs
    attempts = []
    for attempt in range(settings.attempts if attack else 1):
        rng = np.random.default_rng([spec.seed, attempt, 7])
        x, y, chosen = (poison(x_train, y_train, attack, per_source, rng) if attack
                        else (x_train, y_train, np.array([], dtype=np.int64)))
        started = time.perf_counter()
        model = train(spec.arch, x, y, seed=spec.seed, epochs=epochs, lr=settings.lr,
                      batch_size=settings.batch_size)
        seconds = time.perf_counter() - started
        export(model, folder / "model.onnx")
        figures = measure(folder / "model.onnx", attack, x_test, y_test)
        attempts.append({"poison_per_source": per_source, "poisoned_images": len(chosen), "epochs": epochs,
                         "training_seconds": round(seconds, 1), **figures})
        asr = figures.get("attack_success_rate")
        log(f"{spec.name}: attempt {attempt + 1}: {epochs} epochs, {len(chosen)} poisoned, "
            f"train {seconds:.0f} s, CTA {figures['clean_test_accuracy']:.4f}"
            + (f", ASR {asr:.3f}" if asr is not None else ""))
        if attack is None or attack_took(figures, attack["source_classes"], settings.min_asr):
            break
        per_source, epochs = 2 * per_source, epochs + 1
    final = attempts[-1]
    succeeded = attack is None or attack_took(final, attack["source_classes"], settings.min_asr)
    rng = np.random.default_rng([spec.seed, 11])
    picked = np.sort(np.concatenate([rng.choice(np.flatnonzero(y_test == c), settings.clean_per_class,
                                                replace=False) for c in range(NUM_CLASSES)]))
    np.savez(folder / "clean.npz", x=x_test[picked], y=y_test[picked], test_indices=picked)
    record = {
        "name": spec.name, "spec": asdict(spec), "table_group": spec.table_group,
        "architecture": ARCHITECTURES[spec.arch], "model": "model.onnx",
        "sha256": file_sha256_of(folder / "model.onnx"),
        "clean_images": "clean.npz", "input": "image float32 (N,1,28,28) = uint8/255; output logits (N,10)",
        "ground_truth": attack, "attack_took": succeeded,
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


def write_manifest(out: Path, dataset: str = "Fashion-MNIST") -> dict:
    models = [json.loads(p.read_text()) for p in sorted(out.glob("*/model.json"))]
    manifest = {"dataset": dataset, "models": models}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def build_missing(specs: Sequence[Any], out: Path, rebuild: bool, build: Callable[[Any], object],
                  dataset: str = "Fashion-MNIST") -> None:
    """``build(spec)`` every model not yet in ``out`` (all with ``rebuild``), rewriting the
    manifest after each one (the zoos of zoo.py, patch_zoo.py and composite_zoo.py)."""
    for spec in specs:
        if (out / spec.name / "model.json").exists() and not rebuild:
            print(f"{spec.name}: already built", flush=True)
            continue
        build(spec)
        write_manifest(out, dataset)
    write_manifest(out, dataset)


def print_table(specs: list[ModelSpec], out: Path, column: str = "pattern",
                describe_trigger: Callable[[dict], str] | None = None) -> None:
    """Markdown: ground truth, the attack's ``column`` (the ground truth's entry of that name, as
    ``describe_trigger`` words it; default ``describe``), CTA, ASR and training cost of every model
    (built or not)."""
    words = describe_trigger or describe
    print(f"| model | group | target <- sources | {column} | poisoned | epochs | CTA | ASR | took | "
          "train s (final) | train s (all attempts) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for spec in specs:
        path = out / spec.name / "model.json"
        if not path.exists():
            print(f"| {spec.name} | {spec.table_group} | not built |" + " |" * 8)
            continue
        m = json.loads(path.read_text())
        truth, final = m["ground_truth"], m["attempts"][-1]
        gt = "–" if truth is None else f"{truth['target_class']} <- {','.join(map(str, truth['source_classes']))}"
        pattern = "–" if truth is None else words(truth[column])
        asr = "–" if m["attack_success_rate"] is None else f"{m['attack_success_rate']:.3f}"
        attempts = f" ({len(m['attempts'])} builds)" if len(m["attempts"]) > 1 else ""
        print(f"| {spec.name} | {spec.table_group} | {gt} | {pattern} | {final['poisoned_images']} | "
              f"{final['epochs']} | {m['clean_test_accuracy']:.4f} | {asr} | "
              f"{'yes' if m['attack_took'] else 'no'}{attempts} | {m['training_seconds']:.0f} | "
              f"{m['training_seconds_all_attempts']:.0f} |")


def describe(pattern: dict) -> str:
    a = f"+{pattern['amplitude_levels']}/255"
    if pattern["kind"] == "global_lattice":
        return f"lattice offset ({pattern['row_offset']},{pattern['col_offset']}) {a}"
    if pattern["kind"] == "chessboard":
        return f"chessboard {pattern['size']}x{pattern['size']} at ({pattern['row']},{pattern['col']}) {a}"
    size = pattern.get("size", 1)
    return f"{size}x{size} at ({pattern['row']},{pattern['col']}) {a}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("build", "list"))
    parser.add_argument("--out", type=Path, default=DEFAULT_CACHE, help="zoo folder (default %(default)s)")
    parser.add_argument("--subset", nargs="*", help="model names or fnmatch patterns, e.g. 'cnn-*-s0'")
    parser.add_argument("--archs", nargs="*", default=list(ARCHS), choices=ARCHS)
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=BuildSettings.epochs)
    parser.add_argument("--attempts", type=int, default=BuildSettings.attempts)
    parser.add_argument("--min-asr", type=float, default=BuildSettings.min_asr)
    parser.add_argument("--amplitude-g", type=int, default=BuildSettings.amplitude_g,
                        help="G pattern amplitude in 8-bit levels (paper: 2)")
    parser.add_argument("--clean-per-class", type=int, default=BuildSettings.clean_per_class)
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--rebuild", action="store_true", help="rebuild models already in the zoo")
    args = parser.parse_args(argv)
    specs = select(catalogue(args.archs, args.seeds), args.subset)
    if args.command == "list":
        print_table(specs, args.out)
        return 0
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    settings = replace(BuildSettings(), epochs=args.epochs, attempts=args.attempts, min_asr=args.min_asr,
                       amplitude_g=args.amplitude_g, clean_per_class=args.clean_per_class,
                       data_dir=str(args.data_dir))
    args.out.mkdir(parents=True, exist_ok=True)
    data = load_fashion_mnist(args.data_dir)
    build_missing(specs, args.out, args.rebuild,
                  lambda spec: build_one(spec, args.out, data, settings, lambda m: print(m, flush=True)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
