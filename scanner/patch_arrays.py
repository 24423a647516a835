"""The command line's side of patch scans: ``--trigger`` resolved to a method, and the masks and
masked patterns saved beside the report by ``--save-patterns`` (listed in its ``saved_arrays``).

Kept free of torch: the CLI resolves ``--trigger`` before the heavy imports.
"""
from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .failure import atomic_write
from .methods import METHODS

if TYPE_CHECKING:
    from .pipeline import ScanOutcome
    from .report import ScanReport


def resolve_trigger(method: str, trigger: str | None) -> tuple[str, str]:
    """(method, trigger) for ScanConfig from ``--method`` and ``--trigger``: ``patch`` turns lred into
    lred-patch (nc and lred-patch stay); ``both`` needs lred; a patch method alone means ``patch``."""
    engine = METHODS[method].engine
    if trigger is None:
        return method, "patch" if engine == "patch" else "additive"
    if trigger == "patch":
        if engine == "patch":
            return method, trigger
        if method == "lred":
            return "lred-patch", trigger
        raise click.UsageError(f"--trigger patch needs --method lred, lred-patch or nc, not {method}")
    if trigger == "both" and method != "lred":
        raise click.UsageError(f"--trigger both runs lred and lred-patch; it cannot be combined with --method {method}")
    if trigger == "additive" and engine == "patch":
        raise click.UsageError(f"--method {method} looks for patch triggers; it cannot be combined with "
                               "--trigger additive")
    return method, trigger


def _npy(array: object) -> bytes:
    import numpy as np
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


def save_masks(directory: Path, outcome: ScanOutcome) -> ScanReport:
    """Write mask_class_<t>.npy (H, W) and masked_pattern_class_<t>.npy (H, W, C), float32, into
    ``directory``; return the report with ``saved_arrays`` listing every array there (the
    additive patterns that ``_save_patterns`` wrote, then these)."""
    directory.mkdir(parents=True, exist_ok=True)
    names = [f"pattern_class_{k}.npy" if isinstance(k, int) else f"pattern_pair_{k[0]}_to_{k[1]}.npy"
             for k in sorted(outcome.patterns)]
    for t in sorted(outcome.masks):
        for name, array in ((f"mask_class_{t}.npy", outcome.masks[t]),
                            (f"masked_pattern_class_{t}.npy", outcome.masked_patterns[t])):
            atomic_write(directory / name, _npy(array))
            names.append(name)
    return dataclasses.replace(outcome.report, saved_arrays=tuple(names))
