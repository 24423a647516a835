"""Graph pass: a weight read through an Identity node is read directly.

torch's TorchScript exporter (``dynamo=False``) stores identical constant tensors once and hands
them to their other users through Identity nodes (torchvision's resnet18 with freshly
initialized, all-zero folded biases: 16 of them). onnx2torch takes a Conv or Gemm weight and bias
only from an initializer, so a bias that arrives through an Identity stops the conversion with a
KeyError. Rewiring every user of such an Identity to the initializer itself computes the same
graph.
"""
from __future__ import annotations

import onnx


def read_weights_directly(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` without Identity nodes on initializers; returns (model, nodes removed)."""
    initializers = {t.name for t in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    aliases: dict[str, str] = {}
    for node in model.graph.node:      # topological order: an Identity of an alias resolves too
        if node.op_type == "Identity" and (node.domain or "") in ("", "ai.onnx") and node.output[0] not in outputs:
            source = aliases.get(node.input[0], node.input[0])
            if source in initializers:
                aliases[node.output[0]] = source
    if not aliases:
        return model, 0
    model = onnx.ModelProto.FromString(model.SerializeToString())
    kept = [n for n in model.graph.node if not (n.op_type == "Identity" and n.output[0] in aliases)]
    for node in kept:
        for position, name in enumerate(node.input):
            if name in aliases:
                node.input[position] = aliases[name]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    # value_info entries of the removed names would describe tensors that no longer exist
    value_info = [v for v in model.graph.value_info if v.name not in aliases]
    del model.graph.value_info[:]
    model.graph.value_info.extend(value_info)
    return model, len(aliases)
