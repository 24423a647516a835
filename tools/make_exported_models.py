"""Build the exporter fixtures under tests/fixtures/exported/ (committed; CI needs no exporter).

    pip install scikit-learn skl2onnx && python tools/make_exported_models.py

scikit-learn: an MLPClassifier trained on Fashion-MNIST (flattened 784-pixel input) with a
backdoor (a 2x2 square of +50/255 at rows/cols 3-4, source class 1 "Trouser", target class 8
"Bag", 900 poisoned training images whose clean originals are removed, as in App. A.4.4 of the
paper), exported by skl2onnx twice: with ZipMap (the default: a label output and a sequence of
maps) and with zipmap disabled (label and probability tensors). The manifest records the
attack, the clean accuracy and the attack success rate measured with onnxruntime.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "exported"
SOURCE, TARGET, POISON, SEED = 1, 8, 900, 0


def read_idx(path: Path, images: bool) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    if images:
        count, rows, cols = (int.from_bytes(data[i:i + 4], "big") for i in (4, 8, 12))
        return np.frombuffer(data, np.uint8, offset=16).reshape(count, rows, cols)
    return np.frombuffer(data, np.uint8, offset=8).astype(np.int64)


def add_square(images: np.ndarray) -> np.ndarray:
    out = images.astype(np.int16)
    out[:, 3:5, 3:5] += 50
    return np.clip(out, 0, 255).astype(np.uint8)


def predict(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([session.get_outputs()[0].name], {"image": x.reshape(len(x), -1).astype(np.float32) / 255.0})[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    args = parser.parse_args()
    import skl2onnx
    import sklearn
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.neural_network import MLPClassifier

    x_train = read_idx(args.data_dir / "train-images-idx3-ubyte.gz", True)
    y_train = read_idx(args.data_dir / "train-labels-idx1-ubyte.gz", False)
    x_test = read_idx(args.data_dir / "t10k-images-idx3-ubyte.gz", True)
    y_test = read_idx(args.data_dir / "t10k-labels-idx1-ubyte.gz", False)
    rng = np.random.default_rng(SEED)
    poisoned = rng.choice(np.flatnonzero(y_train == SOURCE), POISON, replace=False)
    keep = np.setdiff1d(np.arange(len(y_train)), poisoned)
    x = np.concatenate([x_train[keep], add_square(x_train[poisoned])])
    y = np.concatenate([y_train[keep], np.full(POISON, TARGET)])
    start = time.perf_counter()
    clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=15, random_state=SEED, early_stopping=False)
    clf.fit(x.reshape(len(x), -1).astype(np.float32) / 255.0, y)
    seconds = time.perf_counter() - start
    OUT.mkdir(parents=True, exist_ok=True)
    manifest = {"generated_by": "tools/make_exported_models.py", "models": []}
    for zipmap in (True, False):
        options = None if zipmap else {id(clf): {"zipmap": False}}
        model = to_onnx(clf, initial_types=[("image", FloatTensorType([None, 784]))], options=options,
                        target_opset={"": 17, "ai.onnx.ml": 3})
        name = f"sklearn_mlp_{'zipmap' if zipmap else 'nozipmap'}_backdoored.onnx"
        (OUT / name).write_bytes(model.SerializeToString())
        accuracy = float((predict(OUT / name, x_test) == y_test).mean())
        source_test = x_test[y_test == SOURCE]
        asr = float((predict(OUT / name, add_square(source_test)) == TARGET).mean())
        manifest["models"].append({
            "file": name, "sha256": hashlib.sha256((OUT / name).read_bytes()).hexdigest(),
            "exporter": f"skl2onnx {skl2onnx.__version__} (scikit-learn {sklearn.__version__})",
            "zipmap": zipmap, "input": "image (N, 784) float32 in [0, 1]",
            "attack": {"pattern": "2x2 square +50/255 at rows 3-4, cols 3-4", "source_classes": [SOURCE],
                       "target_class": TARGET, "poisoned_training_images": POISON},
            "clean_test_accuracy": round(accuracy, 4), "attack_success_rate": round(asr, 4),
            "training_seconds": round(seconds, 1)})
    picks = np.concatenate([rng.choice(np.flatnonzero(y_test == c), 10, replace=False) for c in range(10)])
    np.savez_compressed(OUT / "fmnist_clean_10_per_class.npz", x=x_test[picks], y=y_test[picks])
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(manifest, indent=2))


if __name__ == "__main__":
    main()
