"""The store file on disk: the errors of a store that is held, read-only or on a full disk,
why it cannot be written, read-only connections, this process's descriptors on the file
and the locks of a server."""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
import threading
from pathlib import Path

from ._wal import wal_frames

__all__ = ["StoreFull", "StoreLocked", "StoreReadOnly"]


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


# ---- a new store file ---------------------------------------------------------------------


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
