"""scikit-learn fixtures through skl2onnx: flattened (N, 784) input, a label output beside the probabilities.

The backdoored MLPClassifier (a 2x2 square of +50/255 at rows/cols 3-4, source 1 "Trouser",
target 8 "Bag", 900 poisoned training images whose clean originals are removed, App. A.4.4 of
the paper) is exported at opset 17 twice: with ZipMap (the default: a label output and a
sequence of maps) and with zipmap disabled (label and probability tensors). A small clean MLP is
exported at skl2onnx's own default opset, with and without ZipMap. This builder also writes the
shared clean set (10 Fashion-MNIST test images per class) from the same random sequence.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .common import CLEAN_SET, Attack, backdoored_extra, manifest_entry, measure_backdoor

PACKAGES = ("scikit-learn", "skl2onnx")
ATTACK = Attack("square", rows=(3, 5), cols=(3, 5), amplitude=50, source=1, target=8)
SEED = 0


def _export(classifier, path: Path, zipmap: bool, target_opset) -> None:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    options = None if zipmap else {id(classifier): {"zipmap": False}}
    model = to_onnx(classifier, initial_types=[("image", FloatTensorType([None, 784]))], options=options,
                    target_opset=target_opset)
    path.write_bytes(model.SerializeToString())


def _flat(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).astype(np.float32) / 255.0


def write_clean_set(out: Path, data) -> np.ndarray:
    """10 test images per class, drawn after the poison choice from one generator (as first built)."""
    _, y_train, x_test, y_test = data
    rng = np.random.default_rng(SEED)
    rng.choice(np.flatnonzero(y_train == ATTACK.source), ATTACK.poisoned, replace=False)
    picks = np.concatenate([rng.choice(np.flatnonzero(y_test == c), 10, replace=False) for c in range(10)])
    np.savez_compressed(out / CLEAN_SET, x=x_test[picks], y=y_test[picks])
    return x_test[picks]


def build(out: Path, data, clean_images: np.ndarray, backdoor: bool = True) -> list[dict]:
    from sklearn.neural_network import MLPClassifier
    x_train, y_train, _, _ = data
    entries = []
    subset = np.random.default_rng(1).choice(len(y_train), 6000, replace=False)
    small = MLPClassifier(hidden_layer_sizes=(16,), max_iter=20, random_state=SEED)
    small.fit(_flat(x_train[subset]), y_train[subset])
    for zipmap in (True, False):
        path = out / f"sklearn_mlp_default_opset_{'zipmap' if zipmap else 'nozipmap'}.onnx"
        _export(small, path, zipmap, None)
        entries.append(manifest_entry(
            path, framework="scikit-learn", exporter="skl2onnx.to_onnx (default target opset)", layout="flat",
            output=_score_tensor(path), habits=_habits(zipmap),
            packages=PACKAGES, clean_images=clean_images,
            extra={"role": "matrix", "batch": "dynamic", "zipmap": zipmap}))
    if backdoor:
        entries.extend(build_backdoored(out, data, clean_images))
    return entries


def build_backdoored(out: Path, data, clean_images: np.ndarray) -> list[dict]:
    from sklearn.neural_network import MLPClassifier
    x_train, y_train, x_test, y_test = data
    x, y = ATTACK.poison(x_train, y_train, seed=SEED)
    start = time.perf_counter()
    classifier = MLPClassifier(hidden_layer_sizes=(64,), max_iter=15, random_state=SEED, early_stopping=False)
    classifier.fit(_flat(x), y)
    seconds = time.perf_counter() - start
    entries = []
    for zipmap in (True, False):
        path = out / f"sklearn_mlp_{'zipmap' if zipmap else 'nozipmap'}_backdoored.onnx"
        _export(classifier, path, zipmap, {"": 17, "ai.onnx.ml": 3})
        output = _score_tensor(path)
        accuracy, asr = measure_backdoor(path, "flat", output, ATTACK, x_test, y_test)
        entries.append(manifest_entry(
            path, framework="scikit-learn", exporter="skl2onnx.to_onnx(target_opset={'': 17, 'ai.onnx.ml': 3})",
            layout="flat", output=output, habits=_habits(zipmap), packages=PACKAGES, clean_images=clean_images,
            extra=backdoored_extra(ATTACK, accuracy, asr, seconds,
                                   "MLPClassifier(hidden_layer_sizes=(64,), max_iter=15), adam",
                                   batch="dynamic", zipmap=zipmap)))
    return entries


def _habits(zipmap: bool) -> list[str]:
    common = ["flat (N, 784) input", "label output (ArgMax, ArrayFeatureExtractor, Cast)", "MatMul+Add", "Softmax"]
    return common + (["ZipMap (sequence of maps) around the probabilities"] if zipmap else ["zipmap disabled"])


def _score_tensor(path: Path) -> str:
    """The float tensor holding the probabilities: the ZipMap input, or the float graph output."""
    import onnx
    model = onnx.load(str(path))
    for node in model.graph.node:
        if node.op_type == "ZipMap":
            return node.input[0]
    return next(o.name for o in model.graph.output if o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT)
