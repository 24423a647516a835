"""The scan's time limit: Python-side checks and onnxruntime runs cut off by RunOptions.terminate."""
from __future__ import annotations

import time

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from scanner.deadline import Deadline
from scanner.errors import ScanTimeoutError


def endless_loop_model() -> bytes:
    """y = x + 10^12 (a Loop of 10^12 trips adding 1): onnxruntime would run for days."""
    one = helper.make_node("Constant", [], ["one"], value=helper.make_tensor("o", TensorProto.FLOAT, [], [1.0]))
    body = helper.make_graph(
        [one, helper.make_node("Add", ["acc_in", "one"], ["acc_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [])])
    trips = helper.make_node("Constant", [], ["trips"], value=helper.make_tensor("t", TensorProto.INT64, [], [10**12]))
    cond = helper.make_node("Constant", [], ["cond"], value=helper.make_tensor("c", TensorProto.BOOL, [], [True]))
    graph = helper.make_graph([trips, cond, helper.make_node("Loop", ["trips", "cond", "x"], ["y"], body=body)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_no_limit_never_expires():
    deadline = Deadline(None)
    assert deadline.remaining() is None and not deadline.expired()
    deadline.check("anything")


def test_check_raises_once_the_time_is_up():
    deadline = Deadline(0.0)
    with pytest.raises(ScanTimeoutError, match=r"--timeout 0 s\) while estimating patterns"):
        deadline.check("estimating patterns")


def test_an_endless_onnxruntime_run_is_terminated_at_the_limit():
    session = ort.InferenceSession(endless_loop_model(), providers=["CPUExecutionProvider"])
    deadline = Deadline(1.0)
    started = time.monotonic()
    with pytest.raises(ScanTimeoutError, match="while classifying clean images"):
        with deadline.run_options("classifying clean images") as options:
            session.run(None, {"x": np.array(0.0, np.float32)}, options)
    assert time.monotonic() - started < 20


def test_a_run_that_finishes_in_time_returns_its_result():
    graph = helper.make_graph([helper.make_node("Neg", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    with Deadline(60.0).run_options("a quick run") as options:
        (y,) = session.run(None, {"x": np.array([1.0, -2.0], np.float32)}, options)
    np.testing.assert_array_equal(y, [-1.0, 2.0])
