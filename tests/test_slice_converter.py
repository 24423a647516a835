"""converters/ops/slice_tuple.py: Slice 10/11/13 against onnxruntime, with no torch indexing warning."""
import warnings

import numpy as np
import pytest
from onnx import helper

from tests.onnx_parity import assert_converts_like_onnxruntime, one_node_model, seeded

INT64_MAX = np.iinfo(np.int64).max


@pytest.mark.parametrize("opset", [10, 11, 13])
@pytest.mark.parametrize("starts, ends, axes, steps", [
    ([1], [3], [1], None),                          # one axis, default step
    ([0, 1], [2, INT64_MAX], [2, 3], [1, 2]),       # open end, stride 2
    ([-1], [-4], [-1], [-1]),                       # negative axis and a negative step (a flip)
    ([0, 0, 1], [1, 4, 4], None, None),             # no axes: the first ones
])
def test_slice_matches_onnxruntime_without_a_torch_warning(opset, starts, ends, axes, steps):
    if opset == 10 and axes is not None and any(a < 0 for a in axes):
        pytest.skip("Slice-10 takes no negative axes (they came with opset 11)")
    inputs = {"starts": np.array(starts, np.int64), "ends": np.array(ends, np.int64)}
    names = ["x", "starts", "ends"]
    if axes is not None:
        inputs["axes"] = np.array(axes, np.int64)
        names.append("axes")
    if steps is not None:
        if axes is None:
            pytest.skip("steps need axes")
        inputs["steps"] = np.array(steps, np.int64)
        names.append("steps")
    model = one_node_model(helper.make_node("Slice", names, ["y"]), ["N", 3, 4, 5], opset, inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")             # torch's "non-tuple sequence" warning fails the test
        assert_converts_like_onnxruntime(model, seeded((2, 3, 4, 5)))


@pytest.mark.parametrize("indices, updates_shape", [
    (np.array([[0], [2]], np.int64), (2, 3, 4)),                  # whole rows
    (np.array([[1, 0], [2, 2], [0, 1]], np.int64), (3, 4)),       # partial index of depth 2
    (np.array([[[0, 1, 2]], [[2, 2, 3]]], np.int64), (2, 1)),     # single elements, batched indices
])
def test_scatter_nd_with_tuple_indexing_matches_onnxruntime(indices, updates_shape):
    import warnings

    from onnx import helper

    from tests.onnx_parity import (
        assert_converts_like_onnxruntime,
        one_node_model,
        seeded,
    )
    updates = seeded(updates_shape, seed=3)
    node = helper.make_node("ScatterND", ["x", "indices", "updates"], ["y"])
    model = one_node_model(node, [3, 3, 4], 13, {"indices": indices, "updates": updates})
    with warnings.catch_warnings():
        warnings.simplefilter("error")                 # no deprecated list indexing
        assert_converts_like_onnxruntime(model, seeded((3, 3, 4)))


def _slices(converted):
    return [m for m in converted.module.modules() if type(m).__name__ == "TupleSlice"]


def test_constant_operands_are_worked_out_at_conversion():
    # no starts/ends tensors read on each pass (on a GPU: a read back to the host)
    inputs = {"starts": np.array([1, 0], np.int64), "ends": np.array([3, -1], np.int64),
              "axes": np.array([1, 3], np.int64)}
    model = one_node_model(helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["y"]),
                           ["N", 3, 4, 5], 13, inputs)
    (module,) = _slices(assert_converts_like_onnxruntime(model, seeded((2, 3, 4, 5))))
    assert module.slices is not None


def test_computed_operands_are_read_on_each_pass():
    # ends = Shape(x)[2:3] - 1, computed in the graph: the slice is worked out at run time
    shape_of = helper.make_node("Shape", ["x"], ["shape"])
    take = helper.make_node("Slice", ["shape", "two", "three"], ["height"])
    minus = helper.make_node("Sub", ["height", "one"], ["ends"])
    model = one_node_model(helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["y"]), [2, 3, 4, 5], 13,
                           {"starts": np.array([1], np.int64), "axes": np.array([2], np.int64),
                            "two": np.array([2], np.int64), "three": np.array([3], np.int64),
                            "one": np.array([1], np.int64)}, before=(shape_of, take, minus))
    modules = _slices(assert_converts_like_onnxruntime(model, seeded((2, 3, 4, 5))))
    # two Slices: the one on the shape has constant operands, the one on x computed ends
    assert sorted(m.slices is None for m in modules) == [False, True]
