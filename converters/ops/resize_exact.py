"""Exact converters for Resize (10, 11, 13) and Dropout (10, 12, 13), overriding onnx2torch's.

onnx2torch turns every ``mode=nearest`` Resize into torch's 'nearest' (asymmetric coordinates,
floor rounding) whatever the node asks for, and ignores ``asymmetric`` coordinates,
``cubic_coeff_a`` and ``exclude_outside`` for linear and cubic ones: it only warns. A model
converted that way can agree with onnxruntime on clean 8-bit images and not elsewhere.

Here every resized axis is one gather and a weighted sum: for output index ``x_resized`` along
an axis of input length ``length_original``, the ONNX Resize formulas
(https://onnx.ai/onnx/operators/onnx__Resize.html) give a source coordinate ``x_original``
(``coordinate_transformation_mode``), from which ``nearest`` picks one source index
(``nearest_mode``), ``linear`` two with weights 1 - t and t, ``cubic`` four with the
Keys kernel of coefficient ``cubic_coeff_a``. The arithmetic is float32 in the order
onnxruntime uses, so indices land on the same side of every rounding boundary, and the result
is ``index_select`` along the axis, so gradients reach the input. Only the spatial axes may be
resized (batch and channels must keep their lengths).

Refused by name (NotImplementedError, which converters/ turns into UnsupportedOperatorError):
``tf_crop_and_resize`` coordinates (the ``roi`` crop, and the only mode in which
``extrapolation_value`` is ever used), resizing batch or channels, unknown modes.
Dropout: an identity at inference, unless a ``training_mode`` input may be true.
"""
from __future__ import annotations

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, get_const_value
from torch import nn

from .. import registry

COORDINATE_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil", "simple")  # simple: Resize 10


def source_coordinates(mode: str, length_resized: int, length_original: int, scale: float) -> torch.Tensor:
    """x_original for x_resized = 0 .. length_resized - 1 (float32), as the ONNX spec defines it."""
    x = torch.arange(length_resized, dtype=torch.float32)
    s = torch.tensor(scale, dtype=torch.float32)
    if mode == "half_pixel":
        return (x + 0.5) / s - 0.5
    if mode == "pytorch_half_pixel":
        return (x + 0.5) / s - 0.5 if length_resized > 1 else torch.zeros_like(x)
    if mode == "align_corners":
        if length_resized == 1:
            return torch.zeros_like(x)
        return x * float(length_original - 1) / float(length_resized - 1)
    if mode == "asymmetric":
        return x / s
    if mode == "tf_half_pixel_for_nn":
        return (x + 0.5) / s
    raise ValueError(f"coordinate_transformation_mode={mode}")


def nearest_taps(x_original: torch.Tensor, nearest_mode: str, scale: float, length_original: int) -> torch.Tensor:
    """The one source index per output index, clamped to the input."""
    if nearest_mode == "round_prefer_floor":     # ties go down: ceil(x - 0.5)
        index = torch.where(x_original == torch.floor(x_original) + 0.5, torch.floor(x_original),
                            torch.round(x_original))
    elif nearest_mode == "round_prefer_ceil":    # ties go up: floor(x + 0.5)
        index = torch.where(x_original == torch.floor(x_original) + 0.5, torch.ceil(x_original),
                            torch.round(x_original))
    elif nearest_mode == "floor":
        index = torch.floor(x_original)
    elif nearest_mode == "ceil":
        index = torch.ceil(x_original)
    else:                                        # Resize 10 (onnxruntime): ceil when shrinking, else floor
        index = torch.ceil(x_original) if scale < 1 else torch.floor(x_original)
    return index.clamp(0, length_original - 1).long()[:, None]


def linear_taps(x_original: torch.Tensor, length_original: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two source indices and weights per output index; x_original clamped to [0, length - 1]."""
    x = x_original.clamp(0, length_original - 1)
    low = torch.floor(x)
    high = torch.clamp(low + 1, max=length_original - 1)
    weights = torch.stack([high - x, x - low], dim=1)
    weights[low == high] = 0.5                   # on the last pixel: half of it twice
    return torch.stack([low, high], dim=1).long(), weights


def cubic_taps(x_original: torch.Tensor, length_original: int, a: float,
               exclude_outside: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Four source indices (floor - 1 .. floor + 2) and Keys-kernel weights per output index."""
    low = torch.floor(x_original)
    t = x_original - low
    distances = torch.stack([1 + t, t, 1 - t, 2 - t], dim=1)
    near = ((a + 2) * distances - (a + 3)) * distances * distances + 1
    far = ((a * distances - 5 * a) * distances + 8 * a) * distances - 4 * a
    weights = torch.where(distances <= 1, near, far)
    index = low[:, None] + torch.arange(-1, 3, dtype=torch.float32)
    if exclude_outside:
        weights = weights * ((index >= 0) & (index <= length_original - 1))
        weights = weights / weights.sum(dim=1, keepdim=True)
    return index.clamp(0, length_original - 1).long(), weights


class ExactResize(nn.Module):
    """ONNX Resize on the spatial axes of an N, C, ... tensor, axis by axis (gather, weighted sum)."""

    def __init__(self, name: str, mode: str, coordinate_mode: str, nearest_mode: str, cubic_coeff_a: float,
                 exclude_outside: bool, scales: tuple[float, ...] | None, sizes: tuple[int, ...] | None,
                 read_at_run_time: str | None = None):
        super().__init__()
        self.read_at_run_time = read_at_run_time   # 'scales' or 'sizes': the second input of forward
        self.name, self.mode, self.coordinate_mode, self.nearest_mode = name, mode, coordinate_mode, nearest_mode
        self.cubic_coeff_a, self.exclude_outside = cubic_coeff_a, exclude_outside
        self.scales, self.sizes = scales, sizes
        self._taps: dict[tuple, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        scales, sizes = self.scales, self.sizes
        if target is not None:                   # computed in the graph: read at run time
            values = target.tolist()
            if self.read_at_run_time == "sizes":
                sizes = tuple(int(v) for v in values)
            else:
                scales = tuple(float(v) for v in values)
        shape = tuple(x.shape)
        if sizes is not None:
            lengths = sizes
            # scale = length_resized / length_original, in float32 as onnxruntime computes it
            scales = tuple(float(torch.tensor(o, dtype=torch.float32) / torch.tensor(i, dtype=torch.float32))
                           for o, i in zip(sizes, shape))
        else:
            assert scales is not None, "a Resize module is built with scales or sizes, or reads one at run time"
            lengths = tuple(int(torch.tensor(i, dtype=torch.float32) * torch.tensor(s, dtype=torch.float32))
                            for i, s in zip(shape, scales))
        if len(lengths) != len(shape) or tuple(lengths[:2]) != shape[:2]:
            raise NotImplementedError(f"Resize node {self.name!r}: resizing {shape} to {tuple(lengths)} changes "
                                      "batch or channels, or the rank")
        for axis in range(2, len(shape)):
            x = self._resize_axis(x, axis, lengths[axis], scales[axis])
        return x

    def _resize_axis(self, x: torch.Tensor, axis: int, length_resized: int, scale: float) -> torch.Tensor:
        key = (x.shape[axis], length_resized, scale, x.device, x.dtype)
        if key not in self._taps:
            self._taps[key] = self._axis_taps(x.shape[axis], length_resized, scale, x.device, x.dtype)
        index, weights = self._taps[key]
        if weights is None:
            return x.index_select(axis, index[:, 0])
        weights = weights.reshape((length_resized, index.shape[1]) + (1,) * (x.dim() - axis - 1))
        result = x.index_select(axis, index[:, 0]) * weights[:, 0]
        for tap in range(1, index.shape[1]):     # a sum of gathers, not a matrix product: an inf or
            result = result + x.index_select(axis, index[:, tap]) * weights[:, tap]   # NaN stays local
        return result

    def _axis_taps(self, length_original: int, length_resized: int, scale: float, device: torch.device,
                   dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        x_original = source_coordinates(self.coordinate_mode, length_resized, length_original, scale)
        if self.mode == "nearest":
            return nearest_taps(x_original, self.nearest_mode, scale, length_original).to(device), None
        if self.mode == "linear":
            index, weights = linear_taps(x_original, length_original)
        else:
            index, weights = cubic_taps(x_original, length_original, self.cubic_coeff_a, self.exclude_outside)
        return index.to(device), weights.to(device=device, dtype=dtype)


def _constant(graph: OnnxGraph, name: str) -> torch.Tensor | None:
    try:
        value = get_const_value(name, graph)
    except KeyError:
        return None
    return value if isinstance(value, torch.Tensor) else torch.tensor(value)


def _refuse(node: OnnxNode, what: str) -> NotImplementedError:
    return NotImplementedError(f"{node.operation_type} node {node.name!r} has {what}, which has no exact "
                               "torch conversion")


def _resize(node: OnnxNode, graph: OnnxGraph, scales_name: str, sizes_name: str,
            legacy: bool) -> OperationConverterResult:
    attributes = node.attributes
    mode = attributes.get("mode", "nearest")
    if legacy:      # Resize 10: asymmetric coordinates; onnxruntime rounds nearest as 'simple'
        coordinate_mode, nearest_mode = "asymmetric", "simple"
    else:
        coordinate_mode = attributes.get("coordinate_transformation_mode", "half_pixel")
        nearest_mode = attributes.get("nearest_mode", "round_prefer_floor")
    if mode not in ("nearest", "linear", "cubic"):
        raise _refuse(node, f"mode={mode}")
    if coordinate_mode not in COORDINATE_MODES:
        raise _refuse(node, f"coordinate_transformation_mode={coordinate_mode}")
    if mode == "nearest" and nearest_mode not in NEAREST_MODES:
        raise _refuse(node, f"nearest_mode={nearest_mode}")
    rank = _rank(graph, node.input_values[0])
    if rank is not None and rank < 3:
        raise _refuse(node, f"a rank-{rank} input (only N, C, spatial... inputs are resized)")
    scales = _constant(graph, scales_name) if scales_name else None
    sizes = _constant(graph, sizes_name) if sizes_name else None
    target_name = None
    if sizes_name and (sizes is None or sizes.numel()):
        scales, target_name = None, sizes_name
    elif scales_name:
        target_name = scales_name
    else:
        raise _refuse(node, "neither scales nor sizes")
    constant = sizes if target_name == sizes_name else scales
    fixed_scales = fixed_sizes = None
    if constant is not None:
        values = constant.tolist()
        if target_name == sizes_name:
            fixed_sizes = tuple(int(v) for v in values)
        else:
            fixed_scales = tuple(float(v) for v in values)
        if any(v != 1 for v in (fixed_scales or ())[:2]):
            raise _refuse(node, f"scales={list(fixed_scales or ())} (resizing batch or channels)")
        if fixed_scales == ():
            raise _refuse(node, "empty scales and no sizes")
    read_at_run_time = None if constant is not None else ("sizes" if target_name == sizes_name else "scales")
    module = ExactResize(node.name, mode, coordinate_mode, nearest_mode, float(attributes.get("cubic_coeff_a", -0.75)),
                         bool(attributes.get("exclude_outside", 0)), fixed_scales, fixed_sizes, read_at_run_time)
    inputs = (node.input_values[0],) if constant is not None else (node.input_values[0], target_name)
    return OperationConverterResult(torch_module=module,
                                    onnx_mapping=OnnxMapping(inputs=inputs, outputs=node.output_values[:1]))


def _rank(graph: OnnxGraph, name: str) -> int | None:
    info = graph.value_info.get(name)
    if info is None or not info.type.tensor_type.HasField("shape"):
        return None
    return len(info.type.tensor_type.shape.dim)


def convert_resize_10(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Resize 10: inputs X, scales; asymmetric coordinates."""
    return _resize(node, graph, node.input_values[1], "", legacy=True)


def convert_resize_11(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Resize 11 and 13: inputs X, roi, scales, sizes (roi used only by tf_crop_and_resize, refused)."""
    inputs = list(node.input_values) + [""] * 4
    return _resize(node, graph, inputs[2], inputs[3], legacy=False)


class InferenceDropout(nn.Module):
    """Dropout at inference: the input itself, and an all-true mask when the graph asks for one."""

    def __init__(self, with_mask: bool):
        super().__init__()
        self.with_mask = with_mask

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return (x, torch.ones_like(x, dtype=torch.bool)) if self.with_mask else x


def convert_dropout(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    """Dropout 10/12/13: identity, unless ``training_mode`` (12+) is an input that may be true
    (onnxruntime then drops at random)."""
    inputs = list(node.input_values) + ["", ""]
    if inputs[2]:
        training = _constant(graph, inputs[2])
        if training is None:
            raise _refuse(node, f"training_mode={inputs[2]!r} computed in the graph")
        if bool(training.any()):
            raise _refuse(node, "training_mode=True")
    outputs = tuple(o for o in node.output_values if o)
    with_mask = len(node.output_values) > 1 and bool(node.output_values[1])
    return OperationConverterResult(torch_module=InferenceDropout(with_mask),
                                    onnx_mapping=OnnxMapping(inputs=(inputs[0],), outputs=outputs))


registry.override("Resize", (10,), convert_resize_10,
                  "onnx2torch rounds nearest as torch's floor, not onnxruntime's ceil when shrinking")
registry.override("Resize", (11, 13), convert_resize_11,
                  "onnx2torch ignores coordinate_transformation_mode, nearest_mode, cubic_coeff_a and "
                  "exclude_outside: every variant by the ONNX formulas")
registry.override("Dropout", (10, 12, 13), convert_dropout,
                  "onnx2torch ignores a training_mode input that onnxruntime honours: refused unless constant false")
