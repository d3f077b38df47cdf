"""The over-segmentation pool U_os over cells (our refinement of paper §3.1 B).

A *cell* is a maximal group of images that both clusterings keep together:
the images with the same A-cluster and the same B-cluster (a DBSCAN outlier
is a singleton A-cluster). An agreed cluster is one cell; a region of
uncertainty is a union of cells. Both clusterings say a cell's images belong
together, yet they may still be a fragment of an identity split elsewhere —
agreement hides over-segmentation (paper §1). U_os asks whether two nearby
cells are one identity:

- **linked** pairs: two cells joined by a stored Jaccard distance with
  similarity 1 - d ≥ s_min; the pair asked is the closest such pair of images
  (the k-reciprocal evidence that they may be one individual).
- **nearest** pairs: every cell with its ``k_max`` nearest cells, by the
  cosine of their mean directions, among the cells the kNN graph connects it
  to (a member of one is among the k nearest neighbours of a member of the
  other) and whose answer is not yet known; the pair asked is the two cells'
  medoids (the member closest to the cell's mean direction). Counting only
  unknown partners means a cell whose nearest partners were ruled out moves
  on to the next ones in later cycles.

Why not the paper's literal U_os (one medoid per region of uncertainty, its
k_max nearest region medoids, kept if their Jaccard similarity reaches s_min):
on make_reid_blobs it holds 13 pairs at n = 4000 (74 at n = 10000) in the
first cycle and at most one per cycle later; of the same-identity pairs
still missed after five cycles, 68% (4000) and 83% (10000) lie in
identities that A and B split the same way (no region covers them); and an
outlier inside a region is represented only by the region's medoid. See
``AmbiguityAwareSampler(overseg="regions")`` for that reading, and docs/active-learning.md
for the measured comparison.
"""

from __future__ import annotations

import numpy as np

from .. import _core

__all__ = ["cell_medoids", "cells", "linked_cell_pairs", "nearest_cell_pairs"]


def cells(labels_a, labels_b):
    """Cell of every image: same A-cluster and same B-cluster.

    ``labels_a``, ``labels_b``: (n,) int64 without -1 (outliers already made
    singletons, as :class:`Regions` holds them). Returns (cell (n,) int64
    numbered 0.. by smallest member, number of cells).

    >>> cells([0, 0, 1, 1, 2], [0, 0, 0, 1, 1])[0].tolist()
    [0, 0, 1, 2, 3]
    """
    a = np.asarray(labels_a, np.int64)
    b = np.asarray(labels_b, np.int64)
    if len(a) == 0:
        return np.empty(0, np.int64), 0
    _, b = np.unique(b, return_inverse=True)
    key = a * (int(b.max()) + 1) + b.ravel()
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[inverse.ravel()], len(first)


def cell_medoids(X, cell, n_cells, n_threads=1):
    """Medoid and unit mean direction of every cell.

    The medoid is the member with the largest summed dot product with the
    other members (for unit rows: the smallest summed cosine distance to
    them), ties to the smaller index: the region-medoid kernel applied to
    cells. Sums are accumulated in float64 in row order, so results do not
    depend on ``n_threads``. Returns (medoids (n_cells,) int64, directions
    (n_cells, d) float32).
    """
    cell = np.ascontiguousarray(cell, np.int64)
    medoids = _core.region_medoids(X, cell, int(n_cells), n_threads)
    dirs, _ = _core.cluster_directions(X, np.ones(len(X)), cell, int(n_cells), n_threads)
    return medoids, dirs


def linked_cell_pairs(cell, D, s_min):
    """For every two cells joined by a stored distance d ≤ 1 - s_min: the closest pair.

    ``D``: (n, n) CSR Jaccard distances (absent = 1): anything with
    ``indptr``, ``indices`` and ``data``. Returns (pairs (m, 2) int64 with
    i < j, similarity 1 - d (m,) float64); ties go to the smaller (i, j).
    """
    n = len(D.indptr) - 1
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(D.indptr))
    cols = D.indices.astype(np.int64)
    keep = (rows < cols) & (D.data <= 1.0 - s_min)
    rows, cols, dist = rows[keep], cols[keep], D.data[keep].astype(np.float64)
    cu, cv = cell[rows], cell[cols]
    keep = cu != cv
    rows, cols, dist, cu, cv = rows[keep], cols[keep], dist[keep], cu[keep], cv[keep]
    lo, hi = np.minimum(cu, cv), np.maximum(cu, cv)
    order = np.lexsort((cols, rows, dist, hi, lo))
    lo, hi = lo[order], hi[order]
    first = np.ones(len(order), bool)
    first[1:] = (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])
    sel = order[first]
    return np.stack([rows[sel], cols[sel]], axis=1), 1.0 - dist[sel]


def nearest_cell_pairs(cell, medoids, dirs, neighbours, constraints, k_max, n_threads=1):
    """Every cell with its k_max nearest kNN-adjacent cells whose medoid pair is unknown.

    ``neighbours``: (n, k) int64 cosine neighbours of every image (self
    excluded). Nearness is the cosine of the cells' mean directions; ties go to
    the smaller cell. A pair is kept when it is among the k_max nearest of
    either cell. Returns (medoid pairs (m, 2) int64 with i < j, cosine (m,)
    float64 clipped at 0).
    """
    n_cells = len(medoids)
    k = neighbours.shape[1]
    if n_cells < 2 or k == 0:
        return np.empty((0, 2), np.int64), np.empty(0)
    u = np.repeat(cell, k)
    v = cell[neighbours.ravel()]
    apart = u != v
    key = np.sort(np.minimum(u[apart], v[apart]) * n_cells + np.maximum(u[apart], v[apart]))
    key = key[np.r_[True, key[1:] != key[:-1]]] if len(key) else key
    cp = np.stack([key // n_cells, key % n_cells], axis=1)
    mp = np.stack([medoids[cp[:, 0]], medoids[cp[:, 1]]], axis=1)
    if len(mp):
        unknown = ~constraints.is_known(mp)
        cp, mp = cp[unknown], mp[unknown]
    if not len(cp):
        return np.empty((0, 2), np.int64), np.empty(0)
    cos = _core.pair_dots(dirs, dirs, np.ascontiguousarray(cp), n_threads)
    # each pair seen from both of its cells, ranked inside each cell
    owner = np.concatenate([cp[:, 0], cp[:, 1]])
    other = np.concatenate([cp[:, 1], cp[:, 0]])
    top = _core.top_k_per_group(owner, np.concatenate([cos, cos]), other, n_cells, k_max, n_threads)
    keep = (top[: len(cp)] | top[len(cp) :]).astype(bool)
    cos = cos.astype(np.float64)
    return np.sort(mp[keep], axis=1), np.maximum(cos[keep], 0.0)
