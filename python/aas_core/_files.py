"""Writing files whole or not at all: a temporary file beside the target, then a rename."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from pathlib import Path

__all__ = [
    "embedding_paths",
    "file_sha256",
    "save_embeddings",
    "stage",
    "stage_embeddings",
    "write_atomic",
]


def stage(path, write) -> Path:
    """``write(f)`` into a new temporary file beside ``path`` (binary, flushed to disk).

    ``path`` must be absent or a regular file (ValueError otherwise, before writing).

    Returns the temporary file's path for the caller to rename into place
    (several files can be staged first and renamed together); on failure it
    is removed and the error raised. The name carries the process and thread,
    so concurrent writers never share one; permissions follow the umask, as
    for any new file.
    """
    path = Path(path)
    _refuse_non_regular(path)
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


def _refuse_non_regular(path):
    """ValueError when ``path`` (links followed) is there and is not a regular file: the
    rename would replace a folder's entry, a FIFO or a device (as root, /dev/full)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:  # absent (or unreadable: the write says why)
        return
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a FIFO, device or socket)"
        raise ValueError(f"{str(path)!r} is {kind}; nothing was written to it")


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


def embedding_paths(out) -> tuple:
    """``(X.npy, X.rows.csv, X.provenance.json)`` for an output path ``X.npy``."""
    out = Path(out)
    stem = out.name[: -len(".npy")] if out.name.lower().endswith(".npy") else out.name
    return out, out.with_name(stem + ".rows.csv"), out.with_name(stem + ".provenance.json")


def stage_embeddings(out, X, paths, identities, record, *, cameras=None) -> list:
    """Stages ``X.npy``, ``X.rows.csv`` (index,path,identity[,camera]) and
    ``X.provenance.json`` for the output path ``out``: each is written whole to a
    temporary file beside its final name (:func:`stage`), nothing final is touched.

    Returns ``[(temporary, final)]``, the ``.npy`` last: rename them in that order
    (the caller decides when, and removes the temporaries if it gives up).
    ``record`` (plain values) goes into the provenance file with the files' names,
    the shape and the dtype.
    """
    import csv
    import io
    import json

    import numpy as np

    npy, rows, meta = embedding_paths(out)
    if len(paths) != len(X) or len(identities) != len(X):
        raise ValueError(
            f"stage_embeddings: {len(X)} rows but {len(paths)} paths and {len(identities)} "
            "identities."
        )
    if cameras is not None and len(cameras) != len(X):
        raise ValueError(f"stage_embeddings: {len(X)} rows but {len(cameras)} cameras.")
    from ._csvcell import safe_cell

    text = io.StringIO(newline="")
    w = csv.writer(text)
    w.writerow(["index", "path", "identity"] + ([] if cameras is None else ["camera"]))
    for i, (p, name) in enumerate(zip(paths, identities)):
        row = [i, p, name] + ([] if cameras is None else [cameras[i]])
        w.writerow([safe_cell(v) for v in row])  # read back through read_cell
    payload = dict(record)
    payload.update(
        format="aas-core-embeddings",
        version=1,
        embeddings=npy.name,
        rows=rows.name,
        n=int(X.shape[0]),
        dim=int(X.shape[1]),
        dtype=str(X.dtype),
    )
    body = json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n"
    staged = []
    try:
        staged.append((stage(meta, lambda f: f.write(body.encode("utf-8"))), meta))
        data = text.getvalue().encode("utf-8")
        staged.append((stage(rows, lambda f: f.write(data)), rows))
        staged.append((stage(npy, lambda f: np.save(f, X)), npy))
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    return staged


def save_embeddings(out, X, paths, identities, record: dict, *, cameras=None) -> tuple:
    """Writes ``X.npy``, ``X.rows.csv`` (index,path,identity[,camera]) and ``X.provenance.json``.

    Each file is written to a temporary file beside it and renamed into place
    only once all three are complete, so an interrupted run leaves no half
    written file (and an older embedding at ``out`` stays as it was).

    Parameters
    ----------
    out : str or Path
        The ``.npy`` file; the other two are named after it.
    X : (n, d) float32 ndarray
    paths : sequence of str
        Row i's image path (as the dataset lists it).
    identities : sequence of str
        Row i's identity name, "" where unknown.
    record : dict
        Plain values for the provenance file (model, preprocessing, data, ...).
    cameras : sequence, optional
        Row i's camera (or station), written as a ``camera`` column.

    Returns
    -------
    (Path, Path, Path)
        The three files.
    """
    npy, rows, meta = embedding_paths(out)
    npy.parent.mkdir(parents=True, exist_ok=True)
    temps = stage_embeddings(out, X, paths, identities, record, cameras=cameras)
    try:
        for tmp, final in temps:
            os.replace(tmp, final)
    finally:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
    return npy, rows, meta
