"""converters/ops/resize_exact.py: every Resize variant it converts, against onnxruntime on
seeded inputs in [0, 1] (not 8-bit values), and every variant it refuses."""
from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx2torch import convert
from onnx2torch.node_converters import resize as onnx2torch_resize
from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription

import converters.ops  # noqa: F401  (registers our converters with onnx2torch)
from converters.ops.resize_exact import convert_dropout, convert_resize_10, convert_resize_11
from tests.onnx_parity import IR_VERSION, onnxruntime_outputs

REGISTERED = [("Resize", (10,), convert_resize_10), ("Resize", (11, 13), convert_resize_11),
              ("Dropout", (10, 12, 13), convert_dropout)]

ATOL = 1e-5
SHAPE = (2, 3, 8, 8)
# (input, target) for up- and downscaling by non-integer factors: 8x8 -> 13x11 and 8x8 -> 5x3
TARGETS = {"up-scales": ("scales", [1, 1, 1.625, 1.375]), "up-sizes": ("sizes", [2, 3, 13, 11]),
           "down-scales": ("scales", [1, 1, 0.625, 0.375]), "down-sizes": ("sizes", [2, 3, 5, 3])}
COORDINATES = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn"]
NEAREST = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]


@pytest.fixture
def exact_converters():
    """The converters of this module are what onnx2torch looks up (registered by importing converters)."""
    for op_type, versions, function in REGISTERED:
        for version in versions:
            assert _CONVERTER_REGISTRY[OperationDescription("", op_type, version)] is function
    yield


@pytest.fixture
def onnx2torch_own_resize():
    """onnx2torch's own Resize 11/13 converter in place of ours, restored afterwards (it is the
    last function named ``_`` in its module)."""
    key = OperationDescription("", "Resize", 13)
    ours = _CONVERTER_REGISTRY[key]
    _CONVERTER_REGISTRY[key] = onnx2torch_resize._
    yield
    _CONVERTER_REGISTRY[key] = ours


def resize_model(target: str, opset: int = 13, name: str = "resize", **attributes) -> onnx.ModelProto:
    """One Resize node on input 'x' (N, 3, 8, 8), its scales or sizes an initializer."""
    kind, values = TARGETS[target]
    initializer = (numpy_helper.from_array(np.array(values, np.float32), "scales") if kind == "scales" else
                   numpy_helper.from_array(np.array(values, np.int64), "sizes"))
    inputs = ["x", "scales"] if opset == 10 else (["x", "", "scales"] if kind == "scales" else ["x", "", "", "sizes"])
    node = helper.make_node("Resize", inputs, ["y"], name=name, **attributes)
    return _model([node], [initializer], opset)


def _model(nodes, initializers, opset, inputs=None):
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])]
    graph = helper.make_graph(nodes, "one_node", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = IR_VERSION
    return model


def inputs_in_unit_range(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 1.0, SHAPE).astype(np.float32)


def max_difference(model: onnx.ModelProto) -> float:
    """Largest |torch - onnxruntime| on seeded inputs in [0, 1]; asserts the shapes agree and the
    input gradient of a seeded weighted sum is finite and non-zero."""
    x = inputs_in_unit_range()
    reference = onnxruntime_outputs(model, x)
    module = convert(model)
    inputs = torch.tensor(x, requires_grad=True)
    result = module(inputs)
    assert tuple(result.shape) == reference.shape
    weights = torch.from_numpy(np.random.default_rng(7).uniform(-1, 1, reference.shape).astype(np.float32))
    (gradient,) = torch.autograd.grad((result * weights).sum(), inputs)
    assert torch.isfinite(gradient).all() and float(gradient.abs().max()) > 1e-6
    return float(np.abs(result.detach().numpy() - reference).max())


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("nearest_mode", NEAREST)
@pytest.mark.parametrize("coordinates", COORDINATES)
def test_nearest_matches_onnxruntime(exact_converters, coordinates, nearest_mode, target):
    model = resize_model(target, mode="nearest", coordinate_transformation_mode=coordinates, nearest_mode=nearest_mode)
    assert max_difference(model) <= ATOL


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("coordinates", COORDINATES)
def test_linear_matches_onnxruntime(exact_converters, coordinates, target):
    model = resize_model(target, mode="linear", coordinate_transformation_mode=coordinates)
    assert max_difference(model) <= ATOL


@pytest.mark.parametrize("coordinates", ["half_pixel", "pytorch_half_pixel", "align_corners"])
def test_linear_to_a_single_row(exact_converters, coordinates):
    # pytorch_half_pixel puts a length-1 output at source 0, half_pixel at the middle
    TARGETS["single-row"] = ("sizes", [2, 3, 1, 3])
    try:
        model = resize_model("single-row", mode="linear", coordinate_transformation_mode=coordinates)
        assert max_difference(model) <= ATOL
    finally:
        del TARGETS["single-row"]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("exclude_outside", [0, 1])
@pytest.mark.parametrize("cubic_coeff_a", [-0.75, -0.5])
@pytest.mark.parametrize("coordinates", COORDINATES)
def test_cubic_matches_onnxruntime(exact_converters, coordinates, cubic_coeff_a, exclude_outside, target):
    model = resize_model(target, mode="cubic", coordinate_transformation_mode=coordinates,
                         cubic_coeff_a=cubic_coeff_a, exclude_outside=exclude_outside)
    assert max_difference(model) <= ATOL


@pytest.mark.parametrize("target", ["up-scales", "down-scales"])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_10_matches_onnxruntime(exact_converters, mode, target):
    assert max_difference(resize_model(target, opset=10, mode=mode)) <= ATOL


@pytest.mark.parametrize("opset", [18, 19])
def test_resize_18_and_19_forward_to_the_exact_converter(opset):
    # no fixture: converters/opset18_ops.py calls the exact converter itself
    model = resize_model("down-sizes", opset=opset, mode="nearest", coordinate_transformation_mode="half_pixel",
                         nearest_mode="ceil")
    assert max_difference(model) <= ATOL


@pytest.mark.parametrize("kind", ["scales", "sizes"])
def test_scales_or_sizes_computed_in_the_graph(exact_converters, kind):
    values = TARGETS[f"up-{kind}"][1]
    constant = numpy_helper.from_array(np.array(values, np.float32 if kind == "scales" else np.int64), "c")
    computed = helper.make_node("Identity", ["c"], ["t"])
    inputs = ["x", "", "t"] if kind == "scales" else ["x", "", "", "t"]
    node = helper.make_node("Resize", inputs, ["y"], mode="nearest", coordinate_transformation_mode="half_pixel",
                            nearest_mode="round_prefer_ceil")
    assert max_difference(_model([computed, node], [constant], 13)) <= ATOL


def test_onnx2torch_own_nearest_ceil_disagrees_with_onnxruntime(onnx2torch_own_resize):
    """Why the override exists: onnx2torch converts nearest_mode=ceil as torch's floor, and only warns."""
    model = resize_model("up-scales", mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="ceil")
    x = inputs_in_unit_range()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = convert(model)(torch.from_numpy(x)).numpy()
    assert np.abs(result - onnxruntime_outputs(model, x)).max() > 0.1


@pytest.mark.parametrize("attributes, named", [
    (dict(mode="linear", coordinate_transformation_mode="tf_crop_and_resize"), "tf_crop_and_resize"),
    (dict(mode="nearest", coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=1.0),
     "tf_crop_and_resize"),
    (dict(mode="nearest", nearest_mode="round_half_even"), "nearest_mode=round_half_even"),
    (dict(mode="area"), "mode=area"),
])
def test_refusals_name_node_and_attribute(exact_converters, attributes, named):
    with pytest.raises(NotImplementedError, match=f"Resize node 'odd'.*{named}"):
        convert(resize_model("up-scales", name="odd", **attributes))


def test_resizing_channels_is_refused(exact_converters):
    TARGETS["channels"] = ("scales", [1, 2, 1, 1])
    try:
        with pytest.raises(NotImplementedError, match=r"Resize node 'odd'.*scales=\[1.0, 2.0, 1.0, 1.0\]"):
            convert(resize_model("channels", name="odd", mode="nearest"))
    finally:
        del TARGETS["channels"]


@pytest.mark.parametrize("shape, values, mode", [
    ([2, 3, 8], [1, 1, 1.375], "linear"),                    # 1-D: N, C, W
    ([2, 3, 4, 8, 8], [1, 1, 1.5, 0.625, 1.375], "nearest"),  # 3-D: N, C, D, H, W
])
def test_other_ranks_resize_every_spatial_axis(exact_converters, shape, values, mode):
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode=mode, nearest_mode="round_prefer_ceil")
    x_info = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape[1:]])]
    model = _model([node], [numpy_helper.from_array(np.array(values, np.float32), "scales")], 13, x_info)
    x = np.random.default_rng(3).uniform(0, 1, shape).astype(np.float32)
    inputs = torch.tensor(x, requires_grad=True)
    result = convert(model)(inputs)
    np.testing.assert_allclose(result.detach().numpy(), onnxruntime_outputs(model, x), atol=ATOL, rtol=0)
    (gradient,) = torch.autograd.grad(result.sum(), inputs)
    assert float(gradient.abs().max()) > 0


def dropout_model(opset: int, training_mode=None, mask: bool = False) -> onnx.ModelProto:
    """A Dropout node (ratio 0.3) on 'x'; ``training_mode``: None (absent), a bool (initializer),
    'constant-false' (a Constant node) or 'input' (a graph input)."""
    initializers, nodes, extra_inputs = [], [], []
    if opset < 12:
        inputs, attributes = ["x"], {"ratio": 0.3}
    else:
        initializers.append(numpy_helper.from_array(np.array(0.3, np.float32), "ratio"))
        inputs, attributes = ["x", "ratio"], {}
    if isinstance(training_mode, bool):
        initializers.append(numpy_helper.from_array(np.array(training_mode), "training"))
    elif training_mode == "constant-false":
        nodes.append(helper.make_node("Constant", [], ["training"],
                                      value=numpy_helper.from_array(np.array(False), "v")))
    elif training_mode == "input":
        extra_inputs.append(helper.make_tensor_value_info("training", TensorProto.BOOL, []))
    if training_mode is not None:
        inputs.append("training")
    nodes.append(helper.make_node("Dropout", inputs, ["y", "mask"] if mask else ["y"], name="drop", **attributes))
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    model = _model(nodes, initializers, opset, [x_info, *extra_inputs])
    if mask:
        model.graph.output.append(helper.make_tensor_value_info("mask", TensorProto.BOOL, None))
    return model


@pytest.mark.parametrize("opset, training_mode", [(10, None), (12, None), (13, None), (13, False),
                                                   (13, "constant-false")])
def test_dropout_at_inference_is_the_identity(exact_converters, opset, training_mode):
    assert max_difference(dropout_model(opset, training_mode)) == 0


def test_dropout_mask_is_all_true(exact_converters):
    model = dropout_model(13, False, mask=True)
    x = inputs_in_unit_range()
    y, mask = convert(model)(torch.from_numpy(x))
    session = __import__("onnxruntime").InferenceSession(model.SerializeToString(),
                                                         providers=["CPUExecutionProvider"])
    y_ref, mask_ref = session.run(["y", "mask"], {"x": x})
    assert np.array_equal(y.numpy(), y_ref) and np.array_equal(mask.numpy(), mask_ref) and mask_ref.all()


@pytest.mark.parametrize("training_mode, named", [(True, "training_mode=True"),
                                                  ("input", "training_mode='training' computed in the graph")])
def test_dropout_that_may_train_is_refused(exact_converters, training_mode, named):
    with pytest.raises(NotImplementedError, match=f"Dropout node 'drop'.*{named}"):
        convert(dropout_model(13, training_mode))
