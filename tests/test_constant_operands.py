"""converters/ops/constant_pads.py and passes/fold_constants.py: Pad pads and constant bookkeeping held as
constants, so that no pass reads a tensor back to the host (a stall on a GPU, and no CUDA graph)."""
import collections
import importlib

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import converters
from converters.passes.fold_constants import FOLD_LIMIT, fold_constants
from tests.onnx_parity import IR_VERSION, assert_converts_like_onnxruntime, one_node_model, onnxruntime_outputs, seeded

FIXTURES = "tests/fixtures/exported"


def _modules(converted) -> collections.Counter:
    return collections.Counter(type(m).__name__ for m in converted.module.modules())


@pytest.mark.parametrize("opset", [11, 13, 18])
@pytest.mark.parametrize("mode, fill", [("constant", None), ("constant", 0.5), ("reflect", None), ("edge", None)])
def test_pad_with_constant_pads_is_static_and_matches_onnxruntime(opset, mode, fill):
    inputs = {"pads": np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64)}
    names = ["x", "pads"]
    if fill is not None:
        inputs["fill"] = np.array(fill, np.float32)
        names.append("fill")
    model = one_node_model(helper.make_node("Pad", names, ["y"], mode=mode), ["N", 3, 5, 5], opset, inputs)
    converted = assert_converts_like_onnxruntime(model, seeded((2, 3, 5, 5)))
    modules = _modules(converted)
    assert modules["OnnxPadStatic"] == 1 and modules["OnnxPadDynamic"] == 0


@pytest.mark.parametrize("name", ["torch_ts_opset11", "torch_ts_opset13_batch1", "torch_ts_opset17"])
def test_torchscript_pad_bookkeeping_is_folded(name):
    model = onnx.load(f"{FIXTURES}/{name}.onnx")
    output = model.graph.output[0].name
    converted = converters.to_torch(model, model.graph.input[0].name, output)
    assert any(p.startswith("computed ") and "on constants once" in p for p in converted.passes)
    modules = _modules(converted)
    assert modules["OnnxPadStatic"] == 1
    assert modules["OnnxPadDynamic"] == modules["OnnxConstantOfShape"] == 0
    batch = 1 if "batch1" in name else 3
    x = seeded((batch, 1, 28, 28))
    np.testing.assert_allclose(converted.module(torch.tensor(x)).detach().numpy(),
                               onnxruntime_outputs(model, x, output), atol=1e-5, rtol=0)


def test_only_small_computations_on_constants_are_folded():
    big = helper.make_node("ConstantOfShape", ["big_shape"], ["big"], value=helper.make_tensor("v", 1, [1], [0.0]))
    small = helper.make_node("ConstantOfShape", ["small_shape"], ["small"],
                             value=helper.make_tensor("v", 1, [1], [1.0]))
    nodes = [big, small, helper.make_node("ReduceSum", ["big"], ["big_sum"], keepdims=0),
             helper.make_node("Add", ["x", "small"], ["shifted"]),
             helper.make_node("Add", ["shifted", "big_sum"], ["y"])]
    graph = helper.make_graph(nodes, "fold", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                              initializer=[numpy_helper.from_array(np.array([FOLD_LIMIT + 1], np.int64), "big_shape"),
                                           numpy_helper.from_array(np.array([4], np.int64), "small_shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = IR_VERSION
    folded, count = fold_constants(model)
    assert count == 1                                  # the small ConstantOfShape; not the big one, not x's Adds
    assert [n.op_type for n in folded.graph.node] == ["ConstantOfShape", "ReduceSum", "Add", "Add"]
    x = seeded((2, 4))
    np.testing.assert_allclose(onnxruntime_outputs(folded, x), onnxruntime_outputs(model, x), rtol=0, atol=0)


def test_a_huge_constant_is_never_built(monkeypatch):
    # a hostile model: ConstantOfShape to 10^12 elements; the evaluator must not even be asked
    fold = importlib.import_module("converters.passes.fold_constants")   # the module, not the function

    asked = []
    monkeypatch.setattr(fold, "ReferenceEvaluator", lambda *args, **kwargs: asked.append(args))
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"]), helper.make_node("Add", ["x", "big"], ["y"])]
    graph = helper.make_graph(nodes, "hostile", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(np.array([10 ** 6, 10 ** 6], np.int64), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    assert fold_constants(model) == (model, 0)
    assert asked == []
