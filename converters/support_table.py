"""The operators we add to, override in or wrap around onnx2torch, as a Markdown table.

Generated from ``converters.registry.ENTRIES`` (what ``converters.ops`` registered at import),
so it cannot drift from the code::

    python -m converters.support_table
"""
from __future__ import annotations

from . import ops  # noqa: F401  (importing it fills the registry)
from .registry import ENTRIES, Entry

KIND_MEANING = {"add": "added (onnx2torch has none)", "override": "replaces onnx2torch's",
                "wrap": "in front of onnx2torch's, which it calls otherwise"}


def _row(entry: Entry) -> str:
    op = f"{entry.domain}::{entry.op_type}" if entry.domain else entry.op_type
    versions = ", ".join(str(version) for version in entry.versions)
    module = entry.module.removeprefix("converters.").replace(".", "/") + ".py"
    return f"| {op} | {versions} | {entry.kind} | `{module}` | {entry.reason.replace('|', '/')} |"


def markdown_table(entries: list[Entry] = ENTRIES) -> str:
    """One row per registration, sorted by op type then first opset; kinds explained below."""
    rows = [_row(entry) for entry in sorted(entries, key=lambda e: (e.domain, e.op_type, e.versions))]
    legend = "; ".join(f"**{kind}**: {meaning}" for kind, meaning in KIND_MEANING.items())
    return "\n".join(["| Op | Opsets | Kind | Module | Why |", "|---|---|---|---|---|", *rows, "", legend])


if __name__ == "__main__":
    print(markdown_table())
