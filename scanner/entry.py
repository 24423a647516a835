"""The ``lred`` command's entry point: signals and stale reports, before anything heavy is imported.

* SIGINT and SIGTERM raise InterruptedScanError from the first instruction on (``interrupts.py``),
  so they end in the same one-line error, error report and exit status 2 as any other failure.
* A report already at the ``--json`` (or ``--sarif``) path is replaced at once by an "error: did
  not finish" report, so a run that dies in any way (killed, out of memory, usage error) never
  leaves an older report that reads as this model's result; a finished run replaces it with its own.
* click's usage errors (``--alpha abc``) end in exit 2 and that error report too (on stdout as
  well when ``--json -`` or ``--format json|sarif`` asks for a report there).
"""
from __future__ import annotations

import sys

# Only the signal handlers are imported before main() installs them: everything else (click, the
# reporters) loads after, so a signal during start-up already ends in the one-line error.
from .errors import InterruptedScanError
from .interrupts import raise_on_signals

UNFINISHED = "the run did not finish (this report is written when it starts and replaced when it ends)"


def main(argv: list[str] | None = None) -> None:
    raise_on_signals()
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        _run(args, None)
    except InterruptedScanError as exc:      # the signal came during the light imports of _run
        _run(args, exc)                      # the handlers now ignore signals: load again and report it


def _run(args: list[str], interrupted: InterruptedScanError | None) -> None:
    import click

    from .errors import LredError
    from .failure import fail, write_error_report, write_failure_sarif
    from .outputs import outputs_from_args
    from .report import FailedScan

    outputs = outputs_from_args(args)
    try:
        if interrupted is not None:
            raise interrupted
        if outputs.json_path is not None:
            write_error_report(outputs.json_path, UNFINISHED, "Unfinished")
        if outputs.sarif_path is not None:
            write_failure_sarif(outputs.sarif_path, FailedScan(None, UNFINISHED, "Unfinished"))
        from .cli import main as group
        group.main(args=args, prog_name="lred", standalone_mode=False)
    except click.ClickException as exc:             # usage errors: click's own message, then ours
        exc.show()
        fail(LredError(f"usage error: {exc.format_message()}"), outputs, debug=False)
    except click.exceptions.Abort:
        fail(InterruptedScanError("aborted"), outputs, debug=False)
    except (LredError, OSError) as exc:              # before the command ran (signals, the first report)
        fail(exc, outputs, debug="--debug" in args)
    sys.exit(0)


if __name__ == "__main__":  # pragma: no cover
    main()
