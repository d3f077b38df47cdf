"""SQLite write-ahead logs checked frame by frame: a store whose log SQLite would cut short
or discard is refused before anything connects to it, saying how to salvage it."""

from __future__ import annotations

import functools
import os
import shlex
import struct
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = ["WalScan", "wal_frames", "wal_scan"]

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
