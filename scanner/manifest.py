"""``--manifest FILE``: each model's input convention, output, class names and clean data, in TOML.

::

    [defaults]                      # optional: for every model
    data = "clean_images"           # paths are relative to the manifest's folder

    [[model]]
    glob = "vendor/**/*.onnx"       # or path = "vendor/a.onnx": exactly one of the two
    layout = "nhwc"                 # auto | nchw | nhwc | flat
    mean = [0.485, 0.456, 0.406]    # a number or a list of numbers (per channel)
    std = [0.229, 0.224, 0.225]
    input_scale = 255
    output = "logits"               # the class-score output
    class_names = ["cat", "dog", "bird"]
    data = "imagenet_sample"

Settings apply in order: ``[defaults]``, then every ``[[model]]`` entry that names the model, in
file order (a later one wins); options given on the command line win over all of them. A
``glob`` (``**`` crosses folders) or ``path`` that names no file is an error, as is an unknown
key or a value of the wrong type: a one-line ConfigError naming the file and the key (exit 2).
"""
from __future__ import annotations

import glob
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import LAYOUTS
from .errors import ConfigError

# manifest key -> ScanConfig field (data and class_names are not ScanConfig fields)
CONFIG_KEYS = {"layout": "layout", "mean": "mean", "std": "std", "input_scale": "input_scale",
               "output": "output_name"}
SETTING_KEYS = (*CONFIG_KEYS, "class_names", "data")
MATCH_KEYS = ("path", "glob")


@dataclass(frozen=True)
class ManifestEntry:
    """One ``[[model]]`` table: the files it names (resolved) and its settings."""

    where: str                                 # "[[model]] 2 (glob 'vendor/*.onnx')", for messages
    files: frozenset[Path]
    settings: dict[str, Any] = field(hash=False)


@dataclass(frozen=True)
class Manifest:
    path: Path
    defaults: dict[str, Any] = field(hash=False)
    entries: tuple[ManifestEntry, ...] = ()

    def settings_for(self, model: str | os.PathLike) -> dict[str, Any]:
        """The merged settings of ``model``: defaults, then each entry naming it, in order."""
        resolved = Path(model).resolve()
        merged = dict(self.defaults)
        for entry in self.entries:
            if resolved in entry.files:
                merged.update(entry.settings)
        return merged

    def models(self) -> list[Path]:
        """Every file the entries name, sorted (the models to scan when none are given)."""
        return sorted({f for entry in self.entries for f in entry.files})


def load_manifest(path: str | os.PathLike) -> Manifest:
    """Read and check a manifest; raises ConfigError (one line, naming the file and key)."""
    path = Path(path)
    try:
        import tomllib  # Python 3.11+; the rest of lred runs on 3.10
    except ImportError as exc:  # pragma: no cover (3.10 only)
        raise ConfigError(f"manifest {path}: reading TOML needs Python 3.11 or later (tomllib)") from exc
    try:
        document = tomllib.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise ConfigError(f"manifest {path}: cannot read it: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"manifest {path}: not valid TOML: {exc}") from exc
    base = path.resolve().parent
    for key in document:
        if key not in ("defaults", "model"):
            raise ConfigError(f"manifest {path}: unknown top-level key {key!r} (expected [defaults] and [[model]])")
    defaults = document.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ConfigError(f"manifest {path}: key 'defaults' must be a table ([defaults])")
    models = document.get("model", [])
    if not isinstance(models, list) or not all(isinstance(m, dict) for m in models):
        raise ConfigError(f"manifest {path}: key 'model' must be an array of tables ([[model]])")
    entries = tuple(_entry(path, base, i + 1, table) for i, table in enumerate(models))
    return Manifest(path, _settings(path, base, "[defaults]", defaults, allow_match=False), entries)


def _entry(path: Path, base: Path, number: int, table: dict[str, Any]) -> ManifestEntry:
    where = f"[[model]] {number}"
    given = [k for k in MATCH_KEYS if k in table]
    if len(given) != 1:
        raise ConfigError(f"manifest {path}: {where} needs exactly one of the keys 'path' and 'glob'")
    key = given[0]
    pattern = table[key]
    if not isinstance(pattern, str) or not pattern.strip() or "\x00" in pattern:
        raise ConfigError(f"manifest {path}: {where} key {key!r}: expected a non-empty string, got {pattern!r}")
    where = f"{where} ({key} {pattern!r})"
    target = base / pattern
    if key == "path":
        files = {target.resolve()} if target.is_file() else set()
    else:
        files = {Path(f).resolve() for f in glob.glob(str(target), recursive=True) if os.path.isfile(f)}
    if not files:
        raise ConfigError(f"manifest {path}: {where} key {key!r}: names no file (relative to {base})")
    return ManifestEntry(where, frozenset(files), _settings(path, base, where, table, allow_match=True))


def _settings(path: Path, base: Path, where: str, table: dict[str, Any], allow_match: bool) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for key, value in table.items():
        if allow_match and key in MATCH_KEYS:
            continue
        if key not in SETTING_KEYS:
            raise ConfigError(f"manifest {path}: {where}: unknown key {key!r} "
                              f"(known: {', '.join((*MATCH_KEYS, *SETTING_KEYS) if allow_match else SETTING_KEYS)})")
        settings[key] = _value(path, base, where, key, value)
    return settings


def _value(path: Path, base: Path, where: str, key: str, value: Any) -> Any:
    def wrong(expected: str) -> ConfigError:
        return ConfigError(f"manifest {path}: {where} key {key!r}: expected {expected}, got {value!r}")

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if key == "layout":
        if value not in LAYOUTS:
            raise wrong(f"one of {', '.join(LAYOUTS)}")
        return value
    if key in ("mean", "std"):
        values = [value] if number(value) else value
        if not isinstance(values, list) or not values or not all(number(v) for v in values):
            raise wrong("a number or a non-empty list of numbers")
        if key == "std" and not all(v > 0 for v in values):
            raise wrong("numbers > 0")
        return tuple(float(v) for v in values)
    if key == "input_scale":
        if not number(value) or value <= 0:
            raise wrong("a number > 0")
        return float(value)
    if key == "output":
        if not isinstance(value, str) or not value:
            raise wrong("an output name (a non-empty string)")
        return value
    if key == "class_names":
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise wrong("a non-empty list of strings")
        return tuple(value)
    # data
    if not isinstance(value, str) or not value or "\x00" in value:
        raise wrong("a path (a non-empty string)")
    return base / value
