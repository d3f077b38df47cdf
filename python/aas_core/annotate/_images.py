"""The images a store lists: their paths and folders, each photo's recorded content (its
size and SHA-256), photos found under new paths, and the embeddings in use."""

from __future__ import annotations

import hashlib
import math
import numbers
import os
import sqlite3
import stat
from pathlib import Path, PurePosixPath
from typing import NamedTuple

import numpy as np

from ._base import _clean_image_path, _now

__all__ = ["FileDigest", "file_digest", "image_file_of"]


class FileDigest(NamedTuple):
    """A photo's content as the store records it (table ``image_files``).

    size : int, bytes; sha256 : str, hex digest of the bytes; mtime_ns : int, the file's
    modification time when it was last read or verified (only a hint: a file whose size
    and mtime_ns are unchanged is taken as unchanged).
    """

    size: int
    sha256: str
    mtime_ns: int


_CHUNK = 1 << 20  # photos of tens of MB are read a MiB at a time, never whole


def file_digest(path) -> FileDigest:
    """The size, SHA-256 and modification time of the file at ``path`` (symlinks followed).

    The file is read in chunks of 1 MiB. OSError if it cannot be read; IsADirectoryError
    (an OSError) when ``path`` is not a regular file (a folder, a FIFO, a device), which is
    never opened.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "a.png"
    >>> _ = f.write_bytes(b"abc")
    >>> d = file_digest(f)
    >>> d.size, d.sha256[:12]
    (3, 'ba7816bf8f01')
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise IsADirectoryError(f"{os.fspath(path)!r} is not a regular file")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())  # the file read, should it have been replaced meanwhile
        size = 0
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            size += len(chunk)
            h.update(chunk)
    return FileDigest(size, h.hexdigest(), st.st_mtime_ns)


def image_file_of(roots, index, listed, images_dir) -> Path:
    """The file of image ``index`` listed as ``listed``: ``root/rel`` when ``roots`` (from
    :meth:`AnnotationStore.image_roots`) has it (a new season), else ``images_dir/listed``."""
    if index in roots:
        root, rel = roots[index]
        return Path(root) / rel
    return Path(images_dir) / listed


def _check_digest(d, owner) -> FileDigest:
    if not isinstance(d, FileDigest):
        raise TypeError(f"{owner}: each file must be a path or a FileDigest; got {d!r}.")
    ok = (
        isinstance(d.size, numbers.Integral)
        and d.size >= 0
        and isinstance(d.sha256, str)
        and len(d.sha256) == 64
        and isinstance(d.mtime_ns, numbers.Integral)
    )
    if not ok:
        raise ValueError(f"{owner}: {d!r} is not a file's size, SHA-256 and mtime_ns.")
    return FileDigest(int(d.size), d.sha256.lower(), int(d.mtime_ns))


def _split_root(path, rel) -> tuple:
    """(folder, path inside it) of the file at absolute ``path``, keeping ``rel``'s
    subfolders when ``path`` still ends with them (a season folder moved as a whole)."""
    full = Path(path)
    parts = PurePosixPath(rel).parts
    if len(full.parts) > len(parts) and full.parts[-len(parts) :] == parts:
        return str(Path(*full.parts[: -len(parts)])), rel
    return str(full.parent), full.name


class _Images:
    """The images of :class:`~aas_core.annotate.store.AnnotationStore`."""

    @property
    def embeddings_path(self):
        """The recorded embeddings file (a Path resolved against the store's folder), or None."""
        value = self.meta.get("embeddings_path", "")
        if not value:
            return None
        p = Path(value)
        return p if p.is_absolute() else self.path.parent / p

    def image_paths(self) -> list:
        """The image paths, relative to the image folder, in embeddings row order."""
        return [r[0] for r in self._read("SELECT path FROM images ORDER BY idx")]

    def image_roots(self) -> dict:
        """{image index: (root folder, path inside it)} for images added from other folders.

        Where they are now: a photo found under a new path (:meth:`relocate`) is at its
        latest relocation, given as (the folder it is in, its path there) such that the
        path keeps the subfolders it was added with where the new place still has them.
        """
        rows = self._read(
            "SELECT r.image, r.root, r.rel, (SELECT m.new_path FROM relocations m "
            "WHERE m.image = r.image ORDER BY m.id DESC LIMIT 1) FROM image_roots r"
        )
        out = {}
        for i, root, rel, moved in rows:
            if moved:
                root, rel = _split_root(moved, rel)
            out[int(i)] = (root, rel)
        return out

    def files(self) -> dict:
        """{image index: :class:`FileDigest`} for every photo whose content is recorded.

        Stores made before version 3 have none until :meth:`record_files` records them.
        """
        rows = self._read("SELECT image, size, sha256, mtime_ns FROM image_files")
        return {int(i): FileDigest(int(n), h, int(t)) for i, n, h, t in rows}

    def relocations(self) -> list:
        """Every photo found under a new path, oldest first: dicts with id, image,
        old_path, new_path, moved_at (see :meth:`relocate`)."""
        rows = self._read(
            "SELECT id, image, old_path, new_path, moved_at FROM relocations ORDER BY id"
        )
        keys = ("id", "image", "old_path", "new_path", "moved_at")
        return [dict(zip(keys, r)) for r in rows]

    def image_file(self, index, images_dir) -> Path:
        """Where image ``index`` lies: under its own root if it has one, else ``images_dir``."""
        return image_file_of(self.image_roots(), int(index), self.image_path(index), images_dir)

    def set_meta(self, key, value) -> None:
        """Records ``key = value`` in the store's meta table (e.g. a new embeddings file)."""
        if key == "format":
            raise ValueError("AnnotationStore.set_meta: 'format' cannot be changed.")
        self._write(
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (str(key), str(value))
            )
        )

    def use_embeddings(self, path, *, source, auc=None, detail="") -> int:
        """Makes ``path`` the current embeddings: a row of the ``embeddings`` history and
        ``meta['embeddings_path']``, in one transaction; returns the row's id.

        Parameters
        ----------
        path : str or Path, the ``.npy`` file (row i = image i), recorded as given
        source : str, what made it (e.g. "backbone:efficientnet-lite0", "model:/runs/m.pt")
        auc : float or None, its held-out answers' AUC where one was measured
        detail : str, anything else for the record (sha256, provenance; JSON is fine)
        """
        owner = "AnnotationStore.use_embeddings"
        if not isinstance(source, str) or not source.strip():
            raise ValueError(f"{owner}: 'source' must be a non-empty string; got {source!r}.")
        if not isinstance(detail, str):
            raise TypeError(f"{owner}: 'detail' must be a string.")
        if auc is not None:
            auc = float(auc)
            auc = auc if math.isfinite(auc) else None
        path = str(path)

        def write(conn):
            row = conn.execute(
                "INSERT INTO embeddings (path, source, auc, detail, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (path, source, auc, detail, _now()),
            ).lastrowid
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('embeddings_path', ?)", (path,)
            )
            return row

        return self._write(write)

    def embeddings_history(self) -> list:
        """Every embedding the store was pointed at with :meth:`use_embeddings`, oldest first:
        dicts with id, path, source, auc, detail, created_at."""
        rows = self._read(
            "SELECT id, path, source, auc, detail, created_at FROM embeddings ORDER BY id"
        )
        keys = ("id", "path", "source", "auc", "detail", "created_at")
        return [dict(zip(keys, r)) for r in rows]

    def add_images(self, paths, *, root, tag, meta=None, files=None) -> list:
        """Appends images from another folder (a new season); returns their indices.

        Parameters
        ----------
        paths : sequence of str, relative to ``root`` (as for :meth:`create`)
        root : str or Path, the folder they are in (recorded as an absolute path)
        tag : str, a prefix that keeps their listed paths apart from the first
            folder's (listed as ``tag/path``), e.g. the new folder's name

        meta : dict, optional, meta values to record in the same transaction
            (the embeddings file that now has the new rows: ``embeddings_path``)
        files : sequence of :class:`FileDigest`, optional, one per path: the photos'
            content, recorded in the same transaction (see :meth:`record_files`)

        The embeddings must grow by the same rows in the same order. One
        transaction; pairs and answers are unchanged.
        """
        owner = "AnnotationStore.add_images"
        if isinstance(paths, (str, bytes, os.PathLike)):
            raise TypeError(f"{owner}: 'paths' must be a sequence of paths, not one path.")
        rels = [_clean_image_path(p, row) for row, p in enumerate(paths)]
        tag = _clean_image_path(tag, 0)
        if not rels:
            raise ValueError(f"{owner}: 'paths' is empty.")
        listed = [f"{tag}/{r}" for r in rels]
        if len(set(listed)) != len(listed):
            raise ValueError(f"{owner}: 'paths' lists an image twice.")
        digests = None if files is None else [_check_digest(d, owner) for d in files]
        if digests is not None and len(digests) != len(rels):
            raise ValueError(
                f"{owner}: 'files' must have one entry per path ({len(rels)}); got {len(digests)}."
            )
        root = str(Path(root).resolve())

        def write(conn):
            start = conn.execute("SELECT COALESCE(MAX(idx), -1) + 1 FROM images").fetchone()[0]
            idx = list(range(start, start + len(listed)))
            try:
                conn.executemany("INSERT INTO images VALUES (?, ?)", zip(idx, listed))
            except sqlite3.IntegrityError:
                raise ValueError(
                    f"{owner}: the store already lists images under {tag + '/'!r}; "
                    "were these photos added before?"
                ) from None
            conn.executemany(
                "INSERT INTO image_roots VALUES (?, ?, ?)",
                [(i, root, r) for i, r in zip(idx, rels)],
            )
            if digests is not None:
                conn.executemany(
                    "INSERT INTO image_files (image, size, sha256, mtime_ns) VALUES (?, ?, ?, ?)",
                    [(i, *d) for i, d in zip(idx, digests)],
                )
            conn.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [(str(k), str(v)) for k, v in (meta or {}).items() if k != "format"],
            )
            return idx

        idx = self._write(write)
        with self._mutex:
            self.n_images += len(idx)
            self._derived = None  # the constraints' image count changed
        return idx

    def record_files(self, files) -> int:
        """Records the content of photos that have none recorded yet; returns how many.

        Parameters
        ----------
        files : dict {image index: path or :class:`FileDigest`}
            A path is read (:func:`file_digest`) before the transaction, so a
            slow disk never holds the store's write lock.

        A photo's recorded size and hash never change: giving another content
        for a photo that has one is a ValueError (and nothing is written); the
        same content again is left as it is. One transaction.
        """
        owner = "AnnotationStore.record_files"
        rows = {}
        for index, f in dict(files).items():
            k = self._check_index(index, owner)
            if isinstance(f, (str, os.PathLike)):
                f = file_digest(f)
            rows[k] = _check_digest(f, owner)

        def write(conn):
            have = {
                int(i): (n, h)
                for i, n, h in conn.execute("SELECT image, size, sha256 FROM image_files")
            }
            new = []
            for k, d in sorted(rows.items()):
                if k not in have:
                    new.append((k, *d))
                elif have[k] != (d.size, d.sha256):
                    raise ValueError(
                        f"{owner}: image {k} already has a recorded content ({have[k][0]} bytes, "
                        f"sha256 {have[k][1][:12]}...); it never changes."
                    )
            conn.executemany(
                "INSERT INTO image_files (image, size, sha256, mtime_ns) VALUES (?, ?, ?, ?)", new
            )
            return len(new)

        return self._write(write) if rows else 0

    def set_file_times(self, mtimes) -> None:
        """Records when photos were last verified: {image index: mtime_ns} (one transaction)."""
        owner = "AnnotationStore.set_file_times"
        rows = [(int(t), self._check_index(k, owner)) for k, t in dict(mtimes).items()]
        if rows:
            self._write(
                lambda conn: conn.executemany(
                    "UPDATE image_files SET mtime_ns = ? WHERE image = ?", rows
                )
            )

    def relocate(self, moves, *, mtimes=None, meta=None) -> int:
        """Records photos found under new paths; returns how many moved. One transaction.

        Parameters
        ----------
        moves : dict {image index: new path}
            For a photo of the run's folder, its new path relative to that
            folder (as for :meth:`create`; ``images.path`` is updated). For a
            photo added from another folder (:meth:`add_images`), the absolute
            path of its file (:meth:`image_roots` then gives it). Each move
            is kept in the ``relocations`` table with the path it had.
        mtimes : dict {image index: mtime_ns}, optional, as :meth:`set_file_times`
        meta : dict, optional, meta values to record with it (``images_root``:
            the run's folder, when the folder itself moved)
        """
        owner = "AnnotationStore.relocate"
        roots = self.image_roots()
        listed = self.image_paths()
        plan = []  # (index, old path, new path, whether images.path changes)
        for index, new in dict(moves).items():
            k = self._check_index(index, owner)
            if k in roots:
                if not isinstance(new, (str, os.PathLike)) or not Path(new).is_absolute():
                    raise ValueError(
                        f"{owner}: image {k} was added from another folder; give the absolute "
                        f"path of its file; got {new!r}."
                    )
                root, rel = roots[k]
                plan.append((k, str(Path(root) / rel), str(Path(new)), False))
            else:
                plan.append((k, listed[k], _clean_image_path(new, k), True))
        times = [(int(t), self._check_index(k, owner)) for k, t in dict(mtimes or {}).items()]
        extra = [(str(k), str(v)) for k, v in (meta or {}).items()]
        if any(k == "format" for k, _ in extra):
            raise ValueError(f"{owner}: 'format' cannot be changed.")

        def write(conn):
            now = _now()
            conn.executemany(
                "INSERT INTO relocations (image, old_path, new_path, moved_at) VALUES (?, ?, ?, ?)",
                [(k, old, new, now) for k, old, new, _ in plan],
            )
            renamed = [(k, new) for k, _, new, listed_here in plan if listed_here]
            # two steps, so that photos that swapped names never collide on the way
            conn.executemany(
                "UPDATE images SET path = ? WHERE idx = ?",
                [(f"/moving/{k}", k) for k, _ in renamed],
            )
            try:
                conn.executemany(
                    "UPDATE images SET path = ? WHERE idx = ?", [(n, k) for k, n in renamed]
                )
            except sqlite3.IntegrityError:
                raise ValueError(
                    f"{owner}: two photos would share one path; nothing was changed."
                ) from None
            conn.executemany("UPDATE image_files SET mtime_ns = ? WHERE image = ?", times)
            conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", extra)
            return len(plan)

        return self._write(write)

    def _check_index(self, index, owner) -> int:
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, numbers.Integral):
            raise TypeError(f"{owner}: image indices must be ints; got {index!r}.")
        if not 0 <= int(index) < self.n_images:
            raise ValueError(
                f"{owner}: no image {index}: the store holds images 0..{self.n_images - 1}."
            )
        return int(index)

    def image_path(self, index) -> str:
        rows = self._read("SELECT path FROM images WHERE idx = ?", (int(index),))
        if not rows:
            raise IndexError(f"no image {index}: the store holds images 0..{self.n_images - 1}.")
        return rows[0][0]
