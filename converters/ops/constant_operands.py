"""What the converters for constant operands share (constant_reshape.py, constant_pads.py,
slice_tuple.py): reading an operand that is an initializer or a Constant node at conversion,
a module that takes the data input alone, and wrapping onnx2torch's own converter so that it
still handles the nodes whose operands are computed in the graph.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, get_const_value

from .. import registry

# module for a node whose operands are constants, or None to leave the node to onnx2torch
ConstantModule = Callable[[OnnxNode, OnnxGraph], "torch.nn.Module | None"]


def constant_tensor(name: str, graph: OnnxGraph) -> torch.Tensor | None:
    """The value of input ``name`` when it is an initializer or a Constant node's output, else
    None (computed in the graph)."""
    try:
        value = get_const_value(name, graph)
    except (KeyError, NotImplementedError, ValueError):
        return None
    return value if isinstance(value, torch.Tensor) else None


def data_only(node: OnnxNode, module: torch.nn.Module) -> OperationConverterResult:
    """``module`` fed the node's first input alone (its operands are held in the module)."""
    return OperationConverterResult(torch_module=module,
                                    onnx_mapping=OnnxMapping(inputs=(node.input_values[0],),
                                                             outputs=node.output_values))


def wrap_registered(op_type: str, versions: tuple[int, ...], constant_module: ConstantModule,
                    reason: str) -> registry.Entry:
    """Put in front of onnx2torch's ``op_type`` converters one that uses ``constant_module``
    where it gives a module (recorded in the registry as a wrap by ``constant_module``'s module)."""
    return registry.wrap(op_type, versions, lambda original: _wrapper(original, constant_module, op_type), reason,
                         module=constant_module.__module__)


def _wrapper(original: registry.Converter, constant_module: ConstantModule, op_type: str) -> registry.Converter:
    def convert(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
        module = constant_module(node, graph)
        return original(node, graph) if module is None else data_only(node, module)

    convert.original = original  # type: ignore[attr-defined]  # the wrapped converter, for a reader of the table
    convert.__name__ = f"convert_{op_type.lower()}_with_constant_operands"
    return convert
