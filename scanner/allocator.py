"""The C allocator setting every scan applies once per process, from the CLI or from Python.

By default glibc maps every block above its mmap threshold (at most 32 MB) afresh and unmaps it
on free, so each forward/backward pass of a scan faults its activation buffers in again:
measured on the sample CNN (one thread), 6.1 s of system time in a 33 s scan, 0.4 s with mmap
turned off (docs/benchmarks.md, "Freed memory"). The cost of the setting: the process keeps its
peak heap until it exits (a one-scan command soon does; a long-lived Python process that scans
keeps the memory of its largest scan for reuse). Other C libraries: nothing happens.
"""
from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4                 # glibc's malloc.h

_applied: bool | None = None                          # None: not tried yet in this process


def reuse_freed_memory() -> bool:
    """Have glibc serve large blocks from the heap and keep freed memory for reuse; the first
    call sets it, later calls do nothing. Returns whether the setting is in force."""
    global _applied
    if _applied is None:
        _applied = _set_mallopt()
    return _applied


def _set_mallopt() -> bool:
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):      # not glibc (musl, macOS, Windows)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
