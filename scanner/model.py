"""Step 1: load an untrusted ONNX classifier and find its image input and class-score output."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import TensorProto, external_data_helper

from .errors import ModelError, UnsupportedModelError

FLOAT_TYPES = {TensorProto.FLOAT: "float32", TensorProto.DOUBLE: "float64",
               TensorProto.FLOAT16: "float16"}
MAX_MODEL_BYTES = 4 * 1024**3    # the .onnx file and its external tensor data together
MAX_FIXED_BATCH = 4096           # a batch dimension fixed in the graph: each batch is padded to it
# keyed by TensorProto.data_type (a plain int on a tensor)
EXTERNAL_ITEMSIZES: dict[int, int] = {
    TensorProto.FLOAT: 4, TensorProto.DOUBLE: 8, TensorProto.FLOAT16: 2, TensorProto.BFLOAT16: 2,
    TensorProto.INT8: 1, TensorProto.UINT8: 1, TensorProto.INT16: 2, TensorProto.UINT16: 2,
    TensorProto.INT32: 4, TensorProto.UINT32: 4, TensorProto.INT64: 8, TensorProto.UINT64: 8,
    TensorProto.BOOL: 1}


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """An ONNX classifier that passed the checker, with its interface read off the graph.

    ``input_shape`` and ``output_shape`` hold ``None`` for symbolic dimensions.
    ``score_producer`` is the op type that produces the class scores (e.g. "Gemm", "Softmax").
    ``softmax_input`` names the logits when the scores are a Softmax over the classes of a
    (N, K) tensor, else None.
    """

    path: str
    sha256: str
    proto: onnx.ModelProto
    opset: int
    producer: str
    input_name: str
    input_shape: tuple[int | None, ...]
    input_dtype: str
    output_name: str
    output_shape: tuple[int | None, ...]
    score_producer: str
    softmax_input: str | None = None

    @property
    def num_classes(self) -> int | None:
        return self.output_shape[1]


def _dims(value_info: onnx.ValueInfoProto) -> tuple[int | None, ...]:
    shape = value_info.type.tensor_type.shape
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                 for d in shape.dim)


def _read_proto(path: Path) -> tuple[onnx.ModelProto, str]:
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    size = path.stat().st_size
    if size == 0:
        raise ModelError(f"model file is empty: {path}")
    if size > MAX_MODEL_BYTES:
        raise ModelError(f"model file is {size} bytes, more than the {MAX_MODEL_BYTES} this scanner reads")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf raises several types on garbage
        raise ModelError(f"{path} is not an ONNX model (protobuf parse failed: {type(exc).__name__})") from exc
    if not proto.graph.node:
        raise ModelError(f"{path} holds no graph nodes; is it an ONNX model?")
    _check_text(proto, path)
    _load_external_data_safely(proto, path)
    return proto, digest


def _check_text(proto: onnx.ModelProto, path: Path) -> None:
    """protobuf hands a string field that is not valid UTF-8 back as bytes: refuse such names."""
    graph = proto.graph
    texts = [proto.producer_name, proto.producer_version, proto.domain, graph.name]
    texts += [v.name for v in list(graph.input) + list(graph.output) + list(graph.value_info)]
    texts += [t.name for t in graph.initializer]
    for node in graph.node:
        texts += [node.name, node.op_type, node.domain, *node.input, *node.output]
    texts += [o.domain for o in proto.opset_import]
    bad = next((t for t in texts if not isinstance(t, str)), None)
    if bad is not None:
        raise ModelError(f"{path} holds a name that is not valid UTF-8 ({bad[:40]!r}); is the file corrupt?")


def _load_external_data_safely(proto: onnx.ModelProto, path: Path) -> None:
    """Load external tensor data only from files inside the model's own folder, and only as much
    as the model file's limit allows: the offset and length every tensor declares (or the rest of
    its file) are checked before a byte is read, so that a huge or sparse data file is refused.

    onnx itself has had path-traversal bugs here (CVE-2022-25882, CVE-2024-27318).
    """
    tensors = [t for t in external_data_helper._get_all_tensors(proto)
               if external_data_helper.uses_external_data(t)]
    if not tensors:
        return
    base = path.parent.resolve()
    total = path.stat().st_size
    for tensor in tensors:
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        try:
            target = (base / location).resolve()
            inside = not os.path.isabs(location) and base in target.parents and target.is_file()
        except (ValueError, OSError):           # a NUL byte, a name too long, a symlink loop
            inside = False
        if not inside:
            raise ModelError(f"tensor {tensor.name!r} points to external data {location!r} "
                             f"outside the model's folder or missing; refusing to read it")
        nbytes = _external_bytes(tensor, info, target)
        total += nbytes
        if total > MAX_MODEL_BYTES:
            raise ModelError(f"tensor {tensor.name!r} has {nbytes} bytes of external data in {location!r}, which "
                             f"brings the model to {total} bytes, more than the {MAX_MODEL_BYTES} this scanner reads")
        _check_external_shape(tensor, nbytes, location)
    try:
        external_data_helper.load_external_data_for_model(proto, str(base))
    except MemoryError as exc:
        raise ModelError(f"out of memory reading the external tensor data of {path} "
                         f"({total} bytes with the model file)") from exc
    except Exception as exc:
        raise ModelError(f"cannot read external tensor data of {path}: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else 'no reason given'}") from exc


def _external_bytes(tensor: onnx.TensorProto, info: dict[str, str], target: Path) -> int:
    """How many bytes the tensor reads from ``target``: its declared length, or the rest of the file."""
    try:
        offset = int(info.get("offset", "0"))
        length = int(info["length"]) if "length" in info else None
    except ValueError as exc:
        raise ModelError(f"tensor {tensor.name!r} has a non-integer external offset or length: {exc}") from exc
    file_size = target.stat().st_size
    if offset < 0 or (length is not None and length < 0) or offset > file_size \
            or (length is not None and offset + length > file_size):
        raise ModelError(f"tensor {tensor.name!r} declares external data at offset {offset} of length "
                         f"{length if length is not None else 'to the end'}, outside its {file_size}-byte file")
    return length if length is not None else file_size - offset


def _check_external_shape(tensor: onnx.TensorProto, nbytes: int, location: str) -> None:
    """The bytes a tensor reads must be exactly what its shape and element type declare."""
    if tensor.data_type not in EXTERNAL_ITEMSIZES:
        return                      # strings, 4-bit and exotic types: left to the checker
    expected = EXTERNAL_ITEMSIZES[tensor.data_type]
    for d in tensor.dims:
        expected *= d
    if expected != nbytes:
        raise ModelError(f"tensor {tensor.name!r} declares shape {tuple(tensor.dims)} ({expected} bytes) but reads "
                         f"{nbytes} bytes of external data from {location!r}")


def load_model(path: str | os.PathLike, output_name: str | None = None) -> LoadedModel:
    """Read, check and interpret an ONNX image classifier.

    The image input is the single graph input that is not an initializer; the class-score
    output is the float output of shape (N, K), or ``output_name`` when given.
    """
    path = Path(path)
    proto, digest = _read_proto(path)
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise ModelError(f"{path} fails the ONNX checker: {str(exc).splitlines()[0]}") from exc
    try:
        proto = onnx.shape_inference.infer_shapes(proto)
    except Exception as exc:
        raise ModelError(f"shape inference failed on {path}: {str(exc).splitlines()[0]}") from exc

    graph = proto.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs) or "none"
        raise UnsupportedModelError(f"expected one image input, found {len(inputs)} ({names})")
    image = inputs[0]
    elem = image.type.tensor_type.elem_type
    if elem not in FLOAT_TYPES:
        raise UnsupportedModelError(
            f"input {image.name!r} has element type {TensorProto.DataType.Name(elem)}; "
            "the scanner needs a float image input to differentiate through")
    input_shape = _dims(image)
    if len(input_shape) not in (2, 3, 4):
        raise UnsupportedModelError(f"input {image.name!r} has rank {len(input_shape)}; "
                                    "expected an image batch of rank 2 (flat), 3 or 4")

    if input_shape[0] is not None and input_shape[0] > MAX_FIXED_BATCH:
        raise UnsupportedModelError(f"input {image.name!r} fixes its batch to {input_shape[0]} images; the scanner "
                                    f"pads every batch to a fixed size and takes at most {MAX_FIXED_BATCH}")

    _expose_zipmap_probabilities(graph)
    _expose_flat_scores(graph, output_name)
    output = _pick_output(graph, output_name)
    producers = {o: n.op_type for n in graph.node for o in n.output}
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    return LoadedModel(
        path=str(path), sha256=digest, proto=proto, opset=opset,
        producer=" ".join(x for x in (proto.producer_name, proto.producer_version) if x) or "unknown",
        input_name=image.name, input_shape=input_shape, input_dtype=FLOAT_TYPES[elem],
        output_name=output.name, output_shape=_dims(output),
        score_producer=producers.get(output.name, "unknown"), softmax_input=_softmax_input(graph, output.name))


def _softmax_input(graph: onnx.GraphProto, output_name: str) -> str | None:
    """The input of the Softmax that produces ``output_name`` (possibly through Identity nodes),
    when it normalizes over the classes: the output is (N, K), and a Softmax keeps its input's
    shape, so axis 1 or -1 means the class axis at every opset."""
    producers = {o: n for n in graph.node for o in n.output}
    node = producers.get(output_name)
    while node is not None and node.op_type == "Identity" and (node.domain or "") in ("", "ai.onnx"):
        node = producers.get(node.input[0])
    if node is None or node.op_type != "Softmax" or (node.domain or "") not in ("", "ai.onnx"):
        return None
    axis = next((a.i for a in node.attribute if a.name == "axis"), None)
    return node.input[0] if axis in (None, 1, -1) else None


def _expose_zipmap_probabilities(graph: onnx.GraphProto) -> None:
    """scikit-learn exports (skl2onnx) wrap the probabilities in ZipMap, a sequence of
    dictionaries. When no tensor output holds class scores, the float tensor that feeds ZipMap
    is made a graph output as well (the graph's computation is unchanged)."""
    if any(_is_score_output(o) for o in graph.output):
        return
    known = {v.name: v for v in list(graph.value_info) + list(graph.output)}
    outputs = {o.name for o in graph.output}
    for node in graph.node:
        if node.op_type == "ZipMap" and node.input and node.input[0] in known and node.input[0] not in outputs:
            graph.output.append(known[node.input[0]])


def _expose_flat_scores(graph: onnx.GraphProto, output_name: str | None) -> None:
    """Some classifiers end in a 1x1 convolution and global pooling without a Flatten, and give
    their scores as (N, K, 1, 1) (SqueezeNet in the ONNX model zoo). When no output, or not the
    one asked for, is (N, K), each float output of shape (N, K, 1, ..., 1) gets a Flatten(axis=1)
    beside it, exposed as '<name>/flat' (the graph's own outputs are unchanged, and
    ``--output NAME`` may name either)."""
    outputs = list(graph.output)
    if output_name is None and any(_is_score_output(o) for o in outputs):
        return
    for value in outputs:
        dims = _dims(value)
        if (output_name not in (None, value.name) or value.type.tensor_type.elem_type not in FLOAT_TYPES
                or len(dims) < 3 or any(d != 1 for d in dims[2:]) or dims[1] is None or dims[1] < 2):
            continue
        flat = f"{value.name}/flat"
        graph.node.append(onnx.helper.make_node("Flatten", [value.name], [flat], axis=1,
                                                name=f"lred_flatten_{value.name}"))
        graph.output.append(onnx.helper.make_tensor_value_info(flat, value.type.tensor_type.elem_type,
                                                               [dims[0] if dims[0] is not None else "N", dims[1]]))
        if output_name == value.name:
            return


def _pick_output(graph: onnx.GraphProto, output_name: str | None) -> onnx.ValueInfoProto:
    outputs = list(graph.output)
    if output_name is not None:
        match = [o for o in outputs if o.name == output_name]
        if match and not _is_score_output(match[0]) and any(o.name == f"{output_name}/flat" for o in outputs):
            match = [o for o in outputs if o.name == f"{output_name}/flat"]
        if not match:
            raise UnsupportedModelError(f"no output named {output_name!r}; outputs are "
                                        + ", ".join(repr(o.name) for o in outputs))
        chosen = match[0]
        if not _is_score_output(chosen):
            raise UnsupportedModelError(f"output {output_name!r} is not a float tensor of shape (N, K)")
        return chosen
    candidates = [o for o in outputs if _is_score_output(o)]
    if len(candidates) == 1:
        return candidates[0]
    names = ", ".join(repr(o.name) for o in (candidates or outputs))
    if not candidates:
        raise UnsupportedModelError(_no_score_output(outputs))
    raise UnsupportedModelError(f"several outputs look like class scores ({names}); choose one with --output NAME")


def _is_score_output(value_info: onnx.ValueInfoProto) -> bool:
    if not value_info.type.HasField("tensor_type"):
        return False
    if value_info.type.tensor_type.elem_type not in FLOAT_TYPES:
        return False
    dims = _dims(value_info)
    return len(dims) == 2 and (dims[1] is None or dims[1] >= 2)


def _no_score_output(outputs: list[onnx.ValueInfoProto]) -> str:
    """Why no output is a float (N, K) tensor, for the case at hand."""
    def shown(value: onnx.ValueInfoProto) -> str:
        tensor = value.type.tensor_type
        if not value.type.HasField("tensor_type"):
            return f"{value.name!r} (not a tensor)"
        dtype = TensorProto.DataType.Name(tensor.elem_type).lower()
        if not tensor.HasField("shape"):
            return f"{value.name!r} ({dtype}, no declared shape)"
        return f"{value.name!r} ({dtype}, shape {'x'.join('?' if d is None else str(d) for d in _dims(value))})"

    for value in outputs:
        dims = _dims(value) if value.type.HasField("tensor_type") else ()
        if value.type.tensor_type.elem_type in FLOAT_TYPES and len(dims) == 2 and dims[1] is not None:
            return (f"output {value.name!r} gives {dims[1]} class score(s) per image (shape Nx{dims[1]}); "
                    "L-RED needs a classifier's scores over at least 3 classes")
    if any(v.type.HasField("tensor_type") and not v.type.tensor_type.HasField("shape") for v in outputs):
        hint = "; the class count is read from the declared output shape: declare it (N, K) in the model"
    else:
        hint = "; the scanner needs a float output of shape (N, K) or (N, K, 1, 1) with K >= 3 classes"
    return "no float (N, K) class-score output among " + ", ".join(shown(o) for o in outputs) + hint
