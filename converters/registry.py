"""The one place that touches onnx2torch's private converter registry.

onnx2torch looks a node's converter up in ``_CONVERTER_REGISTRY`` by (domain, op type, the op
schema's ``since_version`` at the model's opset). The modules in ``converters/ops/`` change that
table only through the three operations here, each recorded as an :class:`Entry`:

* ``add``      a key onnx2torch has no converter for (a newer opset, an op it lacks);
* ``override`` a key onnx2torch has a converter for, replaced by ours;
* ``wrap``     a key onnx2torch has a converter for, put behind ours, which calls it for the
               nodes it does not handle itself.

A key we register twice is an error at import, and so is an ``add`` of a key onnx2torch already
covers or an ``override``/``wrap`` of one it does not (a different onnx2torch than the one
pinned in setup.cfg): the table below then no longer says what runs. ``python -m
converters.support_table`` prints :data:`ENTRIES` as Markdown.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, cast

from onnx2torch.node_converters.registry import (
    _CONVERTER_REGISTRY,
    OperationDescription,
    get_converter,
)
from onnx2torch.node_converters.slice import _get_slices
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult

Converter = Callable[[OnnxNode, OnnxGraph], OperationConverterResult]
Kind = Literal["add", "override", "wrap"]

# onnx2torch's own slice arithmetic (private there; ops/slice_tuple.py reuses it):
# (data, starts, ends, axes, steps) -> (slices, flip dims, axes to flip)
slices_from_operands = _get_slices


class RegistryError(RuntimeError):
    """A registration that would make the converter table say something other than what runs."""


@dataclass(frozen=True)
class Entry:
    """One registration: ``kind`` for ``op_type`` at each of ``versions`` (since-versions of the op
    schema), made by ``module`` for ``reason`` (one line)."""

    op_type: str
    versions: tuple[int, ...]
    kind: Kind
    module: str
    reason: str
    domain: str = ""


class ConverterRegistry:
    """Registrations into one converter table (onnx2torch's, or a test's own dict)."""

    def __init__(self, table: dict) -> None:
        self._table = table
        self.entries: list[Entry] = []
        self._ours: dict[OperationDescription, Entry] = {}

    def add(self, op_type: str, versions: tuple[int, ...], converter: Converter, reason: str,
            domain: str = "", module: str | None = None) -> Entry:
        """Register ``converter`` where onnx2torch has none."""
        return self._register("add", op_type, versions, lambda _: converter, reason, domain,
                              module or converter.__module__)

    def override(self, op_type: str, versions: tuple[int, ...], converter: Converter, reason: str,
                 domain: str = "", module: str | None = None) -> Entry:
        """Replace onnx2torch's converter by ``converter``."""
        return self._register("override", op_type, versions, lambda _: converter, reason, domain,
                              module or converter.__module__)

    def wrap(self, op_type: str, versions: tuple[int, ...], make_converter: Callable[[Converter], Converter],
             reason: str, domain: str = "", module: str | None = None) -> Entry:
        """Replace onnx2torch's converter ``original`` by ``make_converter(original)``."""
        return self._register("wrap", op_type, versions, make_converter, reason, domain,
                              module or make_converter.__module__)

    def _register(self, kind: Kind, op_type: str, versions: tuple[int, ...],
                  make_converter: Callable[[Converter], Converter], reason: str, domain: str,
                  module: str) -> Entry:
        entry = Entry(op_type, tuple(versions), kind, module, reason, domain)
        keys = [OperationDescription(domain, op_type, version) for version in entry.versions]
        for key in keys:
            if key in self._ours:
                raise RegistryError(f"{op_type} {key.version} is registered twice: by {self._ours[key].module} "
                                    f"({self._ours[key].kind}) and by {module} ({kind})")
            present = key in self._table
            if kind == "add" and present:
                raise RegistryError(f"{module} adds {op_type} {key.version}, which this onnx2torch already "
                                    "converts: override or wrap it instead, or drop ours")
            if kind != "add" and not present:
                raise RegistryError(f"{module} would {kind} onnx2torch's {op_type} {key.version}, which this "
                                    "onnx2torch does not have: add it instead")
        for key in keys:
            # None only for an "add", whose make_converter ignores its argument
            self._table[key] = make_converter(cast(Converter, self._table.get(key)))
            self._ours[key] = entry
        self.entries.append(entry)
        return entry

    def has_converter(self, op_type: str, version: int, domain: str = "") -> bool:
        """Whether a converter is registered for exactly this since-version."""
        return OperationDescription(domain, op_type, version) in self._table

    def registered_versions(self, op_type: str, domain: str = "") -> set[int]:
        """The since-versions of ``op_type`` that have a converter (onnx2torch's and ours)."""
        return {key.version for key in self._table if key.operation_type == op_type and key.domain == domain}


REGISTRY = ConverterRegistry(_CONVERTER_REGISTRY)
ENTRIES = REGISTRY.entries
add = REGISTRY.add
override = REGISTRY.override
wrap = REGISTRY.wrap
registered_versions = REGISTRY.registered_versions


def converter_for(op_type: str, version: int, domain: str = "") -> Converter:
    """The converter onnx2torch would use for ``op_type`` at opset ``version`` (mapped to the
    schema's since-version); NotImplementedError when there is none."""
    return get_converter(operation_type=op_type, version=version, domain=domain)
