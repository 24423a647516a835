"""How the command line shows a batch's progress on stderr (``scanner.batch.BatchProgress``).

On a terminal: two tqdm bars with ETA, one over the batch (models) and one for the model being
scanned (its pattern estimations); elsewhere (CI logs, files): plain lines, estimation updates at
most every ``LINE_INTERVAL_SECONDS``. ``--quiet``: nothing. Model paths are escaped (``printable``).
"""
from __future__ import annotations

import re
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from .batch import SilentProgress
from .reporters import printable
from .summary import BatchRow, outcome_text

# the pipeline's estimation messages: "iteration 40: 3/10 estimations done", "lred: 10 pattern estimations on ..."
DONE = re.compile(r"(\d+)/(\d+) estimations done")
STARTED = re.compile(r"(\d+) pattern estimations")
LINE_INTERVAL_SECONDS = 2.0


class LineProgress:
    """Plain lines on ``stream``: one per model start and end, throttled estimation updates."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.prefix = "lred"
        self.last = 0.0

    def _say(self, text: str) -> None:
        print(f"{self.prefix} {text}", file=self.stream, flush=True)

    def batch_started(self, total: int) -> None:
        self._say(f"batch of {total} model(s)")

    def model_started(self, index: int, total: int, model: str) -> None:
        self.prefix = f"lred [{index}/{total}]"
        self._say(printable(model))

    def model_progress(self, stage: str, message: str) -> None:
        now = time.monotonic()
        if stage == "estimate" and message.startswith("iteration") and now - self.last < LINE_INTERVAL_SECONDS:
            return
        self.last = now
        self._say(f"[{stage}] {printable(message)}")

    def model_finished(self, index: int, total: int, row: BatchRow) -> None:
        self._say(f"{printable(row.model)}: {outcome_text(row)}")
        self.prefix = "lred"

    def batch_finished(self, rows: Sequence[BatchRow]) -> None:
        self._say(f"batch done: {len(rows)} model(s)")


class BarProgress:
    """tqdm bars on a terminal: the batch (models, ETA) and the current model (estimations, ETA)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.batch: Any = None
        self.model: Any = None
        self.stage = ""

    def batch_started(self, total: int) -> None:
        from tqdm import tqdm
        self.batch = tqdm(total=total, desc="models", unit="model", position=0, file=self.stream, dynamic_ncols=True)

    def model_started(self, index: int, total: int, model: str) -> None:
        from tqdm import tqdm
        self._close_model()
        name = printable(model)
        self.stage = ""
        self.model = tqdm(total=None, desc=name[-40:], unit="est", position=1, leave=False, file=self.stream,
                          dynamic_ncols=True)

    def model_progress(self, stage: str, message: str) -> None:
        if self.model is None:
            return
        started, done = STARTED.search(message), DONE.search(message)
        if started:
            self.model.reset(total=int(started.group(1)))
        if done:
            if self.model.total != int(done.group(2)):
                self.model.reset(total=int(done.group(2)))
            self.model.update(int(done.group(1)) - self.model.n)
        if stage != self.stage:                  # redrawn on a new stage, else at tqdm's own pace
            self.stage = stage
            self.model.set_postfix_str(stage, refresh=True)

    def model_finished(self, index: int, total: int, row: BatchRow) -> None:
        self._close_model()
        if self.batch is not None:
            self.batch.write(f"{printable(row.model)}: {outcome_text(row)}", file=self.stream)
            self.batch.update(1)

    def batch_finished(self, rows: Sequence[BatchRow]) -> None:
        self._close_model()
        if self.batch is not None:
            self.batch.close()
            self.batch = None

    def _close_model(self) -> None:
        if self.model is not None:
            self.model.close()
            self.model = None


def batch_progress(quiet: bool, stream: TextIO | None = None) -> LineProgress | BarProgress | SilentProgress:
    """Bars when ``stream`` (stderr) is a terminal, lines when it is not, nothing when ``quiet``."""
    stream = stream or sys.stderr
    if quiet:
        return SilentProgress()
    return BarProgress(stream) if stream.isatty() else LineProgress(stream)
