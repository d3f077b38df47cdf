"""The answers of a store: their kinds, the SQL that reads them, the errors of answering,
and :func:`told_answers`, a store file's current answers without the rest of the store."""

from __future__ import annotations

import numbers

import numpy as np

from ._base import _StoreBase, _user
from ._disk import StoreReadOnly

__all__ = ["ANSWERS", "NOT_CONSTRAINTS", "AlreadyAnswered", "NothingToUndo", "UnknownPair"]

ANSWERS = ("same", "different", "cant_tell", "skip")
# Answers that are no constraint: the pair is settled, nothing is concluded.
NOT_CONSTRAINTS = ("cant_tell", "skip")
_ANSWER_LIST = ", ".join(repr(a) for a in ANSWERS)
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


def told_answers(path) -> tuple:
    """(images, pairs, same) of the store at ``path``: its number of images and its current
    same/different answers in the order given, as an (m, 2) int64 array and an (m,) bool
    array; skips, "can't tell" and undone answers are left out. The store is opened as
    :func:`~aas_core.annotate.load_constraints` opens it: to write where it can be, else
    read as it is."""
    try:
        store = _StoreBase.open(path)
    except StoreReadOnly:
        store = _StoreBase.open(path, readonly=True)
    with store:
        rows = store._read(_CURRENT + " ORDER BY a.id")
    told = [r for r in rows if r[4] not in NOT_CONSTRAINTS]
    pairs = np.array([[r[2], r[3]] for r in told], np.int64).reshape(-1, 2)
    return store.n_images, pairs, np.array([r[4] == "same" for r in told], bool)
