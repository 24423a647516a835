"""Class names for the reports (``lred scan --class-names FILE|a,b,c``).

Names are labels for a person: they appear in the text summary, the JSON report (``class_names``)
and the HTML report, and nothing the scan decides reads them. They come from the user or from a
vendor's file, so every renderer treats them as untrusted text (escaped, never interpreted).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from .errors import ConfigError

MAX_NAME_LENGTH = 200


def parse_class_names(spec: str) -> tuple[str, ...]:
    """The names ``spec`` gives: the lines of a text file (one name per line), a JSON list of
    strings in a file, or a comma-separated list. ConfigError (one line) when none of these."""
    path = Path(spec)
    if path.is_file():
        return _checked(_read_file(path), f"class-names file {spec}")
    if "," in spec:
        return _checked([name.strip() for name in spec.split(",")], "--class-names list")
    raise ConfigError(f"--class-names {spec!r}: no such file, and not a comma-separated list of names "
                      "(give a file with one name per line, a JSON list, or a,b,c)")


def _read_file(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"class-names file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    if text.lstrip().startswith("["):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"class-names file {path}: not a valid JSON list ({exc.msg}, line {exc.lineno})") from exc
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"class-names file {path}: expected a JSON list of strings")
        return [n.strip() for n in names]
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _checked(names: Sequence[str], where: str) -> tuple[str, ...]:
    """Every name non-empty, at most MAX_NAME_LENGTH characters, and no name twice."""
    if not names:
        raise ConfigError(f"{where}: no class names")
    for i, name in enumerate(names):
        if not name:
            raise ConfigError(f"{where}: the name of class {i} is empty")
        if len(name) > MAX_NAME_LENGTH:
            raise ConfigError(f"{where}: the name of class {i} is longer than {MAX_NAME_LENGTH} characters")
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise ConfigError(f"{where}: classes {seen[name]} and {i} have the same name {name!r}")
        seen[name] = i
    return tuple(names)


def check_class_names(names: Sequence[str], num_classes: int) -> None:
    """ConfigError unless there is one name per class (called once the model's K is known)."""
    if names and len(names) != num_classes:
        raise ConfigError(f"--class-names gives {len(names)} names, but the model has {num_classes} classes")


def class_label(index: int, names: Sequence[str]) -> str:
    """'2 (Pullover)' when the class has a name, else '2'."""
    return f"{index} ({names[index]})" if 0 <= index < len(names) else str(index)
