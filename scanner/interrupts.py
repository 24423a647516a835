"""SIGINT and SIGTERM end a command-line run like any other failure: exit 2, an error report, no traceback.

Without this, SIGTERM (what ``timeout``, batch schedulers and CI runners send) kills the process
with status 143 and no report, and an old report at the ``--json`` path would survive and read as
this model's result; SIGINT during the heavy imports (torch takes seconds) prints a traceback.
Only the command line installs these handlers (``scanner.entry``); the library leaves signals alone.
"""
from __future__ import annotations

import signal
from types import FrameType

from .errors import InterruptedScanError

SIGNALS = {signal.SIGINT: "SIGINT (interrupted)", signal.SIGTERM: "SIGTERM (terminated)"}


def _raise(signum: int, frame: FrameType | None) -> None:
    # a second signal while the error report is written must not cut it short
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    raise InterruptedScanError(f"stopped by {SIGNALS[signal.Signals(signum)]} before the run finished")


def raise_on_signals() -> None:
    """From now on, SIGINT and SIGTERM raise InterruptedScanError in the main thread (once)."""
    for s in SIGNALS:
        signal.signal(s, _raise)
