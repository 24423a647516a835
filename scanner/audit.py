"""The audit trail of a scan (the report's ``audit`` object): when it ran, on what machine and
software, and which clean data exactly (sha256 as loaded). Never the host name or the user."""
from __future__ import annotations

import datetime
import platform
import sys
from pathlib import Path

import torch

from .data import CleanImages
from .report import AuditTrail


def utc_now() -> str:
    """The current UTC time, ISO 8601 with a ``Z`` suffix, to the millisecond."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def cpu_model() -> str:
    """The CPU's model name: /proc/cpuinfo "model name" on Linux, platform.processor() otherwise."""
    cpuinfo = Path("/proc/cpuinfo")
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def audit_trail(started_at: str | None, device: torch.device, clean: CleanImages) -> AuditTrail:
    """The audit trail of a scan that started at ``started_at`` (``utc_now()``; None: now) and ends now, on
    ``device``, with the clean data ``clean``."""
    gpu_name = gpu_driver = None
    if device.type == "cuda":
        gpu_name = torch.cuda.get_device_name(device)
        gpu_driver = f"CUDA {torch.version.cuda}"
    finished_at = utc_now()
    return AuditTrail(started_at=started_at or finished_at, finished_at=finished_at, os=platform.platform(),
                      python=sys.version.split()[0], python_implementation=platform.python_implementation(),
                      cpu=cpu_model(), gpu=gpu_name, gpu_driver=gpu_driver,
                      data_sha256=clean.sha256, data_files=clean.file_sha256)
