"""Report files: written atomically (complete or absent, never half written), with the
permissions any other new file of the user gets (0o666 less the umask), not the 0o600 of a
temporary file."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that the file is either complete or absent; its mode is
    ``0o666 & ~umask``, as ``open(path, "w")`` would give a new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux's
    /proc/self/status). Elsewhere it is read by setting it, which no other thread can be
    prevented from seeing: it is set to 0o077 for that instant, so a file another thread creates
    meanwhile is private rather than open."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask
