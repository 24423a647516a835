"""Keras 3 / TensorFlow fixtures through tf2onnx: NHWC inputs, Transpose-heavy graphs.

Each model is wrapped in a ``tf.function`` with an input signature and converted with
``tf2onnx.convert.from_function``: ``convert.from_keras`` fails on Keras 3 (tensorflow-onnx
issues #2329, #2448; with tf2onnx 1.17 and Keras 3.15 it converted these models too;
from_function works in both).
Habits: BatchNormalization folded into Mul/Add, ReLU6 (Clip), hard_silu, DepthwiseConv2D,
residual Add, ZeroPadding2D (Pad), ``padding="same"`` average pooling (asymmetric pads), Flatten
(Shape/Gather/Slice/Concat/Reshape), GlobalAverage/GlobalMaxPooling (ReduceMean/ReduceMax at
opset 18), Dropout, Dense (MatMul+Add), Softmax, a batch size fixed at 1.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from .common import Attack, backdoored_extra, manifest_entry, measure_backdoor

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
PACKAGES = ("tensorflow", "tensorflow-cpu", "keras", "tf2onnx")
ATTACK = Attack("square", rows=(1, 3), cols=(25, 27), amplitude=50, source=4, target=9)


def _layers():
    import keras
    return keras, keras.layers


def habit_model(head: str):
    """28x28x1 -> 10 softmax scores; ``head`` is "flatten" or "global" (average and max pooling)."""
    keras, L = _layers()
    inputs = keras.Input((28, 28, 1))
    x = L.Conv2D(8, 3, padding="same")(inputs)
    x = L.ReLU(max_value=6.0)(L.BatchNormalization()(x))
    x = L.MaxPooling2D(2)(x)                                                   # 14 x 14
    y = L.DepthwiseConv2D(3, padding="same", activation="hard_silu")(x)
    x = L.Add()([x, L.BatchNormalization()(y)])
    x = L.AveragePooling2D(2, strides=1, padding="same")(L.ZeroPadding2D(1)(x))  # 16 x 16
    x = L.Conv2D(12, 3, strides=2, activation="tanh")(x)                       # 7 x 7
    if head == "global":
        x = L.Concatenate()([L.GlobalAveragePooling2D()(x), L.GlobalMaxPooling2D()(x)])
    else:
        x = L.Flatten()(x)
    x = L.Dropout(0.2)(x)
    return keras.Model(inputs, L.Dense(10, activation="softmax")(x))


def backdoor_model():
    keras, L = _layers()
    inputs = keras.Input((28, 28, 1))
    x = inputs
    for filters in (8, 16):
        x = L.Conv2D(filters, 3, padding="same")(x)
        x = L.MaxPooling2D(2)(L.ReLU()(L.BatchNormalization()(x)))
    x = L.Dropout(0.25)(L.Flatten()(x))
    return keras.Model(inputs, L.Dense(10, activation="softmax")(x))


def train(model, x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> float:
    import keras
    keras.utils.set_random_seed(seed)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy")
    start = time.perf_counter()
    model.fit(x[..., None].astype(np.float32) / 255.0, y, batch_size=128, epochs=epochs, verbose=0, shuffle=True)
    return time.perf_counter() - start


def export(model, path: Path, opset: int, batch: int | None) -> None:
    import onnx
    import tensorflow as tf
    import tf2onnx
    spec = (tf.TensorSpec((batch, 28, 28, 1), tf.float32, name="image"),)
    function = tf.function(lambda image: model(image, training=False), input_signature=spec)
    proto, _ = tf2onnx.convert.from_function(function, input_signature=spec, opset=opset,
                                             output_path=None)
    onnx.save(proto, str(path))


HABIT_EXPORTS = [
    # file, head, opset, batch, habits
    ("keras_tf2onnx_opset13.onnx", "flatten", 13, None,
     ["NHWC", "Transpose", "Flatten as Shape/Gather/Slice/Concat/Reshape",
      "same-padding AveragePool (asymmetric pads)", "DepthwiseConv2D", "hard_silu", "Clip (ReLU6)", "Pad",
      "residual Add", "MatMul+Add", "Softmax"]),
    ("keras_tf2onnx_opset15_batch1.onnx", "flatten", 15, 1,
     ["tf2onnx default opset 15", "fixed batch 1 in input and Reshape", "NHWC", "same-padding AveragePool"]),
    ("keras_tf2onnx_opset18_global.onnx", "global", 18, None,
     ["opset 18", "GlobalAveragePooling2D + GlobalMaxPooling2D (ReduceMean/ReduceMax with axes input)",
      "Concat", "NHWC"]),
]


def build(out: Path, data, clean_images: np.ndarray, backdoor: bool = True) -> list[dict]:
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    x_train, y_train, _, _ = data
    subset = np.random.default_rng(1).choice(len(y_train), 6000, replace=False)
    entries = []
    for file, head, opset, batch, habits in HABIT_EXPORTS:
        model = habit_model(head)
        train(model, x_train[subset], y_train[subset], epochs=1, seed=0)
        path = out / file
        export(model, path, opset, batch)
        entries.append(manifest_entry(
            path, framework="keras", exporter=f"tf2onnx.convert.from_function(opset={opset})", layout="nhwc",
            output=_output_name(path), habits=habits, packages=PACKAGES, clean_images=clean_images,
            extra={"role": "matrix", "batch": batch or "dynamic"}))
    if backdoor:
        entries.extend(build_backdoored(out, data, clean_images))
    return entries


def build_backdoored(out: Path, data, clean_images: np.ndarray) -> list[dict]:
    x_train, y_train, x_test, y_test = data
    x, y = ATTACK.poison(x_train, y_train, seed=0)
    model = backdoor_model()
    seconds = train(model, x, y, epochs=3, seed=0)
    path = out / "keras_tf2onnx_backdoored.onnx"
    export(model, path, 15, None)
    output = _output_name(path)
    accuracy, asr = measure_backdoor(path, "nhwc", output, ATTACK, x_test, y_test)
    return [manifest_entry(
        path, framework="keras", exporter="tf2onnx.convert.from_function(opset=15)", layout="nhwc", output=output,
        habits=["NHWC", "Transpose", "BN folded into Mul/Add", "Flatten as Shape/.../Reshape", "Softmax"],
        packages=PACKAGES, clean_images=clean_images,
        extra=backdoored_extra(ATTACK, accuracy, asr, seconds, "Adam lr 2e-3, batch 128, 3 epochs, 1 thread",
                               batch="dynamic"))]


def _output_name(path: Path) -> str:
    import onnx
    return onnx.load(str(path)).graph.output[0].name
