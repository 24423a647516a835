"""When a batch may reuse a report already in ``--out`` instead of scanning the model again.

A report is reused only when it is a finished scan (verdict ``backdoor`` or ``clean``: an error
report is always retried) of the same model file (sha256), the same clean data as loaded (the
audit trail's ``data_sha256``, recomputed here from the files without decoding them) and the same
configuration (``config_digest``).

"Same configuration" is defined by ``config_digest``: the sha256 of every ScanConfig field
(``ScanConfig.as_dict``, which adds the resolved step schedule) except those listed in
``RESULT_NEUTRAL_FIELDS``, plus the lred version. A new ScanConfig field therefore counts by
default; only ``timeout`` is left out, because it decides whether a scan finishes, never what a
finished scan reports. Fields that may change the arithmetic only in the last bits (``device``,
``batch_images``, ``cuda_graphs``) do count: a report is reused only for the same request.
Kept free of torch (the command line computes digests before the heavy imports).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from . import __version__
from .config import ScanConfig
from .data import IMAGE_SUFFIXES, file_sha256_of, folder_sha256

RESULT_NEUTRAL_FIELDS = ("timeout",)
REUSABLE_VERDICTS = ("backdoor", "clean")


def config_digest(config: ScanConfig) -> str:
    """sha256 (hex) of the configuration that decides a scan's result (see the module docstring)."""
    fields = {k: v for k, v in config.as_dict().items() if k not in RESULT_NEUTRAL_FIELDS}
    fields["lred_version"] = __version__
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), allow_nan=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def clean_data_sha256(path: str | os.PathLike) -> str | None:
    """The ``data_sha256`` a scan of ``path`` would record (scanner/data.py), without decoding
    an image: the .npz file's sha256, or the sha256 over every image file of a class-folder
    tree. None when ``path`` is neither (the scan will say why)."""
    path = Path(path)
    try:
        if path.is_file():
            return file_sha256_of(path)
        if not path.is_dir():
            return None
        hashes = [(file.relative_to(path).as_posix(), file_sha256_of(file))
                  for class_dir in path.iterdir() if class_dir.is_dir()
                  for file in class_dir.iterdir()
                  if file.suffix.lower() in IMAGE_SUFFIXES and file.is_file()]
    except OSError:
        return None
    return folder_sha256(hashes)


def reusable_report(path: Path, model_sha256: str, data_sha256: str | None, digest: str) -> dict[str, Any] | None:
    """The report at ``path`` when it is a finished scan of this model, data and configuration;
    else None (absent, unreadable, an error report, another schema version, or any hash differs)."""
    from .reporters import JSON_SCHEMA_VERSION

    if data_sha256 is None:
        return None
    try:
        report = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict) or report.get("schema_version") != JSON_SCHEMA_VERSION:
        return None
    model, audit = report.get("model"), report.get("audit")
    if not isinstance(model, dict) or not isinstance(audit, dict):
        return None
    same = (report.get("verdict") in REUSABLE_VERDICTS and report.get("config_digest") == digest
            and model.get("sha256") == model_sha256 and audit.get("data_sha256") == data_sha256)
    return report if same else None
