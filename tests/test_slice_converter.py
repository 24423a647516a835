"""converters/slice_tuple.py: Slice 10/11/13 against onnxruntime, with no torch indexing warning."""
import warnings

import numpy as np
import pytest
from onnx import helper
from onnx_parity import assert_converts_like_onnxruntime, one_node_model, seeded

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
