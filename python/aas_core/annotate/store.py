"""The durable store behind ``aas annotate``: one SQLite file per annotation run.

Durability first: every answer a person gives is written in its own
transaction before the server replies, so closing the browser or killing the
server loses nothing, and a restart resumes at the first unanswered pair.

What the file holds (schema version 3; the SQL is in :mod:`._schema`)::

    schema_version(version)                      one row: 3
    meta(key, value)                             format = "aas-core/annotation-store",
                                                 created_at, created_by, embeddings_path
    images(idx, path)                            row idx of the embeddings = image idx;
                                                 path relative to the image folder
    pairs(id, i, j, sampler, cycle, prob,        the queue: asked by priority (highest
          pool, kind, added_at, priority)        first), then pair id; i < j, each
                                                 unordered pair at most once
    answers(id, pair_id, answer, annotator,      append-only: 'same' | 'different' |
            answered_at, replaces, operation)    'cant_tell' | 'skip'; replaces = the answer
                                                 it changed; operation = the catalogue
                                                 operation it belongs to (or NULL: the
                                                 answer to a pair question)
    undos(id, answer_id, annotator, undone_at)   append-only: which answers were undone
    operations(id, kind, detail, annotator,      a person's catalogue edits (merge, split,
               done_at)                          new_individual), each stored as the
                                                 answers that carry it out
    identities(id, created_at)                   stable identity numbers (NY-0007 = 7)
    anchors(id, identity_id, image, set_at)      images that mark where an identity is;
                                                 an identity's latest set_at batch counts
    names(id, identity_id, name, annotator,      an identity's latest name ('' = back to
          named_at)                              its number) ...
    name_photos(name_id, image)                  ... and the photos it was given to
    checks(id, identity_id, checked, annotator,  the latest says whether a person marked
           checked_at)                           the identity as checked ...
    check_photos(check_id, image)                ... and the photos they checked
    operation_photos(operation_id, image)        a split's photos that stayed (the person
                                                 left them where they were)
    image_roots(image, root, rel)                images added later from another folder
                                                 (a new season): the file is root/rel
    image_files(image, size, sha256, mtime_ns)   each photo's content when it was listed
                                                 (mtime_ns: when it was last verified);
                                                 see file_digest, record_files
    relocations(id, image, old_path, new_path,   photos found by their content under a
                moved_at)                        new path (relative to the image folder;
                                                 absolute for photos of image_roots);
                                                 images.path follows, image_roots() too
    embeddings(id, path, source, auc, detail,    every embedding the catalogue has used,
               created_at)                       the latest first in line

"can't tell" ('cant_tell': the two photos show nothing to compare, e.g. left
and right flanks) and 'skip' are answers that are not constraints: the pair
is not asked again, and nothing is concluded from it. A version 1 or 2 store
is upgraded in place when it is opened, in one transaction that copies every
row, after a copy of the file is written beside it; nothing is lost.

Nothing a person said is ever updated or deleted: triggers refuse it. The *current* answer
for a pair is its latest answer that was not undone; undo reverts the latest
answer not yet undone (so undoing a changed answer brings the earlier one
back). Timestamps are ISO 8601 UTC.

Concurrency: one connection per :class:`AnnotationStore`, shared by the
server's threads under a lock; every write is one ``BEGIN IMMEDIATE``
transaction with ``synchronous=FULL`` in WAL mode, so readers in other
processes (``aas refine --store``) never block the server and other writers
(``aas propose --store``) wait their turn. Only one *server* may use a store at
a time: :meth:`AnnotationStore.lock` takes exclusive locks on the store file
itself and on ``<store>.lock`` beside it, which the operating system releases
when the process dies, even by ``kill -9``.

A store that cannot be written (a read-only file, folder or mount, an immutable
file) opens only with ``readonly=True``; writing to it raises
:class:`StoreReadOnly`, and a full disk :class:`StoreFull`, never "corrupt".

This module needs no web framework (sqlite3 is in the standard library).
"""

from __future__ import annotations

import datetime as _dt
import errno
import functools
import getpass
import hashlib
import math
import numbers
import os
import shlex
import sqlite3
import stat
import struct
import threading
import time
import weakref
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import NamedTuple

import numpy as np

from ..constraints import ContradictionTracker, PairConstraints
from . import _schema
from ._schema import FORMAT, SCHEMA_VERSION

__all__ = [
    "ANSWERS",
    "SCHEMA_VERSION",
    "AlreadyAnswered",
    "AnnotationStore",
    "FileDigest",
    "NothingToUndo",
    "StoreFull",
    "StoreLocked",
    "StoreReadOnly",
    "UnknownPair",
    "WalScan",
    "file_digest",
    "load_constraints",
    "wal_frames",
    "wal_scan",
]

ANSWERS = ("same", "different", "cant_tell", "skip")
# Answers that are no constraint: the pair is settled, nothing is concluded.
NOT_CONSTRAINTS = ("cant_tell", "skip")
_ANSWER_LIST = ", ".join(repr(a) for a in ANSWERS)
_SQLITE_MAGIC = b"SQLite format 3\x00"
# The current answer of each pair: its latest answer that was not undone.
# Beside each answer, where it came from: the catalogue operation's kind ('' for the answer
# to a pair question) and the kind the pair was queued with.
_ORIGIN = (
    ", COALESCE(o.kind, ''), p.kind, COALESCE(a.operation, 0), p.pool, p.sampler = 'catalogue' "
    "FROM answers a "
    "JOIN pairs p ON p.id = a.pair_id LEFT JOIN operations o ON o.id = a.operation"
)
_CURRENT = (
    """
WITH live AS (SELECT * FROM answers WHERE id NOT IN (SELECT answer_id FROM undos)),
     cur AS (SELECT MAX(id) AS id FROM live GROUP BY pair_id)
SELECT a.id, a.pair_id, p.i, p.j, a.answer, a.annotator, a.answered_at, a.replaces"""
    + _ORIGIN
    + " WHERE a.id IN (SELECT id FROM cur)"
)

_ANSWER_COLUMNS = (
    "a.id, a.pair_id, p.i, p.j, a.answer, a.annotator, a.answered_at, a.replaces "
    "FROM answers a JOIN pairs p ON p.id = a.pair_id"
)
_NEW_ANSWERS = (
    "SELECT a.id, a.pair_id, p.i, p.j, a.answer, a.annotator, a.answered_at, a.replaces"
    + _ORIGIN
    + " WHERE a.id > ? ORDER BY a.id"
)
# The current answer of one pair, through the index on answers(pair_id).
_CURRENT_OF_PAIR = (
    f"SELECT {_ANSWER_COLUMNS} WHERE a.pair_id = ? "
    "AND a.id NOT IN (SELECT answer_id FROM undos) ORDER BY a.id DESC LIMIT 1"
)

_HISTORY = """
SELECT a.id, a.pair_id, p.i, p.j, a.answer, a.annotator, a.answered_at, a.replaces,
       u.id IS NOT NULL
FROM answers a JOIN pairs p ON p.id = a.pair_id LEFT JOIN undos u ON u.answer_id = a.id
ORDER BY a.id
"""
# Changes whenever the current answers may change (both tables are append-only).
_CHANGE_KEY = "SELECT (SELECT COALESCE(MAX(id), 0) FROM answers), (SELECT COUNT(*) FROM undos)"
# ... or names, checks, the photos or the embedding in use (append-only too).
_VERSION = (
    "SELECT (SELECT COALESCE(MAX(id), 0) FROM answers), (SELECT COUNT(*) FROM undos), "
    "(SELECT COALESCE(MAX(id), 0) FROM names), (SELECT COALESCE(MAX(id), 0) FROM checks), "
    "(SELECT COUNT(*) FROM images), (SELECT COUNT(*) FROM embeddings)"
)

_PAIR_COLUMNS = "p.id, p.i, p.j, p.sampler, p.cycle, p.prob, p.pool, p.kind, p.priority"
_UNANSWERED = f"""
SELECT {_PAIR_COLUMNS} FROM pairs p
WHERE p.sampler != 'catalogue' AND NOT EXISTS (SELECT 1 FROM answers a WHERE a.pair_id = p.id
                  AND a.id NOT IN (SELECT answer_id FROM undos))
"""


class UnknownPair(LookupError):
    """An answer names a pair id that the store does not hold."""


class AlreadyAnswered(ValueError):
    """A different answer for a pair that already has one, without ``replace=True``.

    ``current`` is the stored answer (a dict, see :meth:`AnnotationStore.answers`).
    """

    def __init__(self, message, current):
        super().__init__(message)
        self.current = current


class NothingToUndo(ValueError):
    """Undo with no answer left to revert (the store is unchanged)."""


class StoreLocked(RuntimeError):
    """Another process (an ``aas annotate`` or ``aas catalogue`` server) holds the store's
    lock."""


class StoreReadOnly(StoreLocked, ValueError):
    """The store cannot be written: a read-only file, folder or mount, an immutable file, or
    a store opened with ``readonly=True``. Nothing was written.

    A ValueError (a user's situation, not a bug) and a :class:`StoreLocked`: like a store
    held by another server, it can be read but not claimed, so callers that fall back to
    reading on StoreLocked do the same here.
    """


class StoreFull(OSError):
    """The disk holding the store is full: SQLite could not write, and nothing of that
    write was stored (everything stored before it is kept)."""


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


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _clean_image_path(p, row) -> str:
    """A relative POSIX path inside the image folder, or ValueError naming the row."""
    if not isinstance(p, (str, os.PathLike)):
        raise TypeError(
            f"AnnotationStore.create: 'image_paths' row {row} must be a path string; "
            f"got {type(p).__name__}."
        )
    text = os.fspath(p)
    if not isinstance(text, str) or not text.strip() or "\x00" in text:
        raise ValueError(
            f"AnnotationStore.create: 'image_paths' row {row} must be a non-empty path; "
            f"got {text!r}."
        )
    posix = text.replace("\\", "/")
    if PurePosixPath(posix).is_absolute() or PureWindowsPath(text).drive:
        raise ValueError(
            f"AnnotationStore.create: 'image_paths' row {row} is absolute ({text!r}); paths "
            "must be relative to the image folder given to 'aas annotate --images'."
        )
    parts = PurePosixPath(posix).parts
    if ".." in parts:
        raise ValueError(
            f"AnnotationStore.create: 'image_paths' row {row} ({text!r}) leaves the image "
            "folder ('..'); paths must stay inside it."
        )
    return str(PurePosixPath(*[q for q in parts if q != "."]))


def _as_index_pairs(pairs, n, owner) -> np.ndarray:
    arr = np.asarray(pairs if pairs is not None else np.empty((0, 2), np.int64))
    if arr.size == 0:
        return np.empty((0, 2), np.int64)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{owner}: 'pairs' must hold integer image indices; got dtype {arr.dtype}.")
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{owner}: 'pairs' must have shape (m, 2); got {arr.shape}.")
    arr = arr.astype(np.int64)  # a copy: the caller's array is never written
    bad = np.flatnonzero(((arr < 0) | (arr >= n)).any(axis=1))
    if bad.size:
        i, j = arr[bad[0]].tolist()
        raise ValueError(
            f"{owner}: 'pairs' row {int(bad[0])} is ({i}, {j}); image indices must be in "
            f"[0, {n}) (the store holds {n} images)."
        )
    same = np.flatnonzero(arr[:, 0] == arr[:, 1])
    if same.size:
        raise ValueError(
            f"{owner}: 'pairs' row {int(same[0])} pairs image {int(arr[same[0], 0])} with itself."
        )
    return np.sort(arr, axis=1)


class _Current:
    """A store's current answers and what they imply, kept up to date answer by answer."""

    def __init__(self, n_images, undos):
        self.n_images = n_images
        self.undos = undos
        self.last_id = 0
        self.cur = []  # current answers (dicts) in the order given
        self.pos = {}  # pair id -> its current answer
        self.told = []  # the same/different ones among them
        self.origins = []  # (operation kind or '', queued kind, operation id or 0, pool)
        self.counts = dict.fromkeys(ANSWERS, 0)  # answers to queued pair questions
        self.edits = {}  # catalogue operation id -> how many of its answers are current
        self.on_edit_pairs = 0  # current answers of pairs an edit queued (never asked)
        self.tracker = ContradictionTracker()
        self.found = []  # contradictions, rows index self.told
        self.found_by_answer = {}  # answer id -> its contradiction
        self.first_unanswered = 0  # no pair id below it lacks an answer
        self._constraints = None

    def extend(self, rows) -> bool:
        """Appends new answers (rows of _CURRENT / _NEW_ANSWERS); False (and nothing
        further) at one that changes an earlier."""
        for r in rows:
            a = _answer_dict(r)
            if a["pair_id"] in self.pos:
                return False
            self.pos[a["pair_id"]] = a
            self.cur.append(a)
            if r[10]:
                self.edits[r[10]] = self.edits.get(r[10], 0) + 1
            if r[12]:  # a pair a catalogue edit queued: counted as the edit, never asked
                self.on_edit_pairs += 1
            else:
                self.counts[a["answer"]] += 1
            if a["answer"] in NOT_CONSTRAINTS:
                continue
            self.told.append(a)
            self.origins.append((r[8], r[9], r[10], r[11]))
            self._constraints = None
            c = self.tracker.add(a["i"], a["j"], a["answer"] == "same")
            if c is not None:
                self.found.append(c)
                self.found_by_answer[a["answer_id"]] = c
        return True

    def constraints(self) -> PairConstraints:
        if self._constraints is None:
            c = PairConstraints(n=self.n_images) if self.n_images >= 2 else PairConstraints()
            if self.told:
                pairs = np.array([[a["i"], a["j"]] for a in self.told], np.int64)
                c.add(pairs, np.array([a["answer"] == "same" for a in self.told], bool))
            self._constraints = c
        return self._constraints

    def described(self, c) -> dict:
        d = dict(self.told[c["answer"]])
        d["implied"] = "same" if c["implied_same"] else "different"
        d["because"] = [dict(self.told[r]) for r in c["because"]]
        return d


class AnnotationStore:
    """One annotation run: the images, the queue of proposed pairs and every answer.

    Open with :meth:`create` (a new file; an existing one is never
    overwritten) or :meth:`open`. Safe to share between threads. Use as a
    context manager or call :meth:`close`.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> store = AnnotationStore.create(tmp / "run.sqlite", ["a.jpg", "b.jpg", "c.jpg"])
    >>> store.add_pairs([[0, 1], [2, 1]], sampler="aas", cycle=0)
    2
    >>> pair = store.next_pair()
    >>> pair["pair_id"], pair["i"], pair["j"]
    (1, 0, 1)
    >>> store.answer(pair["pair_id"], "same", annotator="ann")["answer"]
    'same'
    >>> store.constraints().must_link.tolist()
    [[0, 1]]
    >>> store.undo()["answer"]
    'same'
    >>> store.progress()["remaining"]
    2
    >>> store.close()
    """

    def __init__(self, conn, path, *, readonly=False, file=None):  # use create() or open()
        self._conn = conn
        self.path = Path(path)
        self.readonly = bool(readonly)  # opened with readonly=True: every write is refused
        self._mutex = threading.RLock()
        self._file = file  # _StoreFile: this store's descriptors on its file (see lock)
        # released once, at close() or when the store is collected unclosed
        self._release = weakref.finalize(self, file.close) if file is not None else None
        self._derived = None  # _Current, brought up to date by _current()
        self._counted_pairs = (0, 0, 0)  # (last pair id, pairs, edit pairs): _pair_counts
        self.n_images = int(conn.execute("SELECT COUNT(*) FROM images").fetchone()[0])

    # ---- opening -------------------------------------------------------------------

    @classmethod
    def create(cls, path, image_paths, *, embeddings_path=None) -> AnnotationStore:
        """Writes a new store listing ``image_paths`` (row i = image i of the embeddings).

        Parameters
        ----------
        path : str or Path
            The SQLite file to create. If anything exists there, FileExistsError
            (nothing is ever overwritten); the file appears whole or not at all.
        image_paths : sequence of str
            At least 2 distinct paths, relative to the image folder the server
            will be given (no absolute paths, no ``..``); ``\\`` becomes ``/``.
        embeddings_path : str or Path, optional
            The ``.npy`` embeddings whose rows match the images, recorded so
            that ``aas refine --store`` and ``aas annotate --propose`` find them.
        """
        owner = "AnnotationStore.create"
        path = Path(path)
        if isinstance(image_paths, (str, bytes, os.PathLike)):
            raise TypeError(f"{owner}: 'image_paths' must be a sequence of paths, not one path.")
        paths = [_clean_image_path(p, row) for row, p in enumerate(image_paths)]
        if len(paths) < 2:
            raise ValueError(
                f"{owner}: 'image_paths' must list at least 2 images; got {len(paths)}."
            )
        seen = {}
        for row, p in enumerate(paths):
            if p in seen:
                raise ValueError(
                    f"{owner}: 'image_paths' rows {seen[p]} and {row} are the same image {p!r}."
                )
            seen[p] = row
        if path.exists() or path.is_symlink():
            raise FileExistsError(
                f"{owner}: {str(path)!r} already exists; open it instead, or choose a new path "
                "(a store is never overwritten)."
            )
        if not path.parent.is_dir():
            raise ValueError(f"{owner}: the folder {str(path.parent)!r} does not exist.")
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.creating")
        try:
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript("BEGIN;" + _schema.SCHEMA)
                conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
                meta = {
                    "format": FORMAT,
                    "created_at": _now(),
                    "created_by": _user(),
                    "embeddings_path": "" if embeddings_path is None else str(embeddings_path),
                }
                conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
                conn.executemany("INSERT INTO images VALUES (?, ?)", enumerate(paths))
                conn.execute("COMMIT")
            finally:
                conn.close()  # checkpoints the WAL into the file
            _publish(tmp, path)
        except FileExistsError:
            raise FileExistsError(
                f"{owner}: {str(path)!r} already exists; open it instead, or choose a new path "
                "(a store is never overwritten)."
            ) from None
        except (sqlite3.Error, OSError) as exc:
            raise ValueError(f"{owner}: cannot write {str(path)!r} ({exc}).") from None
        finally:
            for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
                leftover.unlink(missing_ok=True)
        return cls.open(path)

    @classmethod
    def open(cls, path, *, readonly=False) -> AnnotationStore:
        """Opens an existing store; a missing, non-SQLite, foreign or corrupt file: ValueError.

        A version 1 store (aas-core before "can't tell" and the catalogue) is
        upgraded to version 2 in place, in one transaction, after a copy of
        it is written beside it (``<store>.v1-backup``); a store of any other
        version is refused.

        Parameters
        ----------
        path : str or Path
        readonly : bool
            False (the default): to write. A store that cannot be written (a
            read-only file, folder or mount, an immutable file) is refused with
            :class:`StoreReadOnly`, saying why, before anything is opened for
            writing. True: to read only (``aas catalogue --status`` and
            ``--export``, ``aas refine --store``), also where nothing can be
            created beside the file; every write then raises StoreReadOnly, and
            a store of an older schema is refused (only a store opened for
            writing is upgraded).

        A write-ahead log (``<store>-wal``) that SQLite would cut short or
        discard -- a bad header, a damaged frame, a file that ends inside a
        frame -- makes the store refuse to open either way, with the counts
        and how to salvage what is intact; nothing is changed.
        """
        if not isinstance(readonly, bool):
            raise TypeError(
                f"AnnotationStore.open: 'readonly' must be True or False; got {readonly!r}."
            )
        path = Path(path)
        what = f"AnnotationStore.open: {str(path)!r}"
        if not path.is_file():
            raise ValueError(
                f"{what} does not exist"
                + (" (it is a folder)" if path.is_dir() else "")
                + "; create a store first (aas annotate --create, or AnnotationStore.create)."
            )
        try:
            file = _StoreFile(os.path.realpath(path))
        except OSError as exc:
            raise ValueError(f"{what} cannot be read ({exc}).") from None
        try:
            return cls._open(path, file, readonly, what)
        except BaseException:
            file.close()  # every connection to it is closed by now
            raise

    @classmethod
    def _open(cls, path, file, readonly, what):
        try:
            head = file.read(len(_SQLITE_MAGIC))
        except OSError as exc:
            raise ValueError(f"{what} cannot be read ({exc}).") from None
        if head != _SQLITE_MAGIC:
            raise ValueError(
                f"{what} is not an SQLite file, so not an aas-core annotation store"
                + (" (it is empty)." if not head else ".")
            )
        real = os.path.realpath(path)
        _check_wal(Path(f"{real}-wal"), what)
        why = "" if readonly else _not_writable(real)
        if why:
            raise StoreReadOnly(
                f"{what} is read-only ({why}), so it was not opened for writing and nothing "
                "was changed. A server cannot store answers in it; aas catalogue --status and "
                "--export and aas refine --store read it as it is (AnnotationStore.open(path, "
                "readonly=True)). To write to it, copy the store (with its -wal, if any) to a "
                "writable folder."
            )
        # Check through a read-only connection first: a read-write one that fails would,
        # on closing, fold the WAL into the damaged file and delete it.
        ro = _read_only_connection(path, real, what)
        try:
            version = cls._check_file(ro, what)
            if readonly and version < SCHEMA_VERSION:
                raise ValueError(
                    f"{what} has schema version {version}, which is upgraded to "
                    f"{SCHEMA_VERSION} only when the store is opened for writing; open it once "
                    "without readonly=True (e.g. with aas annotate --no-serve), or use the "
                    "aas-core that wrote it."
                )
            if readonly:
                ro.execute("PRAGMA busy_timeout=10000")
        except ValueError as exc:
            ro.close()
            raise ValueError(f"{str(exc).rstrip('.')}.{_untouched(path)}") from None
        except sqlite3.Error as exc:
            ro.close()
            if _sqlite_code(exc) == _SQLITE_CANTOPEN:
                raise ValueError(f"{what} cannot be opened for reading ({exc}).") from None
            raise ValueError(
                f"{what} is corrupt or unreadable ({exc}).{_untouched(path)}"
            ) from None
        if readonly:
            return cls(ro, path, readonly=True, file=file)
        ro.close()
        uri = Path(os.path.abspath(path)).as_uri() + "?mode=rw"  # never creates a file
        try:
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise ValueError(f"{what} cannot be opened ({exc}).") from None
        try:
            version = cls._check_file(conn, what)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # each answer reaches the disk
            conn.execute("PRAGMA busy_timeout=10000")  # another writer: wait, then fail clearly
            if version < SCHEMA_VERSION:
                _schema.upgrade(conn, path, version, what)
            conn.execute("PRAGMA foreign_keys=ON")
        except ValueError:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            # a full disk or a store that turned read-only is named as such, not as damage
            raise _write_problem(exc, path, what) or ValueError(
                f"{what} is corrupt or unreadable ({exc})."
            ) from None
        return cls(conn, path, file=file)

    @staticmethod
    def _check_file(conn, what):
        """Reads only: nothing is written to a file until it is known to be ours."""
        try:
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"{what} is corrupt or not a database ({exc}).") from None
        if "schema_version" not in tables or "meta" not in tables:
            listed = ", ".join(sorted(tables)) or "none"
            raise ValueError(
                f"{what} is an SQLite database but not an aas-core annotation store "
                f"(its tables: {listed})."
            )
        try:
            fmt = conn.execute("SELECT value FROM meta WHERE key='format'").fetchone()
            versions = conn.execute("SELECT version FROM schema_version").fetchall()
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"{what} is corrupt ({exc}).") from None
        if fmt is None or fmt[0] != FORMAT:
            raise ValueError(f"{what} is an SQLite database but not an aas-core annotation store.")
        if len(versions) != 1 or versions[0][0] not in _schema.REQUIRED:
            found = [v[0] for v in versions]
            raise ValueError(
                f"{what} has schema version {found[0] if len(found) == 1 else found!r}; this "
                f"aas-core reads versions 1 to {SCHEMA_VERSION} (use the aas-core that wrote it)."
            )
        version = versions[0][0]
        missing = _schema.REQUIRED[version] - tables
        if missing:
            raise ValueError(f"{what} is corrupt: tables {', '.join(sorted(missing))} are missing.")
        problems = [r[0] for r in conn.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise ValueError(f"{what} is corrupt (SQLite quick_check: {'; '.join(problems[:3])}).")
        return version

    def lock(self) -> AnnotationStore:
        """Claims the store for this process (one server per store); returns self.

        Two exclusive OS locks, both dropped by the operating system when the
        process ends (``kill -9`` included, so a crashed server never blocks
        the next one):

        - on the store file itself (``flock`` on its inode), so every name of
          the same file -- a hard link, a symlink, a path with ``..`` -- finds
          the same lock whatever a server's temporary folder; SQLite's own
          locks are ``fcntl`` byte ranges, which never meet it;
        - on ``<store>.lock`` beside the real file (symlinks resolved), so
          machines that share the folder see each other too. It is created
          with the user's own permissions (0600), never opened through a
          symbolic link, and written (the holder's pid) only when it is a
          regular file of this user.

        :class:`StoreLocked` names the holder's pid when another process holds
        either. :class:`StoreReadOnly` (a StoreLocked) when the store cannot be
        written -- opened with ``readonly=True``, a read-only file, folder or
        mount, an immutable file -- so that a server is refused up front, not
        on its first answer. ValueError when ``<store>.lock`` is a symbolic link
        or not a regular file.
        """
        with self._mutex:
            if self._conn is None:
                raise ValueError(f"AnnotationStore {str(self.path)!r} is closed.")
            if self._file.side is not None:
                return self
            owner = f"AnnotationStore.lock: {str(self.path)!r}"
            if self.readonly:
                raise StoreReadOnly(
                    f"{owner} was opened read-only (readonly=True); open it for writing to "
                    "serve it."
                )
            why = _not_writable(self.path)
            if why:
                raise StoreReadOnly(
                    f"{owner} cannot be written ({why}), so a server could not store answers "
                    "in it and none was started; aas catalogue --status and --export read it "
                    "as it is."
                )
            real = os.path.realpath(self.path)
            side_path = Path(f"{real}.lock")
            if not _try_lock(self._file.fd, shared_file=True):
                raise StoreLocked(self._in_use(_holder(self._file.key, side_path)))
            try:
                side, ours = _open_lock_file(side_path, owner)
                try:
                    if not _try_lock(side):
                        raise StoreLocked(self._in_use(_read_holder(side)))
                except BaseException:
                    os.close(side)
                    raise
            except BaseException:
                _unlock(self._file.fd)
                raise
            if ours:
                try:
                    os.ftruncate(side, 0)
                    os.write(side, f"pid {os.getpid()} since {_now()}".encode())
                except OSError:
                    pass  # the pid is only a hint for the message; the lock holds
            self._file.side = side
            return self

    def _in_use(self, holder) -> str:
        return (
            f"{str(self.path)!r} is already in use by another aas annotate or aas catalogue "
            f"server ({holder}); stop that server first, or annotate into another store."
        )

    def close(self) -> None:
        with self._mutex:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._release is not None:
                self._release()  # drops both locks; closes the descriptors when it may

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"AnnotationStore({str(self.path)!r}, images={self.n_images})"

    # ---- reading ---------------------------------------------------------------------

    def _read(self, sql, args=()):
        with self._mutex:
            if self._conn is None:
                raise ValueError(f"AnnotationStore {str(self.path)!r} is closed.")
            return self._conn.execute(sql, args).fetchall()

    @property
    def meta(self) -> dict:
        """format, created_at, created_by, embeddings_path ('' when not recorded), and what
        else was recorded (images_root: the photo folder of ``aas catalogue``)."""
        return dict(self._read("SELECT key, value FROM meta"))

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

    def pair(self, pair_id) -> dict:
        """One queued pair with its current answer (None if unanswered); UnknownPair if absent."""
        pid = _check_pair_id(pair_id, "AnnotationStore.pair")
        rows = self._read(f"SELECT {_PAIR_COLUMNS} FROM pairs p WHERE p.id = ?", (pid,))
        if not rows:
            raise UnknownPair(f"unknown pair id {pid}: the store holds no such pair.")
        out = _pair_dict(rows[0])
        cur = self._read(_CURRENT_OF_PAIR, (pid,))
        out["answer"] = _answer_dict(cur[0]) if cur else None
        return out

    def pairs(self) -> list:
        """Every queued pair (dicts with pair_id, i, j, sampler, cycle, prob, pool, kind,
        priority), by id."""
        rows = self._read(f"SELECT {_PAIR_COLUMNS} FROM pairs p ORDER BY p.id")
        return [_pair_dict(r) for r in rows]

    def next_pair(self):
        """The next pair to ask: the unanswered one of highest priority, the first queued
        among equals; None when all are answered.

        Pairs answered "skip" or "cant_tell" count as answered (they are not
        asked again; answer them again with ``replace=True`` to change that).
        """
        with self._mutex:
            first = self._read(
                _UNANSWERED + " AND p.priority > 0 ORDER BY p.priority DESC, p.id LIMIT 1"
            )
            if first:
                return _pair_dict(first[0])
            # Pairs before the hint all had an answer when it was set; only an undo can
            # take one away, and an undo rebuilds the cached state, which resets the hint.
            cur = self._current()
            rows = self._read(
                _UNANSWERED + " AND p.id >= ? ORDER BY p.id LIMIT 1", (cur.first_unanswered,)
            )
            if rows:
                cur.first_unanswered = rows[0][0]
            return _pair_dict(rows[0]) if rows else None

    def _current(self) -> _Current:
        """The current answers and what they imply, brought up to date.

        Answers and undos are append-only, so (last answer id, number of
        undos) changes exactly when the current answers may have changed,
        whichever process wrote them. New answers for pairs that had none are
        appended to the cached state one by one, with their contradiction
        checked incrementally: the work per answer does not grow with the
        answers before it. An undo, or an answer that changes a pair's
        earlier answer (the conflict review), rebuilds the state from the
        store.
        """
        with self._mutex:
            last_id, n_undos = self._read(_CHANGE_KEY)[0]
            d = self._derived
            if d is None or d.undos != n_undos:
                d = self._derived = _Current(self.n_images, n_undos)
                d.extend(self._read(_CURRENT + " ORDER BY a.id"))
                d.last_id = last_id
            elif last_id > d.last_id:
                if not d.extend(self._read(_NEW_ANSWERS, (d.last_id,))):  # a changed answer
                    self._derived = None
                    return self._current()
                d.last_id = last_id
            return d

    def answers(self, *, history=False) -> list:
        """Current answers in the order given (or, with ``history=True``, every answer row).

        Each is a dict: answer_id, pair_id, i, j, answer, annotator,
        answered_at, replaces (the answer id it changed, or None) and, with
        ``history=True``, undone (bool) and current (bool).
        """
        with self._mutex:
            cur = self._current().cur
            if not history:
                return [dict(a) for a in cur]
            current = {a["answer_id"] for a in cur}
            rows = self._read(_HISTORY)
        out = []
        for r in rows:
            d = _answer_dict(r[:8])
            d["undone"] = bool(r[8])
            d["current"] = d["answer_id"] in current
            out.append(d)
        return out

    def constraints(self) -> PairConstraints:
        """The current same/different answers as :class:`~aas_core.PairConstraints`.

        Skips, "can't tell" and undone answers are left out; a changed answer replaces the
        earlier one for its pair and takes the place in the order of when it
        was given. Row k of the result is ``answers()``'s k-th non-skip entry.
        """
        return self._current().constraints().copy()

    def version(self) -> tuple:
        """A key that changes whenever answers, undos, names, checks, the photos or the
        embedding in use change, whichever process wrote them (every table behind it is
        append-only)."""
        return tuple(self._read(_VERSION)[0])

    def answer_table(self) -> dict:
        """The current same/different answers as arrays, row k = row k of :meth:`constraints`.

        Keys: ``answer_id``, ``i``, ``j`` (int64), ``same`` (bool), ``origin``
        (str: ``"pair"`` for the answer to a pair question, else the kind of the
        catalogue operation it carries out: ``"merge"``, ``"split"``,
        ``"new_individual"``), ``kind`` (str: the kind the pair was queued
        with, e.g. ``"audit-member"``), ``operation`` (int64: the operation's
        id, 0 for a pair question) and ``pool`` (str: the pool it was drawn
        from). One read of the cached state, no query.
        """
        with self._mutex:
            cur = self._current()
            told, origins = cur.told, cur.origins
            return {
                "answer_id": np.array([a["answer_id"] for a in told], np.int64),
                "i": np.array([a["i"] for a in told], np.int64),
                "j": np.array([a["j"] for a in told], np.int64),
                "same": np.array([a["answer"] == "same" for a in told], bool),
                "origin": np.array([o[0] or "pair" for o in origins], object),
                "kind": np.array([o[1] for o in origins], object),
                "operation": np.array([o[2] for o in origins], np.int64),
                "pool": np.array([o[3] for o in origins], object),
            }

    def conflicts(self) -> list:
        """Current answers that contradict the closure of the answers given before them.

        See :meth:`PairConstraints.contradictions`. Each is the answer's dict
        (as in :meth:`answers`) plus ``implied`` ("same" or "different": what
        the earlier answers imply) and ``because`` (the dicts of those
        earlier answers, oldest first).
        """
        with self._mutex:
            cur = self._current()
            return [cur.described(c) for c in cur.found]

    def conflict_of(self, answer_id):
        """The conflict of one current answer (a dict as in :meth:`conflicts`), or None."""
        with self._mutex:
            cur = self._current()
            c = cur.found_by_answer.get(answer_id)
            return None if c is None else cur.described(c)

    def progress(self) -> dict:
        """Counts: images, pairs (queued questions), answered (same + different), same,
        different, cant_tell, skipped, remaining, conflicts, undone (answers undone so far),
        edits (catalogue operations in effect: merges, splits, new individuals) and
        edit_answers (the answers on pairs that edits added, which are counted as their
        edit: a split of k photos is one edit, not 2k - 1 answered questions, and never
        queued as questions). "pairs" and "remaining" are the queued questions."""
        with self._mutex:
            cur = self._current()
            n_pairs, n_edit_pairs = self._pair_counts()
            same, diff, cant, skip = (cur.counts[a] for a in ANSWERS)
            return {
                "images": self.n_images,
                "pairs": int(n_pairs) - int(n_edit_pairs),
                "answered": same + diff,
                "same": same,
                "different": diff,
                "cant_tell": cant,
                "skipped": skip,
                "remaining": int(n_pairs) - int(n_edit_pairs) - (len(cur.cur) - cur.on_edit_pairs),
                "conflicts": len(cur.found),
                "undone": int(cur.undos),
                "edits": len(cur.edits),
                "edit_answers": cur.on_edit_pairs,
            }

    def _pair_counts(self) -> tuple:
        """(pairs, pairs a catalogue edit queued), counted once and then only over the pairs
        added since: pairs are never deleted, and a scan of every pair's sampler on each
        answer would cost ~6 ms at 50,000 pairs."""
        with self._mutex:
            top = self._read("SELECT COALESCE(MAX(id), 0) FROM pairs")[0][0]
            last, n, edits = self._counted_pairs
            if top > last:
                more, more_edits = self._read(
                    "SELECT COUNT(*), COALESCE(SUM(sampler = 'catalogue'), 0) FROM pairs "
                    "WHERE id > ?",
                    (last,),
                )[0]
                last, n, edits = top, n + int(more), edits + int(more_edits)
                self._counted_pairs = (last, n, edits)
            return n, edits

    def next_cycle(self) -> int:
        """One more than the largest cycle number in the queue (0 for an empty queue)."""
        return int(self._read("SELECT COALESCE(MAX(cycle) + 1, 0) FROM pairs")[0][0])

    # ---- writing (one transaction each) ------------------------------------------------

    def _write(self, fn):
        with self._mutex:
            if self._conn is None:
                raise ValueError(f"AnnotationStore {str(self.path)!r} is closed.")
            if self.readonly:
                raise StoreReadOnly(
                    f"AnnotationStore {str(self.path)!r} was opened read-only "
                    "(readonly=True); nothing was written. Open it without readonly=True to "
                    "change it."
                )
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    out = fn(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    # a failed COMMIT (a full disk) may leave the transaction open
                    if conn.in_transaction:
                        try:
                            conn.execute("ROLLBACK")
                        except sqlite3.Error:
                            pass  # the error that got here says more
                    raise
            except sqlite3.Error as exc:
                problem = _write_problem(exc, self.path, f"AnnotationStore {str(self.path)!r}")
                if problem is None:
                    raise
                raise problem from None
            return out

    def add_pairs(
        self, pairs, *, sampler, cycle, prob=None, pool=None, kind=None, priority=0
    ) -> int:
        """Queues pairs to ask about; returns how many were new.

        Pairs already queued (in either order) are left as they are, and a
        pair given twice is queued once, so the queue never holds a pair
        twice. One transaction.

        Parameters
        ----------
        pairs : (m, 2) int array of image indices (never modified)
        sampler : str, the sampler's name (e.g. "aas")
        cycle : int >= 0, the proposal round
        prob : (m,) float array, optional, the sampler's probability (NaN: none)
        pool, kind : (m,) str arrays, optional (see :class:`~aas_core.PairProposal`)
        priority : int >= 0
            Pairs of higher priority are asked first (:meth:`next_pair`); a pair
            already queued is raised to it, never lowered.
        """
        owner = "AnnotationStore.add_pairs"
        arr = _as_index_pairs(pairs, self.n_images, owner)
        if not isinstance(sampler, str) or not sampler.strip():
            raise ValueError(f"{owner}: 'sampler' must be a non-empty string; got {sampler!r}.")
        if isinstance(cycle, bool) or not isinstance(cycle, numbers.Integral) or cycle < 0:
            raise ValueError(f"{owner}: 'cycle' must be an int >= 0; got {cycle!r}.")
        if isinstance(priority, bool) or not isinstance(priority, numbers.Integral):
            raise TypeError(f"{owner}: 'priority' must be an int >= 0; got {priority!r}.")
        if not 0 <= priority < 2**31:
            raise ValueError(f"{owner}: 'priority' must be an int >= 0; got {priority!r}.")
        m = len(arr)
        columns = {}
        for name, values, conv in (("prob", prob, float), ("pool", pool, str), ("kind", kind, str)):
            if values is None:
                columns[name] = [None if name == "prob" else ""] * m
                continue
            vals = list(np.asarray(values).reshape(-1).tolist())
            if len(vals) != m:
                raise ValueError(
                    f"{owner}: {name!r} must have one entry per pair ({m}); got {len(vals)}."
                )
            try:
                vals = [conv(v) for v in vals]
            except (TypeError, ValueError):
                raise ValueError(f"{owner}: {name!r} must hold {conv.__name__} values.") from None
            if name == "prob":
                vals = [None if not math.isfinite(v) else v for v in vals]
            columns[name] = vals
        now = _now()
        priority = int(priority)
        rows = [
            (int(i), int(j), sampler, int(cycle), p, po, k, now, priority)
            for (i, j), p, po, k in zip(
                arr.tolist(), columns["prob"], columns["pool"], columns["kind"]
            )
        ]

        def write(conn):
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO pairs (i, j, sampler, cycle, prob, pool, kind, added_at, "
                "priority) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            added = conn.total_changes - before
            if priority > 0 and added < len(rows):
                conn.executemany(
                    "UPDATE pairs SET priority = ? WHERE i = ? AND j = ? AND priority < ?",
                    [(priority, r[0], r[1], priority) for r in rows],
                )
            return added

        return self._write(write) if rows else 0

    def answer(self, pair_id, answer, *, annotator=None, replace=False) -> dict:
        """Stores a person's answer for a queued pair (committed before it returns).

        Parameters
        ----------
        pair_id : int, a queued pair's id
        answer : "same", "different", "cant_tell" or "skip"
            "cant_tell" (the photos show nothing to compare) and "skip" are
            no constraint; the pair is not asked again either way.
        annotator : str, optional (default: the user name of this process)
        replace : bool
            A pair that already has a *different* current answer is changed
            only with ``replace=True`` (the review of a conflict does that);
            otherwise :class:`AlreadyAnswered` is raised and nothing is
            written, so a stale browser tab never overwrites an answer given
            in another. The old answer stays in the store as history.

        Returns
        -------
        dict
            The answer (see :meth:`answers`) plus ``unchanged``: True when
            the pair already had this very answer (nothing was written).
        """
        owner = "AnnotationStore.answer"
        pid = _check_pair_id(pair_id, owner)
        if answer not in ANSWERS:
            raise ValueError(f"{owner}: 'answer' must be one of {_ANSWER_LIST}; got {answer!r}.")
        annotator = _check_annotator(annotator, owner)

        def write(conn):
            if conn.execute("SELECT 1 FROM pairs WHERE id = ?", (pid,)).fetchone() is None:
                raise UnknownPair(f"unknown pair id {pid}: the store holds no such pair.")
            cur = conn.execute(_CURRENT_OF_PAIR, (pid,)).fetchone()
            if cur is not None:
                current = _answer_dict(cur)
                if current["answer"] == answer:
                    return {**current, "unchanged": True}
                if not replace:
                    raise AlreadyAnswered(
                        f"pair {pid} already has the answer {current['answer']!r} (answer "
                        f"{current['answer_id']}, {current['annotator']}, "
                        f"{current['answered_at']}); pass replace=True to change it.",
                        current,
                    )
            c = conn.execute(
                "INSERT INTO answers (pair_id, answer, annotator, answered_at, replaces) "
                "VALUES (?, ?, ?, ?, ?)",
                (pid, answer, annotator, _now(), None if cur is None else cur[0]),
            )
            row = conn.execute(f"SELECT {_ANSWER_COLUMNS} WHERE a.id = ?", (c.lastrowid,))
            row = row.fetchone()
            return {**_answer_dict(row), "unchanged": False}

        return self._write(write)

    def undo(self, *, annotator=None, origins=None) -> dict:
        """Takes back the caller's own latest action and returns it (a dict as in :meth:`answers`).

        The action is ``annotator``'s latest answer or catalogue operation
        (:meth:`apply_operation`) not yet undone, among ``origins`` when given:
        "pair" (answers to pair questions), "merge", "split",
        "new_individual" -- so one person's undo never takes back another's
        answer, and the catalogue page's undo takes back its own edits, not a
        pair answered meanwhile. ``annotator=None`` takes the latest action of
        anyone (a store used by one person).

        The answer row is kept and marked undone (an undo history row); if it
        had changed an earlier answer, that one is current again. An
        operation is undone as a whole. The dict adds ``operation`` (its id,
        or None), ``origin`` and ``undone_answers``. With nothing left to
        undo, or when the caller's latest answer was since changed by someone
        else (undoing it would change nothing), :class:`NothingToUndo` and no
        change.
        """
        owner = "AnnotationStore.undo"
        mine = None if annotator is None else _check_annotator(annotator, owner)
        who = _check_annotator(annotator, owner)
        if origins is not None:
            origins = (origins,) if isinstance(origins, str) else tuple(origins)
            known = ("pair", *_schema.OPERATIONS)
            bad = [o for o in origins if o not in known]
            if bad or not origins:
                raise ValueError(
                    f"{owner}: 'origins' must be some of {', '.join(map(repr, known))}; "
                    f"got {origins!r}."
                )
        where, args = ["a.id NOT IN (SELECT answer_id FROM undos)"], []
        if mine is not None:
            where.append("a.annotator = ?")
            args.append(mine)
        if origins is not None:
            kinds = [o for o in origins if o != "pair"]
            parts = ["a.operation IS NULL"] if "pair" in origins else []
            if kinds:
                parts.append(
                    "a.operation IN (SELECT id FROM operations WHERE kind IN "
                    f"({', '.join('?' * len(kinds))}))"
                )
                args.extend(kinds)
            where.append(f"({' OR '.join(parts)})")

        def write(conn):
            row = conn.execute(
                f"SELECT {_ANSWER_COLUMNS} WHERE {' AND '.join(where)} ORDER BY a.id DESC LIMIT 1",
                args,
            ).fetchone()
            whose = "" if mine is None else f" by {mine!r}"
            if row is None:
                raise NothingToUndo(
                    f"nothing to undo: every answer{whose} given so far is already undone."
                )
            op = conn.execute("SELECT operation FROM answers WHERE id = ?", (row[0],)).fetchone()[0]
            if op is None:
                ids = [row[0]]
                later = conn.execute(
                    f"SELECT {_ANSWER_COLUMNS} WHERE a.pair_id = ? AND a.id > ? "
                    "AND a.id NOT IN (SELECT answer_id FROM undos) ORDER BY a.id DESC LIMIT 1",
                    (row[1], row[0]),
                ).fetchone()
                if later is not None:  # someone else's answer replaced it: nothing to take back
                    raise NothingToUndo(
                        f"nothing to undo: the latest answer{whose} ({row[4]!r} for images "
                        f"#{row[2]} and #{row[3]}) was changed since to {later[4]!r} by "
                        f"{later[5]!r}; nothing was undone."
                    )
                origin = "pair"
            else:  # a catalogue operation is undone as a whole
                ids = [
                    r[0]
                    for r in conn.execute(
                        "SELECT id FROM answers WHERE operation = ? "
                        "AND id NOT IN (SELECT answer_id FROM undos) ORDER BY id DESC",
                        (op,),
                    )
                ]
                origin = conn.execute("SELECT kind FROM operations WHERE id = ?", (op,))
                origin = origin.fetchone()[0]
            now = _now()
            conn.executemany(
                "INSERT INTO undos (answer_id, annotator, undone_at) VALUES (?, ?, ?)",
                [(i, who, now) for i in ids],
            )
            return {
                **_answer_dict(row),
                "operation": op,
                "origin": origin,
                "undone_answers": len(ids),
            }

        return self._write(write)

    def apply_operation(
        self, kind, pairs, answers, *, detail="", annotator=None, stay=None
    ) -> dict:
        """Stores a catalogue operation as answers, in one transaction; undone as a whole.

        A merge is "same" answers and a split "different" ones (see
        :mod:`aas_core.catalogue`), so NP3, the samplers and the conflict
        review treat them like any answer. Pairs not yet queued are added
        (sampler "catalogue", the queue's latest cycle); a pair whose current
        answer differs gets the new one (the old stays as history); a pair
        that already has it is left alone.

        Parameters
        ----------
        kind : "merge", "split" or "new_individual" (a new season's photo that none of
            the known individuals shown is)
        pairs : (m, 2) int array of image indices, m >= 1 (never modified)
        answers : sequence of m answers, each "same" or "different"
        detail : str, what the person did, for the record
        stay : sequence of image indices, optional: a split's photos that stayed in the
            identity (one row each; the split's answers stay O(photos moved))
        annotator : str, optional

        Returns
        -------
        dict: operation (its id), answers (how many were written), unchanged
        """
        owner = "AnnotationStore.apply_operation"
        if kind not in _schema.OPERATIONS:
            raise ValueError(
                f"{owner}: 'kind' must be one of {', '.join(map(repr, _schema.OPERATIONS))}; "
                f"got {kind!r}."
            )
        arr = _as_index_pairs(pairs, self.n_images, owner)
        answers = list(answers)
        if len(arr) == 0 or len(answers) != len(arr):
            raise ValueError(
                f"{owner}: give one answer per pair, at least one; got {len(arr)} pairs and "
                f"{len(answers)} answers."
            )
        if any(a not in ("same", "different") for a in answers):
            raise ValueError(f"{owner}: each answer must be 'same' or 'different'.")
        if not isinstance(detail, str):
            raise TypeError(f"{owner}: 'detail' must be a string.")
        stay = [] if stay is None else sorted({int(i) for i in np.asarray(stay).reshape(-1)})
        if stay and (stay[0] < 0 or stay[-1] >= self.n_images):
            raise ValueError(f"{owner}: 'stay' holds an image index outside [0, {self.n_images}).")
        annotator = _check_annotator(annotator, owner)

        def write(conn):
            now = _now()
            cycle = conn.execute("SELECT COALESCE(MAX(cycle), 0) FROM pairs").fetchone()[0]
            op = conn.execute(
                "INSERT INTO operations (kind, detail, annotator, done_at) VALUES (?, ?, ?, ?)",
                (kind, detail, annotator, now),
            ).lastrowid
            written = unchanged = 0
            for (i, j), ans in zip(arr.tolist(), answers):
                i, j = min(i, j), max(i, j)
                conn.execute(
                    "INSERT OR IGNORE INTO pairs (i, j, sampler, cycle, prob, pool, kind, "
                    "added_at) VALUES (?, ?, 'catalogue', ?, NULL, '', ?, ?)",
                    (i, j, cycle, kind, now),
                )
                pid = conn.execute("SELECT id FROM pairs WHERE i = ? AND j = ?", (i, j)).fetchone()
                cur = conn.execute(_CURRENT_OF_PAIR, (pid[0],)).fetchone()
                if cur is not None and cur[4] == ans:
                    unchanged += 1
                    continue
                conn.execute(
                    "INSERT INTO answers (pair_id, answer, annotator, answered_at, replaces, "
                    "operation) VALUES (?, ?, ?, ?, ?, ?)",
                    (pid[0], ans, annotator, now, None if cur is None else cur[0], op),
                )
                written += 1
            conn.executemany(
                "INSERT INTO operation_photos (operation_id, image) VALUES (?, ?)",
                [(op, i) for i in stay],
            )
            return {"operation": op, "answers": written, "unchanged": unchanged}

        return self._write(write)

    def operation_photos(self, operations=None) -> dict:
        """{operation id: (k,) int64 images} of the operations that recorded photos (a
        split's photos that stayed); only ``operations`` (ids) when given, so a build
        reads the photos of the splits in effect, not of every split ever undone."""
        if operations is None:
            rows = self._read(
                "SELECT operation_id, image FROM operation_photos ORDER BY operation_id, image"
            )
        else:
            rows = []
            for op in sorted({int(o) for o in operations}):
                rows += self._read(
                    "SELECT operation_id, image FROM operation_photos WHERE operation_id = ? "
                    "ORDER BY image",
                    (op,),
                )
        out = {}
        for op, image in rows:
            out.setdefault(int(op), []).append(int(image))
        return {k: np.asarray(v, np.int64) for k, v in out.items()}


def image_file_of(roots, index, listed, images_dir) -> Path:
    """The file of image ``index`` listed as ``listed``: ``root/rel`` when ``roots`` (from
    :meth:`AnnotationStore.image_roots`) has it (a new season), else ``images_dir/listed``."""
    if index in roots:
        root, rel = roots[index]
        return Path(root) / rel
    return Path(images_dir) / listed


def _publish(tmp, path):
    """Puts the finished file ``tmp`` at ``path``, never replacing anything there."""
    try:
        os.link(tmp, path)  # atomic, and fails if the path was taken meanwhile
        return
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: exclusive create, then copy
        pass
    with open(tmp, "rb") as src, open(path, "xb") as dst:
        try:
            dst.write(src.read())
            dst.flush()
            os.fsync(dst.fileno())
        except BaseException:
            dst.close()
            os.unlink(path)
            raise


def load_constraints(path):
    """The current answers of the store at ``path`` as PairConstraints (read-only use; a
    store that cannot be written is read as it is)."""
    try:
        store = AnnotationStore.open(path)
    except StoreReadOnly:
        store = AnnotationStore.open(path, readonly=True)
    with store:
        return store.constraints()


# ---- helpers ----------------------------------------------------------------------------


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (containers)
        return "unknown"


def _check_pair_id(pair_id, owner) -> int:
    if isinstance(pair_id, (bool, np.bool_)) or not isinstance(pair_id, numbers.Integral):
        raise TypeError(f"{owner}: 'pair_id' must be an int; got {pair_id!r}.")
    pid = int(pair_id)
    if not -(2**63) <= pid < 2**63:  # SQLite cannot even look it up: no pair has it
        raise UnknownPair(f"unknown pair id {pid}: the store holds no such pair.")
    return pid


def _annotator_problem(annotator):
    """Why ``annotator`` cannot be stored as a name (a str), or None when it can."""
    if not isinstance(annotator, str):
        return f"must be a string; got {type(annotator).__name__}"
    if len(annotator) > 200:
        return f"must be a name of at most 200 characters; got {len(annotator)}"
    if "\x00" in annotator:
        return "must contain no NUL character"
    try:
        annotator.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, e.g. from JSON "\ud800"
        return "must be valid Unicode text (it holds a lone surrogate)"
    return None


def _check_annotator(annotator, owner) -> str:
    if annotator is None:
        return _user()
    problem = _annotator_problem(annotator)
    if problem is not None:
        exc = TypeError if not isinstance(annotator, str) else ValueError
        raise exc(f"{owner}: 'annotator' {problem}.")
    return annotator.strip() or _user()


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


def _pair_dict(r) -> dict:
    return {
        "pair_id": r[0],
        "i": r[1],
        "j": r[2],
        "sampler": r[3],
        "cycle": r[4],
        "prob": r[5],
        "pool": r[6],
        "kind": r[7],
        "priority": r[8],
    }


def _answer_dict(r) -> dict:
    return {
        "answer_id": r[0],
        "pair_id": r[1],
        "i": r[2],
        "j": r[3],
        "answer": r[4],
        "annotator": r[5],
        "answered_at": r[6],
        "replaces": r[7],
    }


# ---- the write-ahead log ------------------------------------------------------------------

_WAL_MAGIC = (0x377F0682, 0x377F0683)  # checksums little- / big-endian
_WAL_VERSION = 3007000
_WAL_HEADER = 32
_FRAME_HEADER = 24
_MASK = 0xFFFFFFFF


def _wal_checksum(data: bytes, big_endian: bool, s0=0, s1=0):
    """SQLite's WAL checksum over ``data`` (a multiple of 8 bytes), continuing from (s0, s1)."""
    words = np.frombuffer(data, dtype=">u4" if big_endian else "<u4").astype(np.uint64)
    for k in range(0, len(words), 2):
        s0 = (s0 + int(words[k]) + s1) & _MASK
        s1 = (s1 + int(words[k + 1]) + s0) & _MASK
    return s0, s1


@functools.lru_cache(maxsize=8)
def _checksum_map(n_pairs):
    """The WAL checksum over ``n_pairs`` word pairs as one linear map, so that a frame costs a
    few array operations instead of a Python loop over its page.

    Each step is s0 += x + s1; s1 += y + s0 (mod 2**32): s -> A s + (x, x + y) with
    A = [[1, 1], [1, 2]]. After n steps s = A**n s + sum_k A**(n-1-k) (x_k, x_k + y_k).
    Returns (A**n, the rows of A**(n-1-k) for every k) as uint64 (entries < 2**32: products
    wrap modulo 2**64, which keeps them right modulo 2**32).
    """
    powers = np.empty((n_pairs + 1, 4), np.uint64)
    a, b, c, d = 1, 0, 0, 1
    for k in range(n_pairs + 1):
        powers[k] = (a, b, c, d)
        a, b, c, d = (a + c) & _MASK, (b + d) & _MASK, (a + 2 * c) & _MASK, (b + 2 * d) & _MASK
    return tuple(int(v) for v in powers[n_pairs]), powers[n_pairs - 1 :: -1].T.copy()


def _frame_checksum(words, s):
    """(s0, s1) after the words of one frame (its header's first two, then its page)."""
    (a, b, c, d), q = _checksum_map(len(words) // 2)
    x = words[0::2]
    xy = x + words[1::2]
    with np.errstate(over="ignore"):
        t0 = int((q[0] * x).sum() + (q[1] * xy).sum())
        t1 = int((q[2] * x).sum() + (q[3] * xy).sum())
    return (a * s[0] + b * s[1] + t0) & _MASK, (c * s[0] + d * s[1] + t1) & _MASK


class WalScan(NamedTuple):
    """What an SQLite write-ahead log holds, frame by frame (see :func:`wal_scan`).

    frames : whole frames in the file; valid : the valid prefix (the frames SQLite's
    recovery reads); committed : the valid frames up to the last commit frame (what SQLite
    applies); damage : '' or why SQLite would silently drop committed frames;
    page_size, size : bytes.
    """

    frames: int
    valid: int
    committed: int
    damage: str
    page_size: int
    size: int

    @property
    def committed_bytes(self) -> int:
        """The length of the log cut after its last intact commit frame."""
        return _WAL_HEADER + self.committed * (_FRAME_HEADER + self.page_size)


def wal_scan(path) -> WalScan:
    """Every frame of an SQLite WAL file checked; ValueError if its header is invalid.

    A frame is valid when it carries the header's salts, a page number and the right
    cumulative checksum. SQLite's recovery stops at the first invalid one and applies the
    valid frames up to the last commit frame, without a word. That is right for the frames
    of an earlier generation left after the log restarted (the restart increments salt-1,
    so their salts differ) and for an unfinished transaction at the end (no commit frame
    follows). It is damage when the file ends inside a frame, or when a frame with the
    header's salts and a commit mark follows the break: a transaction that was committed
    (an answer acknowledged) would be dropped, and with it everything after.

    Not told apart: whole frames of garbage with other salts look like stale frames (they
    are ignored, and nothing committed is lost); a log cut exactly at a frame boundary looks
    like one whose later transactions never happened.
    """
    with open(path, "rb") as f:  # the -wal: SQLite keeps no fcntl lock on it to lose
        head = f.read(_WAL_HEADER)
        if len(head) < _WAL_HEADER:
            raise ValueError(f"its header is cut short ({len(head)} bytes)")
        magic, version, page_size, _, salt1, salt2, c1, c2 = struct.unpack(">8I", head)
        if magic not in _WAL_MAGIC or version != _WAL_VERSION:
            raise ValueError("it does not start like an SQLite write-ahead log")
        big = magic & 1 == 1
        s = _wal_checksum(head[:24], big)
        if s != (c1, c2) or not 512 <= page_size <= 65536 or page_size & (page_size - 1):
            raise ValueError("its header's checksum is wrong")
        size = os.fstat(f.fileno()).st_size
        frame = _FRAME_HEADER + page_size
        frames, rest = divmod(size - _WAL_HEADER, frame)
        dtype = np.dtype(">u4" if big else "<u4")
        valid = committed = 0
        damage = ""
        for k in range(frames):
            if k == valid:  # still in the valid prefix: read the whole frame
                block = f.read(frame)
                if len(block) < frame:
                    break  # the file shrank meanwhile; the caller looks again
            else:  # past it, only the frame headers tell what follows
                f.seek(_WAL_HEADER + k * frame)
                block = f.read(_FRAME_HEADER)
                if len(block) < _FRAME_HEADER:
                    break
            pgno, commit, fs1, fs2, fc1, fc2 = struct.unpack(">6I", block[:_FRAME_HEADER])
            ours = (fs1, fs2) == (salt1, salt2)
            if k == valid and ours and pgno:
                words = np.frombuffer(block, dtype)
                words = np.concatenate((words[:2], words[6:])).astype(np.uint64)
                t = _frame_checksum(words, s)
                if t == (fc1, fc2):
                    s = t
                    valid += 1
                    committed = valid if commit else committed
                    continue
            if ours and commit:
                damage = f"frame {k + 1} of {frames} ends a transaction, but " + (
                    "it is not intact (its checksum)"
                    if k == valid
                    else f"frame {valid + 1} before it is not intact"
                )
                break
        if not damage and rest:
            damage = (
                f"it ends {rest} bytes into frame {frames + 1} (a frame is {frame} bytes), so "
                "it was cut short or something was written after it"
            )
    return WalScan(frames, valid, committed, damage, page_size, size)


def wal_frames(path) -> tuple:
    """(valid, committed) frames of an SQLite WAL file; ValueError if its header is invalid.

    ``valid`` is the valid prefix that SQLite's recovery reads; ``committed`` counts its
    frames up to the last commit frame: what SQLite would apply. :func:`wal_scan` also
    says whether frames after the prefix are damage.
    """
    scan = wal_scan(path)
    return scan.valid, scan.committed


def _check_wal(wal: Path, what: str) -> None:
    """Refuses a store whose -wal SQLite would discard or cut short (keeping the file as it
    is): nothing has connected to the store yet, so nothing has been folded in or emptied."""
    # A server writing to the log meanwhile can leave it looking cut short for a moment:
    # only damage that stays while the file does not change is refused.
    for _ in range(20):
        try:
            before = wal.stat()
        except FileNotFoundError:
            return
        if before.st_size == 0:
            return
        try:
            scan, why = wal_scan(wal), ""
        except ValueError as exc:
            scan, why = None, str(exc)
        except OSError as exc:
            raise ValueError(
                f"{what}: its write-ahead log {str(wal)!r} cannot be read ({exc})."
            ) from None
        if scan is not None and not scan.damage:
            return
        time.sleep(0.05)
        try:
            after = wal.stat()
        except FileNotFoundError:
            return
        if (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns):
            break
    else:
        return  # still being written to after a second: a live server's log, not a crash's
    size = before.st_size
    if scan is None:
        raise ValueError(
            f"{what}: its write-ahead log {str(wal)!r} ({size} bytes) is not valid ({why}). "
            "SQLite would discard it, and any answers in it, so the store was not opened and "
            "nothing was changed. Keep a copy of both files; if you accept losing what the log "
            "holds, move the log aside and open the store again."
        )
    db = wal.with_name(wal.name[: -len("-wal")])
    q = shlex.quote
    raise ValueError(
        f"{what}: its write-ahead log {str(wal)!r} ({size} bytes) is damaged: {scan.damage}. "
        f"Of its {scan.frames} frames, SQLite would apply the first {scan.committed}, the "
        f"intact committed ones, and silently drop the other {scan.frames - scan.committed}, "
        "answers included, so the store was not opened and nothing was changed. To salvage: "
        f"keep copies of both files (cp {q(str(db))} {q(str(db) + '.bak')}; "
        f"cp {q(str(wal))} {q(str(wal) + '.bak')}); to keep the {scan.committed} intact "
        f"frames and give up the rest, run: truncate -s {scan.committed_bytes} {q(str(wal))} "
        "and open the store again. The answers in the frames after the damage are only in "
        "the copy."
    )


def _untouched(path) -> str:
    wal = Path(f"{os.path.realpath(path)}-wal")
    try:
        _, committed = wal_frames(wal) if wal.stat().st_size else (0, 0)
    except (OSError, ValueError):
        committed = 0
    held = (
        f"; its write-ahead log holds {committed} committed frames (recent answers not yet "
        "in the main file), kept"
        if committed
        else ""
    )
    return (
        f" Nothing was changed{held}. To salvage what can be read, copy the store (and its "
        f"-wal) and run: sqlite3 copy.sqlite '.recover' | sqlite3 repaired.sqlite"
    )


# ---- read-only stores, full disks -------------------------------------------------------

_SQLITE_READONLY = 8
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14


def _sqlite_code(exc):
    """The primary SQLite result code of ``exc`` (Python < 3.11: from its message), or None."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF
    text = str(exc)
    for code, words in (
        (_SQLITE_FULL, "database or disk is full"),
        (_SQLITE_READONLY, "readonly database"),
        (_SQLITE_CANTOPEN, "unable to open database file"),
    ):
        if words in text:
            return code
    return None


def _not_writable(path) -> str:
    """Why a server could not write the store at ``path`` (its real path), or ''."""
    real = os.path.realpath(path)
    try:
        if os.statvfs(real).f_flag & os.ST_RDONLY:
            return "it is on a read-only file system"
    except (OSError, AttributeError):  # no statvfs (Windows): the checks below still hold
        pass
    if not _access(real, os.W_OK):
        return "the file cannot be written: its permissions or an immutable flag"
    folder = os.path.dirname(real)
    if not _access(folder, os.W_OK | os.X_OK):
        beside = (f"{real}-wal", f"{real}-shm")
        if not all(os.path.isfile(b) and _access(b, os.W_OK) for b in beside):
            return (
                f"its folder {folder!r} cannot be written, and SQLite keeps "
                f"{os.path.basename(real)}-wal and -shm beside it"
            )
    return ""


def _read_only_connection(path, real, what):
    """A connection that only reads the store, also where nothing can be created beside it.

    SQLite reads a WAL-mode file through ``<store>-shm``, which it creates; where the
    folder cannot be written and there is none, the file is opened as immutable -- only
    when no -wal holds committed frames, which an immutable open would leave out.
    """
    base = Path(os.path.abspath(path)).as_uri()
    immutable = (
        not _access(os.path.dirname(real), os.W_OK | os.X_OK)
        and not os.path.exists(f"{real}-shm")
        and not os.path.exists(f"{real}-journal")
    )
    if immutable:
        wal = Path(f"{real}-wal")
        try:
            committed = wal_frames(wal)[1] if wal.stat().st_size else 0
        except FileNotFoundError:
            committed = 0
        except (OSError, ValueError):  # _check_wal has seen it; it changed since
            committed = 1
        if committed:
            raise ValueError(
                f"{what} cannot be read where it is: its write-ahead log {str(wal)!r} holds "
                f"{committed} committed frames (the latest answers), which SQLite reads only "
                f"through {os.path.basename(real)}-shm, and that cannot be created in the "
                "read-only folder. Nothing was changed; copy the store and its -wal into a "
                "writable folder and open the copy."
            )
    query = "?mode=ro&immutable=1" if immutable else "?mode=ro"
    try:
        return sqlite3.connect(
            base + query, uri=True, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise ValueError(f"{what} cannot be opened ({exc}).") from None


def _write_problem(exc, path, what):
    """StoreFull or StoreReadOnly for an SQLite error that says the disk is full or the store
    read-only (so that neither is taken for damage), else None."""
    code = _sqlite_code(exc)
    if code == _SQLITE_FULL:
        return StoreFull(
            f"{what}: the disk holding {str(path)!r} is full ({exc}); nothing of this change "
            "was stored, and everything stored before it is kept. Free some space and try "
            "again."
        )
    if code == _SQLITE_READONLY:
        why = _not_writable(path) or str(exc)
        return StoreReadOnly(
            f"{what} cannot be written ({why}); nothing of this change was stored, and "
            "everything stored before it is kept."
        )
    return None


# ---- the store's file and its locks -------------------------------------------------------

_OPEN_FLAGS = (
    getattr(os, "O_NOFOLLOW", 0)  # a link swapped in is refused, never followed
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NONBLOCK", 0)  # a FIFO put there never hangs the open
    | getattr(os, "O_BINARY", 0)
)


class _StoreFile:
    """This process's read-only descriptor on a store file: its header is read and its lock
    taken through it.

    Closing any descriptor of a file drops every ``fcntl`` lock the process holds on it,
    the shared lock each WAL-mode SQLite connection keeps included. Without that lock
    another process's last connection may checkpoint the log and delete it under a live
    one, whose next answers then go to a deleted file. So a descriptor is closed only once
    no store of this process has the file open (SQLite defers its own closes the same way).
    """

    _mutex = threading.Lock()
    _files = {}  # (st_dev, st_ino) -> [stores open on the file, descriptors to close then]

    def __init__(self, real):
        fd = os.open(real, os.O_RDONLY | _OPEN_FLAGS)
        st = os.fstat(fd)
        self.fd = fd
        self.key = (st.st_dev, st.st_ino)
        self.side = None  # the descriptor of <store>.lock while this process holds the lock
        with self._mutex:
            self._files.setdefault(self.key, [0, []])[0] += 1

    def read(self, n) -> bytes:
        if hasattr(os, "pread"):
            return os.pread(self.fd, n, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)  # pragma: no cover - Windows
        return os.read(self.fd, n)

    def close(self) -> None:
        """Drops this store's locks, and closes its descriptors once no store of this process
        has the file open (called once)."""
        if self.side is not None:
            os.close(self.side)  # the lock file: SQLite keeps no lock on it
            self.side = None
        try:
            _unlock(self.fd)  # the lock on the store file, which outlives a deferred close
        except OSError:
            pass
        with self._mutex:
            entry = self._files[self.key]
            entry[0] -= 1
            entry[1].append(self.fd)
            if entry[0]:
                return
            del self._files[self.key]
        for fd in entry[1]:
            os.close(fd)


def _access(path, mode) -> bool:
    if os.access in os.supports_effective_ids:  # the rights this process has, setuid or not
        return os.access(path, mode, effective_ids=True)
    return os.access(path, mode)


def _open_lock_file(path, owner):
    """(descriptor, ours) of the lock file ``path``, created 0600 if missing and never
    opened through a symbolic link; ``ours``: a regular file of this user with no other
    name, the only kind that is written."""
    try:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | _OPEN_FLAGS, 0o600)
        except PermissionError:  # another user's lock file: a lock works read-only too
            fd = os.open(path, os.O_RDONLY | _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP or os.path.islink(path):
            raise ValueError(
                f"{owner}: {str(path)!r} is a symbolic link, not the store's lock file; "
                "nothing was written through it. Remove it and start again."
            ) from None
        if isinstance(exc, IsADirectoryError):
            raise ValueError(
                f"{owner}: {str(path)!r} is not a regular file; remove it and start again."
            ) from None
        raise ValueError(f"{owner}: cannot open its lock file {str(path)!r} ({exc}).") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ValueError(
            f"{owner}: {str(path)!r} is not a regular file; remove it and start again."
        )
    uid = os.geteuid() if hasattr(os, "geteuid") else st.st_uid
    ours = st.st_uid == uid and st.st_nlink == 1 and _access(path, os.W_OK)
    return fd, ours


def _read_holder(fd) -> str:
    """The pid a lock file holds ('pid 123 since ...'), or ''."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 200).decode("utf-8", "replace")
    except OSError:
        return ""
    text = text.splitlines()[0].strip() if text.strip() else ""
    return text if text.isprintable() else ""


def _holder(key, side_path) -> str:
    """Who holds the lock on the store file ``key``: its pid from /proc/locks (Linux), with
    the time from the lock file beside the store where that file names the same pid."""
    try:
        fd = os.open(side_path, os.O_RDONLY | _OPEN_FLAGS)
    except OSError:
        text = ""
    else:
        try:
            text = _read_holder(fd) if stat.S_ISREG(os.fstat(fd).st_mode) else ""
        finally:
            os.close(fd)
    pid = _flock_pid(key)
    if pid is None or text.split(" ")[:2] == ["pid", str(pid)]:
        return text or "pid unknown"
    return f"pid {pid}"


def _flock_pid(key):
    """The pid holding a flock on the file ``key`` (st_dev, st_ino), from /proc/locks."""
    dev, ino = key
    where = f"{os.major(dev):02x}:{os.minor(dev):02x}:{ino}" if hasattr(os, "major") else ""
    try:
        with open("/proc/locks") as f:
            for line in f:
                fields = line.split()
                # "1: FLOCK ADVISORY WRITE 4242 fd:00:1234 0 EOF"; "->" marks one waiting
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == where:
                    return int(fields[4])
    except (OSError, ValueError):
        pass
    return None


try:  # POSIX
    import fcntl

    def _try_lock(fd, shared_file=False):
        """True when this process now holds the exclusive lock, False when another does."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        except OSError:
            if shared_file:  # a file system without flock on the store: the lock file beside
                return True  # it (on the same file system, so most likely refused too) decides
            raise

    def _unlock(fd):
        fcntl.flock(fd, fcntl.LOCK_UN)

except ImportError:  # pragma: no cover - Windows
    import msvcrt

    def _try_lock(fd, shared_file=False):
        if shared_file:
            return True  # the lock file beside the store guards it
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(fd):
        pass  # closing the lock file releases it
