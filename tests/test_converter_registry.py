"""converters/registry.py: the one door to onnx2torch's converter table, and the support table
generated from it."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import converters.ops  # noqa: F401  (registers our converters: fills ENTRIES)
from converters.registry import ENTRIES, ConverterRegistry, RegistryError

ROOT = Path(__file__).resolve().parents[1]


def _convert_a(node, graph):
    return "a"


def _convert_b(node, graph):
    return "b"


def _onnx2torch_like_table() -> dict:
    from onnx2torch.node_converters.registry import OperationDescription
    return {OperationDescription("", "Relu", 14): _convert_a}


def test_add_installs_the_converter_and_records_the_entry():
    table = _onnx2torch_like_table()
    registry = ConverterRegistry(table)
    entry = registry.add("Gelu", (20,), _convert_b, "a reason")
    assert registry.has_converter("Gelu", 20)
    assert table[next(k for k in table if k.operation_type == "Gelu")] is _convert_b
    assert (entry.kind, entry.versions, entry.module, entry.reason) == ("add", (20,), __name__, "a reason")
    assert registry.entries == [entry]


def test_a_key_we_register_twice_is_an_error():
    registry = ConverterRegistry(_onnx2torch_like_table())
    registry.add("Gelu", (20,), _convert_a, "first")
    with pytest.raises(RegistryError, match="registered twice"):
        registry.add("Gelu", (20, 21), _convert_b, "second")
    registry.override("Relu", (14,), _convert_b, "first")
    with pytest.raises(RegistryError, match="registered twice"):
        registry.wrap("Relu", (14,), lambda original: original, "second")
    assert [e.reason for e in registry.entries] == ["first", "first"]


def test_add_refuses_a_key_onnx2torch_has_and_override_or_wrap_one_it_lacks():
    registry = ConverterRegistry(_onnx2torch_like_table())
    with pytest.raises(RegistryError, match="already converts"):
        registry.add("Relu", (14,), _convert_b, "x")
    with pytest.raises(RegistryError, match="does not have"):
        registry.override("Gelu", (20,), _convert_b, "x")
    with pytest.raises(RegistryError, match="does not have"):
        registry.wrap("Gelu", (20,), lambda original: original, "x")
    assert registry.entries == []


def test_wrap_hands_onnx2torch_s_converter_to_ours():
    table = _onnx2torch_like_table()
    registry = ConverterRegistry(table)
    registry.wrap("Relu", (14,), lambda original: lambda node, graph: original(node, graph) + "+ours", "x")
    assert next(iter(table.values()))(None, None) == "a+ours"


def test_every_change_to_onnx2torch_s_table_is_a_recorded_entry():
    code = ("from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY as table\n"
            "before = dict(table)\n"
            "import converters.ops\n"
            "from converters.registry import ENTRIES\n"
            "changed = {k for k in table if before.get(k) is not table[k]}\n"
            "recorded = {(e.domain, e.op_type, v) for e in ENTRIES for v in e.versions}\n"
            "print(changed == {tuple(k) for k in recorded}, len(changed))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    ok, count = out.stdout.split()
    assert ok == "True" and int(count) == sum(len(e.versions) for e in ENTRIES) > 0


def test_only_the_registry_module_touches_onnx2torch_private_names():
    offenders = []
    for path in (ROOT / "converters").rglob("*.py"):
        if path.name == "registry.py" and path.parent.name == "converters":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("onnx2torch") and (
                    node.module == "onnx2torch.node_converters.registry"
                    or any(alias.name.startswith("_") for alias in node.names)):
                offenders.append(f"{path.relative_to(ROOT)}: from {node.module} import "
                                     + ", ".join(alias.name for alias in node.names))
    assert offenders == []


def test_the_support_table_prints_one_row_per_registry_entry():
    out = subprocess.run([sys.executable, "-m", "converters.support_table"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| Op ")]
    assert out.startswith("| Op | Opsets | Kind | Module | Why |")
    assert len(rows) == len(ENTRIES)
    for entry in ENTRIES:
        cells = (f"| {entry.op_type} | {', '.join(map(str, entry.versions))} | {entry.kind} | "
                 f"`{entry.module.removeprefix('converters.').replace('.', '/')}.py` | ")
        assert sum(row.startswith(cells) for row in rows) == 1, cells
    assert {"add", "override", "wrap"} == {entry.kind for entry in ENTRIES}


def test_the_documented_converter_table_is_the_registry():
    """docs/exporters.md lists exactly the registry's rows (op, kind, module, reason; the opset lists
    of the newer-opset rows follow the installed onnx, so they are left out of the comparison)."""
    from converters.support_table import markdown_table as markdown

    def rows(text: str) -> set[tuple[str, ...]]:
        cells = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("| ")]
        return {tuple(c.strip() for c in (row[0], row[2], row[3], row[4])) for row in cells if len(row) == 5
                and row[0].strip() != "Op"}

    documented = (ROOT / "docs" / "exporters.md").read_text().split("## Converters lred registers", 1)[1]
    assert rows(documented) == rows(markdown()) and len(rows(markdown())) == len(ENTRIES)
