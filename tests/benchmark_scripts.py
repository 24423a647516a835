"""Importing a script of benchmarks/ in the tests (the folder is not a package)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load_benchmark(stem: str, name: str | None = None) -> ModuleType:
    """benchmarks/<stem>.py as a module called ``name`` (default ``stem``), registered in
    sys.modules first: dataclasses look their module up there."""
    spec = importlib.util.spec_from_file_location(name or stem, BENCHMARKS / f"{stem}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
