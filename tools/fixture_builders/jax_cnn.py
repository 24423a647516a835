"""JAX / Flax (NNX) fixtures through jax2onnx: NHWC, auto_pad SAME_UPPER, Dropout left in the graph.

The network is randomly initialised (seeded) and not trained: these fixtures test conversion
only. Habits: Conv with ``padding="SAME"`` (exported as auto_pad SAME_UPPER), BatchNorm
(inference), ReLU6 as Max/Min, HardSwish, max and average pooling, a batch-dependent reshape
(Shape/Gather/Concat) or a batch fixed at 1, Dropout (deterministic), Gemm, LogSoftmax, opset 23.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import manifest_entry

PACKAGES = ("jax", "jaxlib", "flax", "jax2onnx")


def habit_model():
    import jax
    from flax import nnx

    class HabitCNN(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.conv1 = nnx.Conv(1, 8, (3, 3), padding="SAME", rngs=rngs)
            self.norm = nnx.BatchNorm(8, rngs=rngs)
            self.conv2 = nnx.Conv(8, 12, (3, 3), padding="VALID", rngs=rngs)
            self.drop = nnx.Dropout(0.2, rngs=rngs)
            self.dense = nnx.Linear(12 * 6 * 6, 10, rngs=rngs)

        def __call__(self, x):
            x = jax.nn.relu6(self.norm(self.conv1(x)))
            x = nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2))            # 14 x 14
            x = jax.nn.hard_swish(self.conv2(x))                                 # 12 x 12
            x = nnx.avg_pool(x, window_shape=(2, 2), strides=(2, 2))            # 6 x 6
            x = x.reshape(x.shape[0], -1)
            return jax.nn.log_softmax(self.dense(self.drop(x)))

    model = HabitCNN(nnx.Rngs(0))
    model.eval()
    return model


EXPORTS = [
    ("jax_flax_dynamic.onnx", ("B", 28, 28, 1), "dynamic"),
    ("jax_flax_batch1.onnx", (1, 28, 28, 1), 1),
]


def build(out: Path, data, clean_images: np.ndarray, backdoor: bool = False) -> list[dict]:
    import onnx
    from jax2onnx import to_onnx
    model = habit_model()
    entries = []
    for file, shape, batch in EXPORTS:
        proto = to_onnx(model, [shape], input_names=["image"], output_names=["log_probabilities"])
        path = out / file
        onnx.save(proto, str(path))
        entries.append(manifest_entry(
            path, framework="jax", exporter="jax2onnx.to_onnx (default opset)", layout="nhwc",
            output="log_probabilities",
            habits=["NHWC", "auto_pad SAME_UPPER", "BatchNorm", "ReLU6 as Max/Min", "HardSwish", "MaxPool",
                    "AveragePool", "Dropout node", "Gemm", "LogSoftmax", "opset 23"]
            + (["fixed batch 1"] if batch == 1 else ["Shape/Gather/Concat reshape"]),
            packages=PACKAGES, clean_images=clean_images, extra={"role": "matrix", "batch": batch,
                                                                  "trained": False}))
    return entries
