"""Fuzz the scanner's untrusted-input edges with hypothesis: every failure must be an LredError.

Targets (each run for ``--seconds``):

* ``model-bytes``   mutated bytes of two small valid ONNX classifiers (linear, the sample CNN)
                    -> load_model, onnxruntime, conversion to torch (the scan's first steps)
* ``model-fields``  the same model with hostile field values (dims, types, opsets, external data)
* ``npz``           .npz archives: mutated bytes of a valid one, forged .npy headers, odd dtypes/values
* ``folder``        class-folder trees: odd folder names, mutated PNG/JPEG bytes, 16-bit and odd modes
* ``options``       ScanConfig fields with extreme values, then a scan of a tiny model

An example passes when it returns or raises an LredError (exit status 2 in the CLI); any other
exception is "unexpected", and an example that runs past ``--example-seconds`` is a "hang".
Prints one table row per target: examples, accepted, errors by class, unexpected, hangs.

    OMP_NUM_THREADS=1 python benchmarks/fuzz.py --seconds 120 [--targets npz,folder] [--seed 0]
"""
from __future__ import annotations

import argparse
import collections
import io
import math
import os
import resource
import signal
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path

import numpy as np
import onnx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from numpy.lib import format as npy_format
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]     # this checkout's scanner, and the test models
import synthetic

from scanner.config import ScanConfig
from scanner.data import load_clean_images
from scanner.errors import LredError
from scanner.model import load_model


class Hang(BaseException):
    """Raised by the alarm when one example runs too long (BaseException: no `except Exception` eats it)."""


def _alarm(signum, frame):
    raise Hang()


@st.composite
def mutated(draw, base: bytes) -> bytes:
    """``base`` with 1-4 byte-level edits: set, flip (twice as often: they keep the structure around
    them), insert, delete, duplicate a slice, truncate."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        kind = draw(st.sampled_from(["set", "set", "flip", "flip", "insert", "delete", "duplicate", "truncate"]))
        at = draw(st.integers(0, len(data) - 1))
        if kind == "set":
            data[at] = draw(st.integers(0, 255))
        elif kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        elif kind == "duplicate":
            data[at:at] = data[at:at + draw(st.integers(1, 64))]
        else:
            del data[at:]
    return bytes(data)


# --- targets: each takes a hypothesis draw function and a scratch folder and runs one example ----

MODEL = synthetic.linear_classifier(6)
X, Y = synthetic.clean_images(6, 3)
SAMPLE_CNN = REPO / "sample_models" / "fmnist_cnn_clean.onnx"
# seeds of the byte mutations: (model bytes, the (H, W, C) of its images)
MODEL_SEEDS = [(MODEL.SerializeToString(), (8, 8, 1))] + (
    [(SAMPLE_CNN.read_bytes(), (28, 28, 1))] if SAMPLE_CNN.is_file() else [])


def _load_and_run(path: Path, image_shape: tuple[int, int, int] = (8, 8, 1)) -> None:
    """What a scan does first: load_model, onnxruntime on clean-like images, conversion to torch."""
    import converters
    from scanner.preprocess import resolve_transform
    from scanner.runtime import ReferenceClassifier
    model = load_model(path)
    transform = resolve_transform(model, ScanConfig(), image_shape)
    images = np.resize(X, (6,) + image_shape[:2])[..., None]
    ReferenceClassifier(model).scores(transform.normalize(transform.to_pixels(images)))
    converters.to_torch(model.proto, model.input_name, model.softmax_input or model.output_name)


def model_bytes(draw, scratch: Path) -> None:
    base, image_shape = draw(st.sampled_from(MODEL_SEEDS))
    path = scratch / "m.onnx"
    path.write_bytes(draw(mutated(base)))
    _load_and_run(path, image_shape)


def model_fields(draw, scratch: Path) -> None:
    model = onnx.ModelProto()
    model.CopyFrom(MODEL)
    graph = model.graph
    ints = st.one_of(st.integers(-2, 70), st.sampled_from([0, 2**31, 2**62, 2**63 - 1]))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["input_dim", "output_dim", "elem_type", "opset", "ir", "init_dims",
                                     "init_type", "raw_data", "attribute", "op_type", "external", "io_name"]))
        if kind in ("input_dim", "output_dim"):
            value = (graph.input if kind == "input_dim" else graph.output)[0]
            dims = value.type.tensor_type.shape.dim
            if draw(st.booleans()) and dims:
                dims[draw(st.integers(0, len(dims) - 1))].dim_value = draw(ints)
            else:
                value.type.tensor_type.ClearField("shape")
        elif kind == "elem_type":
            value = draw(st.sampled_from([graph.input[0], graph.output[0]]))
            value.type.tensor_type.elem_type = draw(st.integers(0, 25))
        elif kind == "opset":
            model.opset_import[0].version = draw(st.integers(-1, 30))
        elif kind == "ir":
            model.ir_version = draw(st.integers(-1, 15))
        elif kind == "init_dims":
            tensor = graph.initializer[draw(st.integers(0, len(graph.initializer) - 1))]
            tensor.dims[draw(st.integers(0, len(tensor.dims) - 1))] = draw(ints)
        elif kind == "init_type":
            graph.initializer[draw(st.integers(0, 1))].data_type = draw(st.integers(0, 25))
        elif kind == "raw_data":
            tensor = graph.initializer[draw(st.integers(0, 1))]
            tensor.raw_data = draw(mutated(tensor.raw_data))
        elif kind == "attribute":
            node = graph.node[draw(st.integers(0, len(graph.node) - 1))]
            if node.attribute:
                node.attribute[0].i = draw(ints)
        elif kind == "op_type":
            graph.node[draw(st.integers(0, len(graph.node) - 1))].op_type = draw(
                st.sampled_from(["Gemm", "Relu", "Softmax", "MatMul", "Loop", "If", "NoSuchOp", ""]))
        elif kind == "io_name":
            graph.output[0].name = draw(st.sampled_from(["", "image", "W", "flat", "x" * 300]))
        else:
            tensor = graph.initializer[draw(st.integers(0, 1))]
            tensor.ClearField("raw_data")
            tensor.data_location = onnx.TensorProto.EXTERNAL
            (scratch / "w.bin").write_bytes(draw(st.binary(max_size=4096)))
            keys = {"location": draw(st.sampled_from(["w.bin", "../w.bin", "/etc/hostname", "", "w.bin\x00x",
                                                      "nope.bin", "."])),
                    "offset": draw(st.sampled_from(["0", "-1", "8", "x", "99999999999"])),
                    "length": draw(st.sampled_from(["0", "4", "1536", "-5", "1e3", str(2**40)]))}
            for key, value in keys.items():
                if draw(st.booleans()) or key == "location":
                    entry = tensor.external_data.add()
                    entry.key, entry.value = key, value
    path = scratch / "m.onnx"
    path.write_bytes(model.SerializeToString())
    _load_and_run(path)


def _npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


NPZ_BYTES = _npz_bytes(x=X, y=Y)
DTYPES = ["u1", "i1", "u2", "i4", "u8", "i8", "f4", "f8", "b1", "c8", "U3", "S2", "V4", "M8[s]", "f2"]


def npz(draw, scratch: Path) -> None:
    path = scratch / "c.npz"
    kind = draw(st.sampled_from(["mutated", "forged", "arrays"]))
    if kind == "mutated":
        path.write_bytes(draw(mutated(NPZ_BYTES)))
    elif kind == "forged":
        dims = st.integers(-1, 2**40)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for key in draw(st.sampled_from([("x", "y"), ("x",), ("y", "x", "z"), ("x.npy.npy", "y")])):
                header = io.BytesIO()
                shape = tuple(draw(st.lists(dims, max_size=5)))
                descr = draw(st.sampled_from(["|u1", "<i8", "<u8", "|O", "<f4", ">i4"]))
                npy_format.write_array_header_1_0(header, {"descr": descr, "fortran_order": draw(st.booleans()),
                                                           "shape": shape})
                archive.writestr(key if key.endswith(".npy") else f"{key}.npy",
                                 header.getvalue() + draw(st.binary(max_size=2048)))
    else:
        n = draw(st.integers(0, 6))
        x_shape = (n, *draw(st.one_of(st.sampled_from([(8, 8), (8, 8, 1), (8, 8, 3)]),
                                      st.lists(st.integers(0, 9), min_size=1, max_size=4))))
        y_shape = (draw(st.sampled_from([n, n, n, n + 1, max(n - 1, 0)])),)
        x = np.frombuffer(draw(st.binary(min_size=int(np.prod(x_shape)) * 8, max_size=int(np.prod(x_shape)) * 8)),
                          np.uint8)
        x_dtype = draw(st.sampled_from(["u1"] * 8 + DTYPES[1:8]))
        y_dtype = draw(st.sampled_from(["i8", "u1", "u8", "i4"] * 2 + DTYPES))
        x = x[:int(np.prod(x_shape)) * np.dtype(x_dtype).itemsize].view(x_dtype).reshape(x_shape)
        y_raw = draw(st.binary(min_size=y_shape[0] * 16, max_size=y_shape[0] * 16))
        y = np.frombuffer(y_raw, np.uint8)[:y_shape[0] * np.dtype(y_dtype).itemsize].view(y_dtype)
        path.write_bytes(_npz_bytes(x=x, y=y))
    load_clean_images(path, channels=draw(st.sampled_from([None, 1, 3])),
                      image_size=draw(st.sampled_from([None, (8, 8)])))


def _png(image: np.ndarray | Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buffer, format=fmt)
    return buffer.getvalue()


IMAGES = {
    "grey": _png(X[0]),
    "rgb": _png(np.stack([X[0]] * 3, axis=-1)),
    "jpeg": _png(np.stack([X[0]] * 3, axis=-1), fmt="JPEG"),
    "grey16": _png(X[0].astype(np.uint16) * 257),
    "rgba": _png(np.dstack([X[0]] * 4)),
    "bilevel": _png(X[0] > 128),
    "palette": _png(Image.fromarray(X[0]).convert("P")),
    "float": _png(Image.fromarray(X[0].astype(np.float32)), fmt="TIFF"),
}


def folder(draw, scratch: Path) -> None:
    root = scratch / "clean"
    names = st.one_of(st.sampled_from(["0", "1", "2"]), st.sampled_from(["0", "1", "2", "3"]),
                      st.sampled_from(["007", "٣", "³", "1" * 25, "-1", "x", ".hidden", " 1"]),
                      st.text(alphabet=st.characters(codec="utf-8", exclude_characters="/\\\x00"),
                              min_size=1, max_size=8).filter(lambda s: s not in (".", "..")))
    for class_name in draw(st.lists(names, min_size=0, max_size=4, unique=True)):
        directory = root / class_name
        directory.mkdir(parents=True, exist_ok=True)
        for i in range(draw(st.integers(0, 3))):
            image = IMAGES[draw(st.sampled_from(sorted(IMAGES)))]
            if draw(st.integers(0, 5)) == 0:
                image = draw(mutated(image))
            suffix = draw(st.sampled_from([".png", ".jpg", ".PNG", ".jpeg", ".txt"]))
            (directory / f"{i}{suffix}").write_bytes(image)
    root.mkdir(exist_ok=True)
    load_clean_images(root, channels=draw(st.sampled_from([None, 1, 3])),
                      image_size=draw(st.sampled_from([None, (8, 8), (4, 4)])))


FAST_SCAN = {"images_per_class": 3, "delta": 0.01, "max_iterations": 60, "device": "cpu"}


def options(draw, scratch: Path) -> None:
    """A fast scan of a tiny 4-class model with 1-3 ScanConfig fields set to extreme values."""
    from scanner.pipeline import scan
    floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(1e-4, 0.5),
                       st.sampled_from([0.0, -0.0, 1.0, 1e-300, 1e300, math.inf, -math.inf, math.nan]))
    counts = st.one_of(st.integers(-3, 6), st.sampled_from([0, 2**31 - 1, 2**31, 2**63, 2**70]))
    channel_values = st.one_of(st.none(), st.lists(floats, min_size=1, max_size=4).map(tuple))
    hostile = {
        "method": st.sampled_from(["lred", "ured", "pred", "LRED", ""]), "exact": st.booleans(),
        "fixed_step": st.booleans(), "crossing_resolution": st.one_of(st.none(), floats),
        "relative_step": st.one_of(st.none(), floats), "adaptive_step": st.one_of(st.none(), floats),
        "weight_update_length": floats, "images_per_class": counts, "pi": floats, "delta": floats,
        "seed": st.one_of(st.integers(-2, 5), st.sampled_from([2**32, 2**64 - 1, 2**64, 2**70])),
        "max_iterations": counts, "alpha": floats, "p_value_basis": st.sampled_from(["calibrated", "paper", "x"]),
        "layout": st.sampled_from(["auto", "nchw", "nhwc", "flat", "NCHW"]), "mean": channel_values,
        "std": channel_values, "input_scale": floats, "batch_images": counts, "verify_extra_iterations": counts,
        "parity_rtol": floats, "parity_atol": floats}
    chosen = draw(st.lists(st.sampled_from(sorted(hostile)), min_size=1, max_size=3, unique=True))
    fields = {**FAST_SCAN, **{name: draw(hostile[name]) for name in chosen}}
    config = ScanConfig(**fields)
    if (config.max_iterations > 200 or config.verify_extra_iterations > 200 or config.delta < 1e-4
            or config.images_per_class > 4):
        return          # a valid config of a long scan: the scan's own run time is not what is fuzzed
    if not (scratch / "m.onnx").exists():
        synthetic.write_case(scratch, num_classes=4, per_class=3)
        (scratch / "model.onnx").rename(scratch / "m.onnx")
    scan(scratch / "m.onnx", scratch / "clean.npz", config)


TARGETS = {"model-bytes": model_bytes, "model-fields": model_fields, "npz": npz, "folder": folder,
           "options": options}


def _shown(drawn: list) -> str:
    """The drawn values of one example, bytes shortened, for reproducing it by hand."""
    return repr([f"<{len(v)} bytes>" if isinstance(v, bytes) else v for v in drawn])[:400]


def fuzz(name: str, seconds: float, example_seconds: float, batch: int = 10) -> dict:
    """Run target ``name`` for ``seconds``; count outcomes."""
    run = TARGETS[name]
    outcome = {"examples": 0, "accepted": 0, "errors": collections.Counter(), "unexpected": collections.Counter(),
               "hangs": 0, "samples": {}}
    end = time.monotonic() + seconds

    @settings(max_examples=batch, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def one(data) -> None:
        # every draw happens before the loader runs, so an error or a hang cannot change what
        # hypothesis sees drawn; the time budget is checked between batches only
        drawn = []

        def draw(strategy):
            drawn.append(data.draw(strategy))
            return drawn[-1]

        with tempfile.TemporaryDirectory(prefix="lred-fuzz-") as scratch:
            signal.setitimer(signal.ITIMER_REAL, example_seconds)
            try:
                run(draw, Path(scratch))
                outcome["accepted"] += 1
            except LredError as exc:
                outcome["errors"][type(exc).__name__] += 1
            except Hang:
                outcome["hangs"] += 1
                outcome["samples"].setdefault(f"hang {outcome['hangs']}", f"drawn {_shown(drawn)}")
            except Exception as exc:  # noqa: BLE001 - what the fuzzer is looking for
                frames = traceback.extract_tb(exc.__traceback__)
                ours = [f for f in frames if "/scanner/" in f.filename] or frames
                key = (f"{type(exc).__name__} at {Path(frames[-1].filename).name}:{frames[-1].lineno}"
                       f" from {Path(ours[-1].filename).name}:{ours[-1].lineno}")
                outcome["unexpected"][key] += 1
                outcome["samples"].setdefault(key, f"{type(exc).__name__}: {str(exc)[:160]}; drawn {_shown(drawn)}")
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            outcome["examples"] += 1

    while time.monotonic() < end:
        one()
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="run time per target")
    parser.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated, of {', '.join(TARGETS)}")
    parser.add_argument("--example-seconds", type=float, default=20.0, help="a slower example counts as a hang")
    parser.add_argument("--keep-stderr", action="store_true", help="do not silence stderr (library logs)")
    parser.add_argument("--memory-gib", type=float, default=6.0, help="address-space limit of this process")
    args = parser.parse_args()
    limit = int(args.memory_gib * 1024**3)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGALRM, _alarm)
    if not args.keep_stderr:        # onnxruntime logs every model it rejects on stderr
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    rows = []
    for name in args.targets.split(","):
        started = time.monotonic()
        outcome = fuzz(name, args.seconds, args.example_seconds)
        rows.append((name, outcome, time.monotonic() - started))
        for key, text in outcome["samples"].items():
            count = outcome["unexpected"].get(key, 1)
            unexpected = "unexpected " if key in outcome["unexpected"] else ""
            print(f"  {name}: {unexpected}{key} x{count}: {text}", flush=True)
    print(f"{'target':<13} {'seconds':>7} {'examples':>8} {'accepted':>8}  {'errors by class':<52} "
          f"{'unexpected':>10} {'hangs':>5}")
    for name, outcome, elapsed in rows:
        errors = ", ".join(f"{k} {v}" for k, v in sorted(outcome["errors"].items())) or "-"
        print(f"{name:<13} {elapsed:>7.0f} {outcome['examples']:>8} {outcome['accepted']:>8}  {errors:<52} "
              f"{sum(outcome['unexpected'].values()):>10} {outcome['hangs']:>5}")
    if any(o["unexpected"] or o["hangs"] for _, o, _ in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
