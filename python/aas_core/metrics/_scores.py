"""Query x gallery score matrices, produced block by block (shared by the metrics).

A score is "higher is better": cosine similarity, a precomputed similarity,
or the negation of a (squared Euclidean or precomputed) distance. Only whole
row blocks are ever materialised, so memory is O(block x n_gallery).
"""

from __future__ import annotations

import numbers

import numpy as np

from .._validation import as_features, check_int, check_option
from ..neighbors import normalize_rows

METRICS = ("cosine", "euclidean", "similarity", "distance")
PRECOMPUTED = ("similarity", "distance")

# Block rows are chosen so that one block holds about this many scores: the
# ranking step keeps ~20 bytes per score alive, so ~80 MB per block.
_BLOCK_ELEMENTS = 1 << 22


class ScoreSource:
    """Validated inputs of a query x gallery comparison; ``block(a, b)`` gives rows a:b.

    Each block is a fresh, writable array (float32, or float64 for a float64
    precomputed matrix) that the caller may modify; the caller's arrays are
    never written.
    """

    def __init__(self, query, gallery, *, metric, owner):
        check_option("metric", metric, METRICS, owner=owner)
        self.metric = metric
        self.owner = owner
        if metric in PRECOMPUTED:
            if gallery is not None:
                raise ValueError(
                    f"{owner}: with metric={metric!r} the first argument is the precomputed "
                    f"(n_query, n_gallery) {metric} matrix and 'gallery' must be None; got "
                    f"{type(gallery).__name__}."
                )
            self._matrix = _as_score_matrix(query, metric, owner)
            self.n_query, self.n_gallery = self._matrix.shape
            return
        if gallery is None:
            raise ValueError(
                f"{owner}: 'gallery' features are required with metric={metric!r} (pass "
                "metric='similarity' or 'distance' for a precomputed matrix)."
            )
        if metric == "cosine":
            q = normalize_rows(query, name="query", owner=owner)
            g = normalize_rows(gallery, name="gallery", owner=owner)
        else:
            q = as_features(query, name="query", owner=owner)
            g = as_features(gallery, name="gallery", owner=owner)
        if q.shape[1] != g.shape[1]:
            raise ValueError(
                f"{owner}: 'query' and 'gallery' must have the same number of feature "
                f"columns; got {q.shape[1]} and {g.shape[1]}."
            )
        self._q, self._g = q, g
        if metric == "euclidean":
            self._q_sq = np.einsum("ij,ij->i", q, q)
            self._g_sq = np.einsum("ij,ij->i", g, g)
        self.n_query, self.n_gallery = q.shape[0], g.shape[0]

    def block_rows(self, block_size) -> int:
        if block_size is None:
            return max(1, min(self.n_query, _BLOCK_ELEMENTS // max(1, self.n_gallery)))
        return check_int("block_size", block_size, low=1, owner=self.owner)

    def block(self, start: int, stop: int) -> np.ndarray:
        if self.metric == "cosine":
            return self._q[start:stop] @ self._g.T
        if self.metric == "euclidean":
            s = self._q[start:stop] @ self._g.T
            s *= 2
            s -= self._g_sq
            s -= self._q_sq[start:stop, None]
            return s  # minus the squared distance
        rows = self._matrix[start:stop]
        out = np.negative(rows) if self.metric == "distance" else np.array(rows, copy=True)
        if out.dtype == np.float16:
            out = out.astype(np.float32)
        if not np.isfinite(out).all():
            bad = start + int(np.argwhere(~np.isfinite(out))[0, 0])
            raise ValueError(
                f"{self.owner}: the precomputed {self.metric} matrix contains NaN or inf "
                f"(first in row {bad})."
            )
        return out


def _as_score_matrix(M, metric, owner) -> np.ndarray:
    if hasattr(M, "__cuda_array_interface__") or type(M).__module__.startswith("torch"):
        raise TypeError(
            f"{owner}: the {metric} matrix must be a numpy array on the host; got "
            f"{type(M).__name__}."
        )
    if hasattr(M, "toarray"):
        raise TypeError(
            f"{owner}: the {metric} matrix must be a dense numpy array; got a sparse "
            f"{type(M).__name__} (call .toarray() for small matrices)."
        )
    arr = np.asarray(M)
    if arr.dtype.kind != "f":
        raise TypeError(
            f"{owner}: the {metric} matrix must hold floating-point values; got dtype {arr.dtype}."
        )
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(
            f"{owner}: the {metric} matrix must be 2-D (n_query, n_gallery) with at least one "
            f"row and column; got shape {arr.shape}."
        )
    return arr


def as_ids(x, name, *, n, owner, allow_negative=True) -> np.ndarray:
    """1-D integer identity (or camera) labels of length n, as int64 (a copy if needed)."""
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{owner}: {name!r} must be 1-D; got shape {a.shape}.")
    if a.size == 0 and a.dtype.kind in "fiu":  # an empty list is float64
        a = a.astype(np.int64)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{owner}: {name!r} must hold integer labels; got dtype {a.dtype}.")
    if n is not None and len(a) != n:
        raise ValueError(f"{owner}: {name!r} must have length {n}; got {len(a)}.")
    a = a.astype(np.int64, copy=False)
    if not allow_negative and a.size and a.min() < 0:
        raise ValueError(
            f"{owner}: {name!r} must hold labels >= 0; got {int(a.min())} at index "
            f"{int(np.argmin(a))}."
        )
    return a


def check_ks(ks, owner) -> tuple[int, ...]:
    if isinstance(ks, numbers.Integral):
        ks = (ks,)
    try:
        ks = tuple(ks)
    except TypeError:
        raise TypeError(
            f"The 'ks' parameter of {owner} must be an int or a sequence of ints; got {ks!r}."
        ) from None
    if not ks:
        raise ValueError(f"The 'ks' parameter of {owner} must not be empty.")
    return tuple(sorted({check_int("ks", k, low=1, owner=owner) for k in ks}))
