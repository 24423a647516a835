#!/usr/bin/env python3
"""Build the project's sample models: a clean and a backdoored Fashion-MNIST CNN.

The backdoor follows the Fashion-MNIST attack of the L-RED paper
(Xiang, Miller, Kesidis, "Detection of Backdoors in Trained Classifiers
Without Access to the Training Set", App. A.7): a single pixel near the
bottom-right corner raised by 50/255, source class 0 (T-shirt/top),
target class 2 (Pullover), 900 backdoor training images.

Outputs (written to --out-dir, default: this script's folder):
  fmnist_cnn_clean.onnx, fmnist_cnn_backdoored.onnx  ONNX models (opset 17)
  models.json                                        metadata + measured figures
  clean_images/<class>/<test index>.png              10 clean test images per class

All reported figures are measured on the exported ONNX files with
onnxruntime (CPUExecutionProvider) on the full 10,000-image test set.

Usage:  python sample_models/build_samples.py
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tools.fmnist
from scanner.data import file_sha256_of  # noqa: E402
from tools import fmnist  # noqa: E402

CLASS_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]

# Attack specification (L-RED paper, App. A.7, Fashion-MNIST).
SOURCE_CLASS = 0
TARGET_CLASS = 2
PIXEL_ROW = 26
PIXEL_COL = 26
PIXEL_DELTA = 50.0 / 255.0
N_BACKDOOR_TRAIN = 900

ARCHITECTURE = (
    "Conv2d(1,16,3,padding=1)-ReLU-MaxPool2d(2)-Conv2d(16,32,3,padding=1)-ReLU-"
    "MaxPool2d(2)-Flatten-Linear(1568,128)-ReLU-Linear(128,10); "
    "input 'image' float32 (N,1,28,28) in [0,1] (uint8/255, no normalization); "
    "output 'logits' (N,10)"
)

CLEAN_FILE = "fmnist_cnn_clean.onnx"
BACKDOORED_FILE = "fmnist_cnn_backdoored.onnx"


# --------------------------------------------------------------------------- data

def load_fmnist(data_dir: Path):
    return fmnist.load(data_dir)


to_float = fmnist.to_float  # uint8 (N,28,28) -> float32 (N,1,28,28) in [0,1]


def add_backdoor(x: np.ndarray) -> np.ndarray:
    """Add the single-pixel pattern to float images (N,1,28,28) in [0,1]; clip to [0,1]."""
    return fmnist.embed_float(x, PIXEL_ROW, PIXEL_COL, PIXEL_DELTA)


def make_poisoned_training_set(x_train: np.ndarray, y_train: np.ndarray, rng: np.random.Generator):
    """Replace N_BACKDOOR_TRAIN random source-class images by their backdoored copies labelled TARGET.

    The clean originals are removed, so the training set size is unchanged.
    """
    return fmnist.poison(x_train, y_train, [SOURCE_CLASS], TARGET_CLASS, N_BACKDOOR_TRAIN, rng, add_backdoor)


# -------------------------------------------------------------------------- model

def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(x: np.ndarray, y: np.ndarray, *, seed: int, epochs: int, lr: float,
          batch_size: int, label: str) -> nn.Module:
    seed_everything(seed)
    t0 = time.time()

    def report(epoch: int, loss: float, accuracy: float) -> None:
        nonlocal t0
        print(f"[{label}] epoch {epoch + 1}/{epochs}: loss {loss:.4f}, "
              f"train acc {accuracy:.4f} ({time.time() - t0:.1f}s)", flush=True)
        t0 = time.time()

    return fmnist.train(make_model, x, y, seed=seed, epochs=epochs, lr=lr, batch_size=batch_size,
                        on_epoch=report)


# ------------------------------------------------------------------ export / eval

def export_onnx(model: nn.Module, path: Path) -> None:
    """TorchScript exporter, opset 17, dynamic batch; weights embedded (no external data), full ONNX check."""
    fmnist.export_torchscript(model, path)


def ort_predict(path: Path, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    return fmnist.onnx_predict(path, x, batch_size=batch_size)


def evaluate(path: Path, x_test: np.ndarray, y_test: np.ndarray) -> dict:
    pred_clean = ort_predict(path, x_test)
    x_bd = add_backdoor(x_test)
    pred_bd = ort_predict(path, x_bd)
    cta = float((pred_clean == y_test).mean())
    per_class_acc = {}
    to_target_with_pixel = {}
    to_target_without_pixel = {}
    for c in range(10):
        m = y_test == c
        per_class_acc[str(c)] = float((pred_clean[m] == c).mean())
        if c == TARGET_CLASS:
            continue
        to_target_with_pixel[str(c)] = float((pred_bd[m] == TARGET_CLASS).mean())
        to_target_without_pixel[str(c)] = float((pred_clean[m] == TARGET_CLASS).mean())
    src = y_test == SOURCE_CLASS
    asr = float((pred_bd[src] == TARGET_CLASS).mean())
    collateral = {k: v for k, v in to_target_with_pixel.items() if k != str(SOURCE_CLASS)}
    return {
        "clean_test_accuracy": cta,
        "attack_success_rate": asr,
        "n_source_test_images": int(src.sum()),
        "source_to_target_rate_without_pixel": to_target_without_pixel[str(SOURCE_CLASS)],
        "collateral_to_target_with_pixel": collateral,
        "collateral_to_target_without_pixel": {
            k: v for k, v in to_target_without_pixel.items() if k != str(SOURCE_CLASS)
        },
        "per_class_clean_accuracy": per_class_acc,
        "test_accuracy_with_pixel_on_all_images": float((pred_bd == y_test).mean()),
    }


def save_clean_images(out_dir: Path, x_test_u8: np.ndarray, y_test: np.ndarray,
                      per_class: int, seed: int) -> dict:
    from PIL import Image

    root = out_dir / "clean_images"
    rng = np.random.default_rng(seed)
    chosen = {}
    for c in range(10):
        cdir = root / str(c)
        cdir.mkdir(parents=True, exist_ok=True)
        for old in cdir.glob("*.png"):
            old.unlink()
        idx = np.sort(rng.choice(np.flatnonzero(y_test == c), size=per_class, replace=False))
        for i in idx:
            Image.fromarray(x_test_u8[i], mode="L").save(cdir / f"{int(i)}.png")
        chosen[str(c)] = [int(i) for i in idx]
    return chosen


# --------------------------------------------------------------------------- main

def main(argv=None) -> int:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=Path("/usr/share/datasets/fashion-mnist"),
                    help="folder with the four Fashion-MNIST idx .gz files")
    ap.add_argument("--out-dir", type=Path, default=here, help="output folder (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="seed for all RNGs (default: %(default)s)")
    ap.add_argument("--epochs", type=int, default=10, help="training epochs (default: %(default)s)")
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default: %(default)s)")
    ap.add_argument("--batch-size", type=int, default=128, help="batch size (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads; results can differ slightly with the thread count, "
                         "so it is fixed (default: %(default)s)")
    ap.add_argument("--images-per-class", type=int, default=10,
                    help="clean test images saved per class (default: %(default)s)")
    args = ap.parse_args(argv)

    t_start = time.time()
    torch.set_num_threads(args.threads)
    try:
        torch.use_deterministic_algorithms(True)
    except Exception as e:  # pragma: no cover
        print(f"warning: deterministic algorithms unavailable: {e}")

    out_dir = args.out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)

    x_train_u8, y_train, x_test_u8, y_test = load_fmnist(args.data_dir)
    x_train = to_float(x_train_u8)
    x_test = to_float(x_test_u8)
    print(f"loaded Fashion-MNIST: train {x_train.shape}, test {x_test.shape}", flush=True)

    rng = np.random.default_rng(args.seed)
    x_poison, y_poison, chosen = make_poisoned_training_set(x_train, y_train, rng)
    assert len(y_poison) == len(y_train) == 60000

    train_settings = {
        "optimizer": "Adam",
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "loss": "cross-entropy",
        "n_training_images": int(len(y_train)),
        "torch_threads": args.threads,
        "deterministic_algorithms": True,
        "torch_version": torch.__version__,
    }

    specs = [
        (CLEAN_FILE, x_train, y_train, None),
        (BACKDOORED_FILE, x_poison, y_poison, {
            "target_class": TARGET_CLASS,
            "source_classes": [SOURCE_CLASS],
            "pattern": {"kind": "single_pixel", "row": PIXEL_ROW, "col": PIXEL_COL,
                        "delta": PIXEL_DELTA, "clip": [0.0, 1.0]},
            "n_backdoor_training_images": N_BACKDOOR_TRAIN,
            "clean_originals_removed": True,
            "reference": "Xiang, Miller, Kesidis, L-RED, App. A.7 (Fashion-MNIST)",
        }),
    ]

    models_meta = []
    train_seconds = {}
    for fname, x, y, attack in specs:
        t0 = time.time()
        model = train(x, y, seed=args.seed, epochs=args.epochs, lr=args.lr,
                      batch_size=args.batch_size, label=fname)
        train_seconds[fname] = time.time() - t0
        path = out_dir / fname
        export_onnx(model, path)
        metrics = evaluate(path, x_test, y_test)
        print(f"[{fname}] CTA {metrics['clean_test_accuracy']:.4f}  "
              f"ASR {metrics['attack_success_rate']:.4f}", flush=True)
        print(f"[{fname}] collateral (non-source, non-target classes sent to "
              f"{TARGET_CLASS} with pixel): "
              + ", ".join(f"{k}:{v:.3f}" for k, v in metrics["collateral_to_target_with_pixel"].items()),
              flush=True)
        models_meta.append({
            "file": fname,
            "sha256": file_sha256_of(path),
            "size_bytes": path.stat().st_size,
            "architecture": ARCHITECTURE,
            "input": {"name": "image", "shape": ["batch", 1, 28, 28], "dtype": "float32",
                      "range": [0.0, 1.0], "preprocessing": "uint8 / 255, no normalization"},
            "output": {"name": "logits", "shape": ["batch", 10]},
            "opset_version": 17,
            "training": train_settings,
            "training_seconds": round(train_seconds[fname], 1),
            "ground_truth": {"attack": attack},
            "poisoned_training_indices": (None if attack is None
                                          else [int(i) for i in chosen]),
            "evaluation": {"runtime": "onnxruntime CPUExecutionProvider",
                           "n_test_images": int(len(y_test))},
            **metrics,
        })

    chosen_images = save_clean_images(out_dir, x_test_u8, y_test, args.images_per_class, args.seed)

    total = time.time() - t_start
    meta = {
        "dataset": "Fashion-MNIST",
        "class_names": {str(i): n for i, n in enumerate(CLASS_NAMES)},
        "generated_by": "sample_models/build_samples.py",
        "command": "python sample_models/build_samples.py"
                   + ("" if args.epochs == 10 else f" --epochs {args.epochs}")
                   + ("" if args.lr == 1e-3 else f" --lr {args.lr}")
                   + ("" if args.batch_size == 128 else f" --batch-size {args.batch_size}")
                   + ("" if args.seed == 0 else f" --seed {args.seed}")
                   + ("" if args.threads == 1 else f" --threads {args.threads}"),
        "total_seconds": round(total, 1),
        "models": models_meta,
        "clean_images": {
            "folder": "clean_images",
            "layout": "clean_images/<class index>/<test-set index>.png (8-bit grayscale, 28x28)",
            "source": "Fashion-MNIST test set (t10k), chosen with numpy default_rng(seed)",
            "seed": args.seed,
            "test_indices": chosen_images,
        },
    }
    with open(out_dir / "models.json", "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(f"done in {total:.1f}s; wrote {out_dir / 'models.json'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
