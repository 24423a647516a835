"""Layering: ``converters`` (lower) never imports ``scanner`` (upper), and no module of either
package imports itself back at import time (directly, or through a package ``__init__``)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("converters", "scanner")


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the two packages (``__init__`` as the package)."""
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _import_time_statements(body: list[ast.stmt]):
    """Import statements that run when the module is imported: not inside functions, not under
    ``if TYPE_CHECKING``."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from _import_time_statements(node.orelse)
        else:
            for field in ("body", "orelse", "finalbody", "handlers"):
                yield from _import_time_statements(getattr(node, field, []) or [])


def _depend(edges: set[str], modules: dict[str, Path], ancestors: set[str], target: str,
            names: tuple[str, ...] = ()) -> None:
    """Add the modules that importing ``target`` (``from target import names``) runs first."""
    parts = target.split(".")
    for i in range(1, len(parts)):
        prefix = ".".join(parts[:i])
        if prefix in modules and prefix not in ancestors:
            edges.add(prefix)
    submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
    edges.update(submodules)
    if target in modules and (len(submodules) < len(names) or target not in ancestors):
        edges.add(target)


def import_graph() -> dict[str, set[str]]:
    """Module -> modules of the two packages it imports at import time.

    ``import a.b.c`` (or ``from a.b.c import name``) runs the ``__init__`` of ``a`` and ``a.b``
    first, except where they are the importer's own enclosing packages (already being imported);
    ``from a import name`` depends on ``a.name`` when that is a module, else on ``a`` itself
    (reading a name of a package that may be only half-initialized)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)} | (
            {name} if is_package else set())
        edges = graph.setdefault(name, set())

        for node in _import_time_statements(ast.parse(path.read_text()).body):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    _depend(edges, modules, ancestors, alias.name)
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                _depend(edges, modules, ancestors, base, tuple(alias.name for alias in node.names))
        edges.discard(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle found by depth-first search (one per back edge)."""
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        stack.append(node)
        for successor in sorted(graph.get(node, ())):
            if state.get(successor) == "open":
                found.append(stack[stack.index(successor):] + [successor])
            elif successor not in state:
                visit(successor, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return found


def test_the_import_graph_of_scanner_and_converters_has_no_cycle():
    graph = import_graph()
    assert "converters.errors" in graph["scanner.errors"]     # the checker sees the re-export
    assert cycles(graph) == []


def test_no_converters_module_imports_scanner():
    upward = {(module, target) for module, targets in import_graph().items() if module.startswith("converters")
              for target in targets if target.split(".")[0] == "scanner"}
    assert upward == set()


def test_the_cycle_check_finds_a_circle_through_a_package_init():
    # the circle this layering removed: converters/__init__ -> scanner.errors runs scanner/__init__,
    # which imports the pipeline, which imports converters
    graph = {"converters": {"scanner", "scanner.errors"}, "scanner": {"scanner.pipeline"},
             "scanner.pipeline": {"converters"}, "scanner.errors": set()}
    assert cycles(graph) == [["converters", "scanner", "scanner.pipeline", "converters"]]


def _fresh(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_importing_converters_in_a_fresh_interpreter_does_not_import_scanner():
    code = "import sys, converters; print(sorted(m for m in sys.modules if m.split('.')[0] == 'scanner'))"
    assert _fresh(code) == "[]"


def test_every_module_of_both_packages_comes_from_this_checkout():
    # an editable install elsewhere can serve a module that was moved or deleted here
    code = ("import sys, converters.support_table, scanner.cli, scanner.pipeline\n"
            "print(sorted(n for n, m in sys.modules.items() if n.split('.')[0] in ('converters', 'scanner')\n"
            f"             and not (getattr(m, '__file__', '') or '').startswith({str(ROOT)!r})))")
    assert _fresh(code) == "[]"


def test_scanner_imports_in_a_fresh_interpreter_and_shares_the_error_classes():
    code = ("from scanner import scan, ScanConfig, LredError\n"
            "import converters.errors, scanner.errors\n"
            "print(callable(scan), LredError is converters.errors.LredError,\n"
            "      scanner.errors.UnsupportedOperatorError is converters.errors.UnsupportedOperatorError)")
    assert _fresh(code) == "True True True"
