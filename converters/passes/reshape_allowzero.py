"""Graph pass: drop ``allowzero=1`` from Reshape nodes where it cannot matter.

torch's dynamo exporter writes Reshape with allowzero=1 (opset 14+), which onnx2torch refuses.
allowzero only changes the meaning of a 0 in the target shape (a zero-size dimension instead of
"copy the input's dimension"). A constant target shape without zeros is unaffected; a computed
target shape holds a 0 only for an empty tensor, which a batch of images never produces.
"""
from __future__ import annotations

import onnx
from onnx import numpy_helper


def drop_reshape_allowzero(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` without needless allowzero=1; returns (model, number of nodes changed)."""
    targets = [i for i, n in enumerate(model.graph.node)
               if n.op_type == "Reshape" and any(a.name == "allowzero" and a.i == 1 for a in n.attribute)]
    if not targets:
        return model, 0
    model = onnx.ModelProto.FromString(model.SerializeToString())
    constants = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    constants[node.output[0]] = attribute.t
    changed = 0
    for index in targets:
        node = model.graph.node[index]
        shape = constants.get(node.input[1])
        if shape is not None and (numpy_helper.to_array(shape) == 0).any():
            continue  # a literal 0 with allowzero=1 means a real zero-size dimension: keep it
        kept = [a for a in node.attribute if a.name != "allowzero"]
        del node.attribute[:]
        node.attribute.extend(kept)
        changed += 1
    return model, changed
