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

This module needs no web framework (sqlite3 is in the standard library). It holds the
queue and the answers; :class:`AnnotationStore` gathers the other parts, one module each:
opening, checking, locking and transactions (:mod:`._base`), the file on disk and its locks
(:mod:`._disk`), the write-ahead log checked (:mod:`._wal`), the images and their recorded
content (:mod:`._images`), the answers' SQL and errors (:mod:`._answers`) and the catalogue
edits (:mod:`._edits`).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ..constraints import ContradictionTracker, PairConstraints
from . import _schema
from ._answers import (
    _ANSWER_COLUMNS,
    _ANSWER_LIST,
    _CHANGE_KEY,
    _CURRENT,
    _CURRENT_OF_PAIR,
    _HISTORY,
    _NEW_ANSWERS,
    _PAIR_COLUMNS,
    _UNANSWERED,
    _VERSION,
    ANSWERS,
    NOT_CONSTRAINTS,
    AlreadyAnswered,
    NothingToUndo,
    UnknownPair,
    _answer_dict,
    _as_index_pairs,
    _check_annotator,
    _check_pair_id,
    _pair_dict,
)
from ._base import _now, _StoreBase
from ._disk import StoreFull, StoreLocked, StoreReadOnly
from ._edits import _Edits
from ._images import (
    FileDigest,
    _Images,
    file_digest,
    image_file_of,  # noqa: F401 (importable from here, as before)
)
from ._schema import FORMAT, SCHEMA_VERSION  # noqa: F401 (FORMAT: importable from here)
from ._wal import WalScan, wal_frames, wal_scan

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

# file_digest's examples run with this module's (the doctests cover the public modules)
__test__ = {"file_digest": file_digest}


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
        self.edits = set()  # ids of the catalogue operations with a current answer
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
                self.edits.add(r[10])
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


class AnnotationStore(_Images, _Edits, _StoreBase):
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


def load_constraints(path):
    """The current answers of the store at ``path`` as PairConstraints (read-only use; a
    store that cannot be written is read as it is)."""
    return PairConstraints.from_store(path)
