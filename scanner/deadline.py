"""The scan's time limit (``--timeout``): every step checks it, and onnxruntime calls are cut off.

A scan runs Python loops (pattern estimation, checked once per iteration) and onnxruntime
sessions, which run in C++ and do not return to Python until they finish: a hostile graph (a
Loop of 10^12 trips) would hold a Python-level check off forever. onnxruntime stops a running
``session.run`` when another thread sets ``RunOptions.terminate``; ``Deadline.run_options``
arms a timer thread that does so when the time is up, and the caller turns the resulting
failure into :class:`ScanTimeoutError` (exit 2), naming the step that ran out of time.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from .errors import ScanTimeoutError


class Deadline:
    """A time limit in seconds from construction (None: no limit)."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self._ends = None if seconds is None else time.monotonic() + seconds

    def remaining(self) -> float | None:
        """Seconds left (never below 0), or None without a limit."""
        return None if self._ends is None else max(0.0, self._ends - time.monotonic())

    def expired(self) -> bool:
        return self._ends is not None and time.monotonic() >= self._ends

    def error(self, stage: str) -> ScanTimeoutError:
        return ScanTimeoutError(f"the scan ran past its time limit (--timeout {self.seconds:g} s) while "
                                f"{stage}; raise --timeout, or lower --images-per-class")

    def check(self, stage: str) -> None:
        """Raise ScanTimeoutError when the time is up."""
        if self.expired():
            raise self.error(stage)

    @contextlib.contextmanager
    def run_options(self, stage: str) -> Iterator[Any]:
        """onnxruntime ``RunOptions`` for one ``session.run``, terminated by a timer thread when the
        limit passes. A run that fails after the terminate flag was set raises ScanTimeoutError
        from the failure; without a limit, plain options (no thread)."""
        import onnxruntime as ort

        self.check(stage)
        options = ort.RunOptions()
        options.log_severity_level = 4          # onnxruntime's own error line would leak to stderr
        remaining = self.remaining()
        if remaining is None:
            yield options
            return
        fired = threading.Event()

        def terminate() -> None:
            fired.set()
            options.terminate = True

        timer = threading.Timer(remaining, terminate)
        timer.daemon = True
        timer.start()
        try:
            yield options
        except Exception as exc:
            if fired.is_set():
                raise self.error(stage) from exc
            raise
        finally:
            timer.cancel()
        if fired.is_set():               # finished just as the flag was set: the limit has passed
            raise self.error(stage)


NO_DEADLINE = Deadline(None)
