"""Must-link / cannot-link answers and what they imply.

A person (or a simulated oracle) answers "same identity?" for pairs of
images. :class:`PairConstraints` keeps every answer in the order it was given
(nothing is ever dropped silently), derives the must-link closures
(transitive: a~b and b~c give a~c) and the cannot-links between closures
(a≁c and a~b give b≁c), tells which pairs are already known, finds
contradictions, and saves to / loads from a versioned file.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order, connected_components

from .annotate._answers import told_answers  # sqlite lives there; it needs nothing from here

__all__ = ["FORMAT_VERSION", "ContradictionTracker", "PairConstraints"]

FORMAT_VERSION = 1
_MAGIC = "aas-core/pair-constraints"


def _as_pairs(pairs, name, n, owner="PairConstraints") -> np.ndarray:
    """Validated (m, 2) int64 copy of ``pairs``; rows are unordered pairs i != j."""
    try:
        arr = np.asarray(pairs if pairs is not None else np.empty((0, 2), np.int64))
    except (ValueError, TypeError, OverflowError):  # ragged nested lists, odd objects
        raise ValueError(
            f"{owner}: {name!r} must be an (m, 2) array of image indices (a list of [i, j] "
            f"pairs); got {type(pairs).__name__} that is not one."
        ) from None
    if arr.size == 0:
        return np.empty((0, 2), np.int64)
    if arr.dtype == object and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
        for v in arr.reshape(-1)
    ):  # Python ints beyond int64 make an object array
        raise ValueError(f"{owner}: {name!r} holds an index >= 2**63 or < -2**63.")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{owner}: {name!r} must hold integer indices; got dtype {arr.dtype}.")
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{owner}: {name!r} must have shape (m, 2); got {arr.shape}.")
    if arr.dtype.kind == "u" and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{owner}: {name!r} holds an index >= 2**63.")
    arr = arr.astype(np.int64)  # a copy: the caller's array is never kept or written
    bad = np.flatnonzero((arr < 0).any(axis=1) | ((arr >= n).any(axis=1) if n else False))
    if bad.size:
        i, j = arr[bad[0]]
        rng = f"[0, {n})" if n else ">= 0"
        raise ValueError(
            f"{owner}: {name!r} row {int(bad[0])} is ({i}, {j}); indices must be in {rng}."
        )
    self_pair = np.flatnonzero(arr[:, 0] == arr[:, 1])
    if self_pair.size:
        i = int(arr[self_pair[0], 0])
        raise ValueError(
            f"{owner}: {name!r} row {int(self_pair[0])} pairs {i} with itself; "
            "a constraint needs two different images."
        )
    return arr


class PairConstraints:
    """Must-link (ML) and cannot-link (CL) pairs with their transitive closure.

    Parameters
    ----------
    must_link, cannot_link : (m, 2) int arrays, optional
        Initial answers; ML first, then CL, in row order.
    n : int, optional
        Number of images. When given, every index must be in [0, n).

    Notes
    -----
    Answers are stored in insertion order (``pairs``, ``is_must_link``); the
    order matters for ``np3(on_conflict="drop_oldest")``. Adding the same
    answer twice is an error; the opposite answer for a stored pair is kept
    (no answer is lost) and reported by :meth:`conflicts` / :meth:`check`.

    Examples
    --------
    >>> c = PairConstraints(must_link=[[0, 1], [1, 2]], cannot_link=[[2, 3]])
    >>> bool(c.is_known(0, 2)), bool(c.is_known(0, 3)), bool(c.is_known(3, 4))
    (True, True, False)
    >>> c.check()  # consistent: no error
    """

    def __init__(self, must_link=None, cannot_link=None, *, n=None):
        if n is not None:
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
                raise ValueError(f"PairConstraints: 'n' must be an int >= 2 or None; got {n!r}.")
            n = int(n)
        self.n = n
        self._pairs = np.empty((0, 2), np.int64)
        self._ml = np.empty(0, bool)
        self._cache = None
        self.add_must_link(must_link)
        self.add_cannot_link(cannot_link)

    # ---- adding answers ------------------------------------------------------

    def add_must_link(self, pairs) -> int:
        """Adds "same identity" answers; returns how many were added."""
        return self._add(pairs, True, "must_link")

    def add_cannot_link(self, pairs) -> int:
        """Adds "different identities" answers; returns how many were added."""
        return self._add(pairs, False, "cannot_link")

    def add(self, pairs, same) -> int:
        """Adds answers ``same[k]`` (bool) for ``pairs[k]``, in order."""
        arr = _as_pairs(pairs, "pairs", self.n)
        same = np.asarray(same)
        if same.dtype != bool or same.shape != (len(arr),):
            raise ValueError(
                f"PairConstraints.add: 'same' must be a bool array of shape ({len(arr)},); "
                f"got dtype {same.dtype} and shape {same.shape}."
            )
        self._check_new(arr, same, "pairs")
        self._append(arr, same)
        return len(arr)

    def _add(self, pairs, is_ml, name) -> int:
        arr = _as_pairs(pairs, name, self.n)
        same = np.full(len(arr), is_ml)
        self._check_new(arr, same, name)
        self._append(arr, same)
        return len(arr)

    def _check_new(self, arr, same, name):
        codes = _pair_codes(self._pairs, arr)  # dense: no overflow for any index < 2**63
        old = codes[: len(self._pairs)] * 2 + self._ml
        keys = codes[len(self._pairs) :] * 2 + same
        uniq, first, counts = np.unique(keys, return_index=True, return_counts=True)
        repeated = first[counts > 1]
        again = np.flatnonzero(np.isin(keys, old))
        if repeated.size or again.size:
            row = int(repeated[0] if repeated.size else again[0])
            kind = "must-link" if same[row] else "cannot-link"
            where = "twice in this call" if repeated.size else "already stored"
            raise ValueError(
                f"PairConstraints: {name!r} row {row}: the {kind} pair "
                f"({arr[row, 0]}, {arr[row, 1]}) is {where}."
            )

    def _append(self, arr, same):
        if len(arr):
            self._pairs = np.concatenate([self._pairs, arr])
            self._ml = np.concatenate([self._ml, same])
            self._cache = None

    # ---- what is stored --------------------------------------------------------

    def __len__(self) -> int:
        return len(self._pairs)

    def __repr__(self) -> str:
        n = f", n={self.n}" if self.n else ""
        n_ml = int(self._ml.sum())
        return f"PairConstraints(must_link={n_ml}, cannot_link={len(self) - n_ml}{n})"

    @property
    def pairs(self) -> np.ndarray:
        """(m, 2) int64, every answer in the order it was added (a copy)."""
        return self._pairs.copy()

    @property
    def is_must_link(self) -> np.ndarray:
        """(m,) bool, True for must-link, aligned with :attr:`pairs` (a copy)."""
        return self._ml.copy()

    @property
    def must_link(self) -> np.ndarray:
        return self._pairs[self._ml].copy()

    @property
    def cannot_link(self) -> np.ndarray:
        return self._pairs[~self._ml].copy()

    # ---- closure ---------------------------------------------------------------

    def _size(self, extra=0) -> int:
        top = int(self._pairs.max(initial=-1)) + 1
        return max(self.n or 0, top, extra)

    def _closure(self):
        """(indices mentioned, sorted; closure id of each; CL keys between closures), cached.

        Only the indices that answers mention take part, renumbered 0..u-1,
        so nothing here grows with the size of an index (2**40 costs what 3
        does); a closure id is < u, and a key ``lo * u + hi`` fits in int64.
        """
        if self._cache is None:
            idx, inv = np.unique(self._pairs, return_inverse=True)
            inv = inv.reshape(self._pairs.shape)
            u = len(idx)
            ml = inv[self._ml]
            g = sp.coo_array((np.ones(len(ml)), (ml[:, 0], ml[:, 1])), shape=(u, u))
            _, comp = connected_components(g, directed=False)
            comp = comp.astype(np.int64)
            cl = comp[inv[~self._ml]]
            # sorted unique keys: membership by binary search, O(log m) per pair
            cl_keys = np.unique(_keys(cl, u)) if len(cl) else np.empty(0, np.int64)
            self._cache = (idx.astype(np.int64), comp, cl_keys)
        return self._cache

    def _closure_of(self, arr) -> np.ndarray:
        """Closure id of each index in ``arr`` (any shape); unmentioned index v: -1 - v."""
        idx, comp, _ = self._closure()
        arr = np.asarray(arr, np.int64)
        if not len(idx):
            return -1 - arr
        at = np.minimum(np.searchsorted(idx, arr), len(idx) - 1)
        return np.where(idx[at] == arr, comp[at], -1 - arr)

    def closures(self, n=None) -> np.ndarray:
        """Must-link closure id of each index 0..n-1 (unconstrained: their own id).

        Ids are numbered by smallest member. Without ``n``: up to the largest
        index mentioned (or ``self.n``).
        """
        size = self._size(n or 0)
        comp = self._closure_of(np.arange(size, dtype=np.int64))
        comp = comp[: n if n is not None else size]
        _, first = np.unique(comp, return_index=True)
        order = np.empty(len(first), np.int64)
        order[np.argsort(first)] = np.arange(len(first))
        return order[np.unique(comp, return_inverse=True)[1]]

    def is_known(self, i, j=None):
        """Whether the answer for a pair follows from the stored ones.

        True when i and j are in one must-link closure, or a cannot-link joins
        their closures. Accepts two indices, or an (m, 2) array (returns (m,) bool).
        """
        idx, _, cl_keys = self._closure()
        u = len(idx)
        if j is not None and _is_index(i) and _is_index(j):  # one pair: no array round trip
            i, j = int(i), int(j)
            if i < 0 or j < 0:
                raise ValueError("PairConstraints.is_known: indices must be >= 0.")
            if i > _INT64_MAX or j > _INT64_MAX:
                raise ValueError("PairConstraints.is_known: indices must be < 2**63.")
            if i == j:
                return True
            ci, cj = (int(c) for c in self._closure_of([i, j]))
            if ci == cj:
                return True
            if ci < 0 or cj < 0 or not len(cl_keys):
                return False  # an index no answer mentions is known only with itself
            key = min(ci, cj) * u + max(ci, cj)
            at = int(np.searchsorted(cl_keys, key))
            return at < len(cl_keys) and int(cl_keys[at]) == key
        pairs = np.array([[i, j]]) if j is not None else i
        try:
            arr = np.asarray(pairs)
        except (ValueError, TypeError, OverflowError):
            arr = np.empty(0, object)
        if arr.dtype.kind not in "iu" or arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError(
                "PairConstraints.is_known: pairs must be an (m, 2) int array of indices "
                f"< 2**63; got {getattr(arr, 'shape', '?')} of {arr.dtype}."
            )
        if (arr < 0).any():
            raise ValueError("PairConstraints.is_known: indices must be >= 0.")
        if arr.dtype.kind == "u" and arr.size and arr.max() > _INT64_MAX:
            raise ValueError("PairConstraints.is_known: indices must be < 2**63.")
        arr = arr.astype(np.int64)
        # indices never mentioned are their own closure (-1 - v), distinct from all others
        ca = self._closure_of(arr)
        known = ca[:, 0] == ca[:, 1]
        if len(cl_keys):
            both = (ca >= 0).all(axis=1) & ~known
            if both.any():
                keys = _keys(ca[both], u)
                at = np.minimum(np.searchsorted(cl_keys, keys), len(cl_keys) - 1)
                known[np.flatnonzero(both)] = cl_keys[at] == keys
        return bool(known[0]) if j is not None else known

    # ---- consistency -------------------------------------------------------------

    def conflicts(self) -> list:
        """Each cannot-link inside a must-link closure, with the ML path joining its ends.

        Returns a list of dicts ``{"cannot_link": row, "must_link_path": [rows]}``
        where rows index :attr:`pairs` (oldest first).
        """
        cl_rows = np.flatnonzero(~self._ml)
        if not len(cl_rows):
            return []
        ends = self._closure_of(self._pairs[cl_rows])
        bad = cl_rows[ends[:, 0] == ends[:, 1]]
        out = []
        for row in bad.tolist():
            out.append({"cannot_link": row, "must_link_path": self._ml_path(*self._pairs[row])})
        return out

    def _ml_path(self, s, t) -> list:
        idx = self._closure()[0]
        ml_rows = np.flatnonzero(self._ml)
        ml = np.searchsorted(idx, self._pairs[ml_rows])  # renumbered as in _closure
        size = len(idx)
        ids = np.arange(1, len(ml_rows) + 1)
        g = sp.csr_array(
            (
                np.concatenate([ids, ids]),
                (np.concatenate([ml[:, 0], ml[:, 1]]), np.concatenate([ml[:, 1], ml[:, 0]])),
            ),
            shape=(size, size),
        )
        s, t = (int(v) for v in np.searchsorted(idx, [s, t]))
        _, pred = breadth_first_order(g, s, directed=True, return_predecessors=True)
        path, v = [], t
        while v != s:
            u = int(pred[v])
            path.append(int(ml_rows[int(g[u, v]) - 1]))
            v = u
        return path[::-1]

    def contradictions(self) -> list:
        """Answers that contradict the closure of the answers given before them.

        Walks the answers in order. A "different" answer (cannot-link) whose
        two images the earlier must-links already join, or a "same" answer
        (must-link) between two closures that an earlier cannot-link keeps
        apart, contradicts the earlier answers. Every answer, a contradicting
        one included, then joins the closure for the answers after it. The
        set of answers is consistent exactly when this list is empty (the
        first answer that makes it inconsistent is listed), but unlike
        :meth:`conflicts` it blames the later answer, which is what a person
        who just answered wants to hear.

        Returns
        -------
        list of dict
            One per contradicting answer, in order: ``{"answer": row,
            "implied_same": bool, "because": [rows]}``. ``implied_same`` is
            what the earlier answers imply (True: the same identity);
            ``because`` lists the earlier answers that imply it (a must-link
            path, or a cannot-link with the must-link paths that lead to its
            ends), oldest first. Rows index :attr:`pairs`.

        Examples
        --------
        >>> c = PairConstraints(must_link=[[0, 1], [1, 2]], cannot_link=[[0, 2]])
        >>> c.contradictions()
        [{'answer': 2, 'implied_same': True, 'because': [0, 1]}]
        """
        tracker = ContradictionTracker()
        out = []
        for (i, j), same in zip(self._pairs.tolist(), self._ml.tolist()):
            found = tracker.add(i, j, same)
            if found is not None:
                out.append(found)
        return out

    @property
    def is_consistent(self) -> bool:
        return not self.conflicts()

    def check(self) -> None:
        """Raises ValueError naming a contradiction, if any."""
        found = self.conflicts()
        if found:
            c = found[0]
            i, j = self._pairs[c["cannot_link"]]
            chain = " - ".join(
                f"({self._pairs[r, 0]}, {self._pairs[r, 1]})" for r in c["must_link_path"]
            )
            raise ValueError(
                f"PairConstraints: inconsistent answers ({len(found)} contradiction(s)); "
                f"cannot-link ({i}, {j}) (answer {c['cannot_link']}) joins two images that the "
                f"must-links {chain} (answers {c['must_link_path']}) put together."
            )

    # ---- combining and files -------------------------------------------------------

    def copy(self) -> PairConstraints:
        out = PairConstraints(n=self.n)
        out._append(self._pairs.copy(), self._ml.copy())
        return out

    def merge(self, other: PairConstraints) -> PairConstraints:
        """A new store: these answers, then those of ``other`` not already here."""
        if not isinstance(other, PairConstraints):
            raise TypeError(
                "PairConstraints.merge: 'other' must be PairConstraints; "
                f"got {type(other).__name__}."
            )
        n = None if self.n is None or other.n is None else max(self.n, other.n)
        out = PairConstraints(n=n) if n else PairConstraints()
        out._append(self._pairs.copy(), self._ml.copy())
        codes = _pair_codes(self._pairs, other._pairs)
        have = codes[: len(self._pairs)] * 2 + self._ml
        theirs = codes[len(self._pairs) :] * 2 + other._ml
        new = ~np.isin(theirs, have)
        _, first = np.unique(theirs, return_index=True)
        new &= np.isin(np.arange(len(theirs)), first)
        out._append(other._pairs[new].copy(), other._ml[new].copy())
        return out

    def save(self, path) -> Path:
        """Writes ``.npz`` (default) or ``.jsonl`` (one answer per line), versioned."""
        path = Path(path)
        meta = {"format": _MAGIC, "version": FORMAT_VERSION, "n": self.n}
        if path.suffix == ".jsonl":
            with open(path, "w") as f:
                f.write(json.dumps(meta) + "\n")
                for (i, j), same in zip(self._pairs.tolist(), self._ml.tolist()):
                    f.write(json.dumps({"i": i, "j": j, "same": same}) + "\n")
        else:
            with open(path, "wb") as f:  # keep the exact name (np.savez would add .npz)
                np.savez(f, meta=np.array(json.dumps(meta)), pairs=self._pairs, same=self._ml)
        return path

    @classmethod
    def load(cls, path) -> PairConstraints:
        """Reads a file written by :meth:`save`; a foreign or corrupt file raises ValueError."""
        path = Path(path)
        what = f"PairConstraints.load: {str(path)!r}"
        try:
            if path.suffix == ".jsonl":
                with open(path) as f:
                    lines = [ln for ln in f.read().splitlines() if ln.strip()]
                meta = json.loads(lines[0]) if lines else {}
                rows = [json.loads(ln) for ln in lines[1:]]
                pairs = np.array([[r["i"], r["j"]] for r in rows], np.int64).reshape(-1, 2)
                same = np.array([r["same"] for r in rows], bool)
            else:
                with np.load(path, allow_pickle=False) as z:
                    meta = json.loads(str(z["meta"]))
                    pairs, same = z["pairs"], z["same"]
        except FileNotFoundError:
            raise
        except OverflowError:
            raise ValueError(f"{what} holds an index >= 2**63.") from None
        except (OSError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{what} is not a readable constraint file ({exc}).") from None
        if not isinstance(meta, dict) or meta.get("format") != _MAGIC:
            raise ValueError(f"{what} is not an aas-core constraint file.")
        if meta.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"{what} has format version {meta.get('version')!r}; this aas-core reads "
                f"version {FORMAT_VERSION}."
            )
        if same.dtype != bool or pairs.ndim != 2 or len(pairs) != len(same):
            raise ValueError(f"{what} is corrupt (pairs and answers do not line up).")
        out = cls(n=meta.get("n"))
        out.add(pairs, same)
        return out

    @classmethod
    def from_store(cls, path) -> PairConstraints:
        """The answers in an annotation store (``aas annotate``'s SQLite file).

        The latest answer a person gave for each pair, skips and undone
        answers left out, in the order they were given; see
        :meth:`aas_core.annotate.AnnotationStore.constraints`. A missing,
        corrupt or foreign file raises ValueError.
        """
        n, pairs, same = told_answers(path)
        out = cls(n=n) if n >= 2 else cls()
        if len(pairs):
            out.add(pairs, same)
        return out


class ContradictionTracker:
    """:meth:`PairConstraints.contradictions`, one answer at a time.

    ``add(i, j, same)`` takes the next answer (its row is the number of
    answers added before it) and returns its contradiction with the answers
    before it (a dict as :meth:`PairConstraints.contradictions` lists them)
    or None. Each call costs about O(alpha(m)) for the closures, plus a
    breadth-first search over the must-links when it does contradict: no
    call grows with the number of answers given before it, so an annotation
    server can check every answer as it comes.

    Examples
    --------
    >>> t = ContradictionTracker()
    >>> t.add(0, 1, True), t.add(1, 2, True)
    (None, None)
    >>> t.add(0, 2, False)
    {'answer': 2, 'implied_same': True, 'because': [0, 1]}
    """

    def __init__(self):
        self._parent: dict = {}
        self._size: dict = {}  # root -> closure size (the smaller joins the larger)
        self._apart: dict = {}  # root -> {other root: row of an earlier cannot-link between them}
        self._ml_adj: dict = {}  # index -> [(neighbour, row)] over the must-links so far
        self._pairs: list = []  # (i, j) of each row

    def __len__(self) -> int:
        return len(self._pairs)

    def _find(self, v):
        parent = self._parent
        root = v
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(v, v) != root:  # path compression
            parent[v], v = root, parent[v]
        return root

    def _path(self, s, t):  # rows of a must-link path from s to t (same closure)
        if s == t:
            return []
        prev = {s: None}
        queue = [s]
        for v in queue:
            for w, row in self._ml_adj.get(v, ()):
                if w not in prev:
                    prev[w] = (v, row)
                    if w == t:
                        queue.clear()
                        break
                    queue.append(w)
        rows, v = [], t
        while prev[v] is not None:
            v, row = prev[v]
            rows.append(row)
        return rows

    def add(self, i, j, same):
        """Takes the next answer; returns its contradiction with the earlier ones, or None."""
        i, j, same = int(i), int(j), bool(same)
        row = len(self._pairs)
        self._pairs.append((i, j))
        apart, size = self._apart, self._size
        ri, rj = self._find(i), self._find(j)
        found = None
        if same:
            cl_row = apart.get(ri, {}).get(rj)
            if cl_row is not None:
                u, v = self._pairs[cl_row]
                if self._find(u) != ri:
                    u, v = v, u
                because = [cl_row, *self._path(i, u), *self._path(v, j)]
                found = {"answer": row, "implied_same": False, "because": sorted(because)}
            self._ml_adj.setdefault(i, []).append((j, row))
            self._ml_adj.setdefault(j, []).append((i, row))
            if ri != rj:
                if size.get(ri, 1) < size.get(rj, 1):
                    ri, rj = rj, ri
                self._parent[rj] = ri
                size[ri] = size.get(ri, 1) + size.pop(rj, 1)
                for other, cl in apart.pop(rj, {}).items():
                    back = apart[other]
                    del back[rj]
                    if other == ri:
                        continue  # the cannot-link now lies inside one closure
                    keep = min(cl, apart.setdefault(ri, {}).get(other, cl))
                    apart[ri][other] = back[ri] = keep
        elif ri == rj:
            found = {"answer": row, "implied_same": True, "because": sorted(self._path(i, j))}
        else:
            keep = min(row, apart.get(ri, {}).get(rj, row))
            apart.setdefault(ri, {})[rj] = keep
            apart.setdefault(rj, {})[ri] = keep
        return found


def _is_index(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


_INT64_MAX = np.iinfo(np.int64).max


def _keys(pairs: np.ndarray, base: int) -> np.ndarray:
    """One int64 per unordered pair of ids in [0, base): ``lo * base + hi``."""
    if not len(pairs):
        return np.empty(0, np.int64)
    lo = np.minimum(pairs[:, 0], pairs[:, 1]).astype(np.int64)
    hi = np.maximum(pairs[:, 0], pairs[:, 1]).astype(np.int64)
    return lo * int(base) + hi


def _pair_codes(*arrays) -> np.ndarray:
    """A dense code (0.. number of distinct pairs) per unordered pair of the arrays, in order.

    Equal unordered pairs get equal codes whatever their indices (any int64):
    no packing of two indices into one integer, so no collision or overflow.
    """
    pairs = np.concatenate([a.reshape(-1, 2) for a in arrays]) if arrays else np.empty((0, 2))
    if not len(pairs):
        return np.empty(0, np.int64)
    ordered = np.sort(pairs, axis=1)
    _, codes = np.unique(ordered, axis=0, return_inverse=True)
    return codes.reshape(-1).astype(np.int64)
