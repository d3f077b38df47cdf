"""Writing files whole or not at all: a temporary file beside the target, then a rename."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

__all__ = ["file_sha256", "stage", "write_atomic"]


def stage(path, write) -> Path:
    """``write(f)`` into a new temporary file beside ``path`` (binary, flushed to disk).

    Returns the temporary file's path for the caller to rename into place
    (several files can be staged first and renamed together); on failure it
    is removed and the error raised. The name carries the process and thread,
    so concurrent writers never share one; permissions follow the umask, as
    for any new file.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_atomic(path, write) -> Path:
    """``write(f)`` to ``path`` through :func:`stage` and a rename; the folder is created.

    A crash or an error leaves ``path`` as it was (absent, or the old file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = stage(path, write)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def file_sha256(path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
