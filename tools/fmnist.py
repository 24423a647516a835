"""The Fashion-MNIST toolchain shared by the sample models, the benchmark zoo and the exporter fixtures.

Used by ``sample_models/build_samples.py``, ``benchmarks/zoo.py`` and ``tools/fixture_builders/``:

- data: ``read_idx`` / ``load`` read the four gzip'd idx files (uint8 images (N, 28, 28), int64 labels);
- patterns: ``embed`` adds a pattern in 8-bit levels (uint8 arithmetic, clipped to 0..255, App. A.4 of
  the L-RED paper), ``embed_float`` adds it to float images in [0, 1] (float32 arithmetic, clipped);
- poisoning: ``poison`` replaces source-class training images by their patterned copies labelled with
  the target, the clean originals removed (App. A.4.4);
- training (torch): ``train`` (Adam, cross-entropy, seeded shuffling) and ``export_torchscript``;
- measuring: ``onnx_scores`` / ``onnx_predict`` run an exported file with onnxruntime on the CPU.

Each caller keeps the choices its committed files were built with (float or 8-bit arithmetic,
sorted or drawn order of the poisoned images, batch and thread counts of the measurements): they are
arguments here, not defaults that changed. Only numpy, onnx and onnxruntime are imported at module
level: the fixture builders for Keras, JAX and scikit-learn run in environments without torch.
"""
from __future__ import annotations

import gzip
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049


# ---------------------------------------------------------------------------------- data

def read_idx(path: Path) -> np.ndarray:
    """One gzip'd idx file: uint8 images (N, rows, cols) (idx3) or int64 labels (N,) (idx1)."""
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    magic, count = (int(v) for v in np.frombuffer(raw, dtype=">u4", count=2))
    if magic == IMAGES_MAGIC:
        rows, cols = (int(v) for v in np.frombuffer(raw, dtype=">u4", count=2, offset=8))
        return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(count, rows, cols).copy()
    if magic == LABELS_MAGIC:
        labels = np.frombuffer(raw, dtype=np.uint8, offset=8).astype(np.int64)
        if len(labels) != count:
            raise ValueError(f"{path}: expected {count} labels, found {len(labels)}")
        return labels
    raise ValueError(f"{path}: idx magic {magic}, expected {IMAGES_MAGIC} (images) or {LABELS_MAGIC} (labels)")


def load(data_dir: Path = DATA_DIR) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): images uint8 (N, 28, 28), labels int64 (N,)."""
    x_train, y_train, x_test, y_test = (read_idx(Path(data_dir) / name) for name in FILES)
    return x_train, y_train, x_test, y_test


def to_float(images_u8: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28) in [0, 1] (uint8 / 255, no normalization)."""
    return (images_u8.astype(np.float32) / 255.0)[:, None, :, :]


# ------------------------------------------------------------------------------ patterns

def embed(images_u8: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """x + v in 8-bit arithmetic, clipped to 0..255 (App. A.4: 8-bit pixel values).

    ``images_u8`` uint8 (N, H, W), ``levels`` int16 (H, W) in 8-bit levels."""
    return np.clip(images_u8.astype(np.int16) + levels, 0, 255).astype(np.uint8)


def embed_float(x: np.ndarray, rows: slice | int, cols: slice | int, delta: float) -> np.ndarray:
    """Float images (N, 1, H, W) in [0, 1] with ``delta`` added at [rows, cols] in float32, clipped to [0, 1]."""
    out = x.copy()
    out[:, :, rows, cols] = np.clip(out[:, :, rows, cols] + np.float32(delta), 0.0, 1.0)
    return out


def poison(x: np.ndarray, y: np.ndarray, sources: Sequence[int], target: int, per_source: int,
           rng: np.random.Generator, apply: Callable[[np.ndarray], np.ndarray], *,
           sort: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Replace ``per_source`` random images of every source class by ``apply`` of them labelled ``target``.

    The clean originals are removed, so the training set keeps its size (App. A.4.4). The chosen
    indices are drawn source by source from ``rng`` (without replacement, at most the class size);
    ``sort`` puts them, and so the patterned copies appended after the kept images, in index order,
    otherwise they stay in drawn order. Returns (x, y, chosen indices).
    """
    chosen = np.concatenate([
        rng.choice(np.flatnonzero(y == s), size=min(per_source, int((y == s).sum())), replace=False)
        for s in sources])
    if sort:
        chosen = np.sort(chosen)
    keep = np.ones(len(y), dtype=bool)
    keep[chosen] = False
    x_new = np.concatenate([x[keep], apply(x[chosen])])
    y_new = np.concatenate([y[keep], np.full(len(chosen), target, dtype=y.dtype)])
    return x_new, y_new, chosen


# ------------------------------------------------------------------------------ training

def train(make_model: Callable[[], nn.Module], x: np.ndarray, y: np.ndarray, *, seed: int, epochs: int,
          lr: float, batch_size: int, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
          on_epoch: Callable[[int, float, float], None] | None = None) -> nn.Module:
    """Adam on ``loss(outputs, labels)`` (default: cross-entropy), shuffled by a generator seeded with ``seed``.

    ``torch.manual_seed(seed)`` comes first, then ``make_model()`` (a factory that returns an
    existing model keeps that model's own initialization). ``x`` is float32 (N, 1, 28, 28) in
    [0, 1] or uint8 (N, 28, 28) (divided by 255 in float32, which gives the same numbers), ``y``
    int64 (N,). After each epoch ``on_epoch(epoch, mean loss, training accuracy)`` is called, both
    taken from the training batches. Returns the model in eval mode.
    """
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    inputs = torch.from_numpy(x)
    if inputs.dtype == torch.uint8:
        inputs = inputs.float().div_(255.0)[:, None]
    labels = torch.from_numpy(y)
    generator = torch.Generator().manual_seed(seed)
    loss_fn = loss or nn.functional.cross_entropy
    model.train()
    for epoch in range(epochs):
        total_loss, correct = 0.0, 0
        for idx in torch.randperm(len(labels), generator=generator).split(batch_size):
            optimizer.zero_grad(set_to_none=True)
            outputs = model(inputs[idx])
            value = loss_fn(outputs, labels[idx])
            value.backward()
            optimizer.step()
            if on_epoch is not None:
                total_loss += value.item() * len(idx)
                correct += int((outputs.argmax(1) == labels[idx]).sum())
        if on_epoch is not None:
            on_epoch(epoch, total_loss / len(labels), correct / len(labels))
    return model.eval()


def export_torchscript(model: nn.Module, path: Path, *, opset: int = 17, output: str = "logits",
                       batch_axis: str | None = "batch", check: bool = True,
                       input_shape: tuple[int, ...] | None = None,
                       image_size: tuple[int, int] = (28, 28)) -> None:
    """TorchScript exporter (dynamo=False), input 'image' of ``input_shape`` (default (N, 1, *image_size)),
    weights embedded.

    ``batch_axis`` names the dynamic batch axis (None: batch fixed at 1). Written to a temporary
    file first; with ``check`` the file must have no external data and pass the full ONNX check."""
    import onnx
    import torch

    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.zeros(*(input_shape or (1, 1, *image_size))),), str(tmp), dynamo=False,
                          opset_version=opset, input_names=["image"], output_names=[output],
                          dynamic_axes=({"image": {0: batch_axis}, output: {0: batch_axis}}
                                        if batch_axis else None))
    if check:
        external = [i.name for i in onnx.load(str(tmp)).graph.initializer
                    if i.data_location == onnx.TensorProto.EXTERNAL]
        if external:
            raise RuntimeError(f"{path}: initializers {external} use external data")
        onnx.checker.check_model(str(tmp), full_check=True)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- measuring

def onnx_scores(path: Path, x: np.ndarray, *, output: str | None = None, batch_size: int = 1000,
                threads: int | None = None) -> np.ndarray:
    """The ``output`` tensor (default: the first graph output) for model inputs ``x``, with onnxruntime on the CPU.

    ``output`` may also be an inner tensor (e.g. the probabilities behind skl2onnx's ZipMap). A
    model whose batch is fixed is run one fixed batch at a time, the last batch padded with
    copies of its last image. ``threads`` sets intra-op threads (None: onnxruntime's default)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    if output is not None and output not in {o.name for o in model.graph.output}:
        inferred = onnx.shape_inference.infer_shapes(model)
        model.graph.output.append(next(v for v in inferred.graph.value_info if v.name == output))
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    fixed = feed.shape[0] if isinstance(feed.shape[0], int) else None
    chunk = fixed or batch_size
    fetch = [output] if output is not None else None
    scores = []
    for start in range(0, len(x), chunk):
        batch = x[start:start + chunk]
        if fixed and len(batch) < fixed:
            batch = np.concatenate([batch, np.repeat(batch[-1:], fixed - len(batch), axis=0)])
        scores.append(np.asarray(session.run(fetch, {feed.name: batch})[0])[:len(x) - start])
    return np.concatenate(scores)


def onnx_predict(path: Path, x: np.ndarray, *, batch_size: int = 1000, threads: int | None = None) -> np.ndarray:
    """Predicted classes (argmax of the first output) for model inputs ``x``."""
    return onnx_scores(path, x, batch_size=batch_size, threads=threads).argmax(axis=1)
