"""converters/ops/unknown_rank.py: BatchNormalization and GlobalAveragePool after a Reshape whose
output rank shape inference cannot tell (the target shape is a slice with a computed start)."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.onnx_parity import IR_VERSION, assert_converts_like_onnxruntime, seeded


def _model():
    rng = np.random.default_rng(0)
    channels = 3
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("ReduceMax", ["x"], ["peak"], keepdims=0),
        helper.make_node("Mul", ["peak", "zero"], ["nothing"]),
        helper.make_node("Cast", ["nothing"], ["start_scalar"], to=TensorProto.INT64),
        helper.make_node("Unsqueeze", ["start_scalar", "axis0"], ["start"]),         # 0, but computed
        helper.make_node("Slice", ["shape", "start", "end"], ["same_shape"]),
        helper.make_node("Reshape", ["x", "same_shape"], ["reshaped"]),               # rank unknown here
        helper.make_node("BatchNormalization", ["reshaped", "gamma", "beta", "mean", "var"], ["normed"]),
        helper.make_node("MaxPool", ["normed"], ["maxed"], kernel_shape=[2, 2]),
        helper.make_node("GlobalAveragePool", ["maxed"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w"], ["y"], transB=1),
    ]
    initializers = {"zero": np.array(0, np.float32), "axis0": np.array([0], np.int64),
                    "end": np.array([4], np.int64),
                    "gamma": rng.uniform(0.5, 1.5, channels).astype(np.float32),
                    "beta": rng.normal(size=channels).astype(np.float32),
                    "mean": rng.normal(size=channels).astype(np.float32),
                    "var": rng.uniform(0.5, 1.5, channels).astype(np.float32),
                    "w": rng.normal(size=(4, channels)).astype(np.float32)}
    graph = helper.make_graph(nodes, "unknown_rank",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", channels, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                              initializer=[numpy_helper.from_array(v, k) for k, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = IR_VERSION
    return onnx.shape_inference.infer_shapes(model)


def test_batch_norm_max_pool_and_global_average_pool_after_a_reshape_of_unknown_rank():
    model = _model()
    inferred = {v.name: v for v in model.graph.value_info}
    assert "reshaped" not in inferred or not inferred["reshaped"].type.tensor_type.HasField("shape")
    converted = assert_converts_like_onnxruntime(model, seeded((2, 3, 5, 5)), atol=1e-4)
    assert any("observed rank" in p for p in converted.passes)


def test_rank_free_converters_alone_without_the_observed_ranks():
    # onnx2torch with this package's registry, on the graph as shape inference leaves it
    # (MaxPool has no rank-free converter, so it is left out here)
    import torch
    from onnx2torch import convert

    import converters.ops  # noqa: F401  (registers the converters)
    model = _model()
    graph = model.graph
    pool = next(n for n in graph.node if n.op_type == "MaxPool")
    graph.node.remove(pool)
    next(n for n in graph.node if n.op_type == "GlobalAveragePool").input[0] = "normed"
    x = seeded((2, 3, 5, 5))
    from tests.onnx_parity import onnxruntime_outputs
    result = convert(model).eval()(torch.tensor(x)).detach().numpy()
    np.testing.assert_allclose(result, onnxruntime_outputs(model, x), atol=1e-4)
