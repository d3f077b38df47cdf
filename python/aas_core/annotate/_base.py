"""A store file opened, checked and (by a server) locked, read and written one transaction
at a time. :class:`~aas_core.annotate.store.AnnotationStore` adds the images, the answers
and the catalogue edits; :func:`~aas_core.annotate._answers.told_answers` reads the answers
through this alone."""

from __future__ import annotations

import datetime as _dt
import getpass
import os
import sqlite3
import threading
import weakref
from pathlib import Path, PurePosixPath, PureWindowsPath

from . import _schema
from ._disk import (
    _SQLITE_CANTOPEN,
    StoreLocked,
    StoreReadOnly,
    _holder,
    _not_writable,
    _open_lock_file,
    _publish,
    _read_holder,
    _read_only_connection,
    _sqlite_code,
    _StoreFile,
    _try_lock,
    _unlock,
    _write_problem,
)
from ._schema import FORMAT, SCHEMA_VERSION
from ._wal import _check_wal, _untouched

_SQLITE_MAGIC = b"SQLite format 3\x00"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (containers)
        return "unknown"


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


class _StoreBase:
    """One store file: opened and checked, locked by a server, read and written through
    one connection that threads share under a lock. Use create() or open()."""

    def __init__(self, conn, path, *, readonly=False, file=None):  # use create() or open()
        self._conn = conn
        self.path = Path(path)
        self.readonly = bool(readonly)  # opened with readonly=True: every write is refused
        self._mutex = threading.RLock()
        self._file = file  # _StoreFile: this store's descriptors on its file (see lock)
        # released once, at close() or when the store is collected unclosed
        self._release = weakref.finalize(self, file.close) if file is not None else None
        self._derived = None  # AnnotationStore._current() keeps its answers here
        self._counted_pairs = (0, 0, 0)  # (last pair id, pairs, edit pairs): _pair_counts
        self.n_images = int(conn.execute("SELECT COUNT(*) FROM images").fetchone()[0])

    # ---- opening -------------------------------------------------------------------

    @classmethod
    def create(cls, path, image_paths, *, embeddings_path=None) -> _StoreBase:
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
    def open(cls, path, *, readonly=False) -> _StoreBase:
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

    @classmethod
    def open_to_read(cls, path) -> _StoreBase:
        """A store to read (``--status``, ``--export``, ``refine``): opened for writing where
        it can be, so an older store is upgraded as :meth:`open` does, else read-only (a
        read-only file, folder or mount, an immutable file)."""
        try:
            return cls.open(path)
        except StoreReadOnly:
            return cls.open(path, readonly=True)

    def lock(self) -> _StoreBase:
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
