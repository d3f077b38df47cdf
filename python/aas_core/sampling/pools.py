"""Candidate pair pools of AAS (paper §3.1 B–C, DESIGN.md §3.7).

U_us (under-segmentation, inside regions): for each clustering ζ in {A, B}
and each pair of ζ-clusters inside a region, the closest pair of images
(cosine, Eq. 2) is a candidate; it is kept when it is inconsistent, i.e. the
two images share a cluster of the other clustering (Eqs. 1, 3). Only cluster
pairs that share a cluster of the other clustering can give an inconsistent
closest pair, so only those are searched: exact, and giant regions stay cheap.

U_os (over-segmentation, across regions): the medoid of every region; each
medoid is paired with its k_max nearest medoids (cosine) and a pair is kept
when its similarity 1 - d_Jaccard reaches s_min.

The dot products are BLAS matrix products (numpy); everything else is O(n)
bookkeeping.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .regions import Regions

__all__ = ["closest_inconsistent_pairs", "overseg_pairs", "region_medoids"]


def region_medoids(X: np.ndarray, regions: Regions) -> np.ndarray:
    """Medoid of every region: the member with the largest dot product with the region's sum.

    With unit rows this minimises the summed cosine distance to the other
    members, exactly, in O(|S_k|·d). Ties go to the smaller index.
    Returns (n_regions,) int64.
    """
    order = np.argsort(regions.region, kind="stable")
    order = order[regions.region[order] >= 0]
    bounds = np.searchsorted(regions.region[order], np.arange(regions.n_regions + 1))
    medoids = np.empty(regions.n_regions, np.int64)
    for k in range(regions.n_regions):
        members = order[bounds[k] : bounds[k + 1]]
        scores = X[members] @ X[members].sum(axis=0, dtype=np.float64).astype(np.float32)
        medoids[k] = members[int(np.argmax(scores))]  # members ascending: ties -> smaller
    return medoids


def closest_inconsistent_pairs(X: np.ndarray, regions: Regions):
    """U_us: inconsistent closest pairs between clusters inside each region.

    Returns
    -------
    pairs : (m, 2) int64, i < j, sorted
    region : (m,) int64
    via : (m,) int8
        0 when the pair is the closest pair of two A-clusters, 1 of two
        B-clusters (a pair found both ways is listed once, with 0).
    """
    found = {}
    inside = regions.region >= 0
    for zeta, (mine, other) in enumerate(
        ((regions.labels_a, regions.labels_b), (regions.labels_b, regions.labels_a))
    ):
        for i, j in _closest_pairs_sharing_other(X, mine, other, inside):
            key = (min(i, j), max(i, j))
            found.setdefault(key, zeta)
    if not found:
        return np.empty((0, 2), np.int64), np.empty(0, np.int64), np.empty(0, np.int8)
    keys = sorted(found)
    pairs = np.array(keys, np.int64)
    return pairs, regions.region[pairs[:, 0]], np.array([found[k] for k in keys], np.int8)


def _closest_pairs_sharing_other(X, mine, other, inside):
    """Closest pair of every pair of `mine`-clusters that share an `other`-cluster,
    kept when its two points share the `other`-cluster (inconsistent)."""
    idx = np.flatnonzero(inside)
    if not len(idx):
        return []
    # clusters of `mine` that meet each `other` cluster (inside regions only)
    cells = np.unique(np.stack([other[idx], mine[idx]], axis=1), axis=0)
    partners: dict[int, set] = {}
    start = 0
    while start < len(cells):
        stop = start
        while stop < len(cells) and cells[stop, 0] == cells[start, 0]:
            stop += 1
        group = cells[start:stop, 1].tolist()
        for a in group:
            partners.setdefault(a, set()).update(g for g in group if g > a)
        start = stop
    members = {}
    order = idx[np.argsort(mine[idx], kind="stable")]
    labs = mine[order]
    cuts = np.flatnonzero(np.diff(labs)) + 1
    for chunk in np.split(order, cuts):
        members[int(mine[chunk[0]])] = chunk  # ascending indices
    out = []
    for a, bs in partners.items():
        if not bs:
            continue
        bs = sorted(bs)
        ma = members[a]
        cols = np.concatenate([members[b] for b in bs])
        sims = X[ma] @ X[cols].T
        offset = 0
        for b in bs:
            mb = members[b]
            block = sims[:, offset : offset + len(mb)]
            offset += len(mb)
            flat = int(np.argmax(block))  # row-major: ties -> smallest (u, v)
            u, v = int(ma[flat // len(mb)]), int(mb[flat % len(mb)])
            if other[u] == other[v]:
                out.append((u, v))
    return out


def overseg_pairs(X, medoids, D, *, k_max=5, s_min=0.3):
    """U_os: each medoid with its k_max nearest medoids (cosine), kept if 1 - D >= s_min.

    ``D`` is the sparse Jaccard distance (absent = 1, i.e. similarity 0).
    Returns (pairs (m, 2) int64 with i < j, sorted; sim (m,) float64).
    """
    medoids = np.asarray(medoids, np.int64)
    r = len(medoids)
    if r < 2:
        return np.empty((0, 2), np.int64), np.empty(0)
    S = X[medoids] @ X[medoids].T
    np.fill_diagonal(S, -np.inf)
    k = min(k_max, r - 1)
    # k nearest by similarity descending, ties to the smaller medoid position
    nn = np.argsort(-S, axis=1, kind="stable")[:, :k]
    a = np.repeat(medoids, k)
    b = medoids[nn.ravel()]
    pairs = np.unique(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1), axis=0)
    D = sp.csr_array(D)
    dist = np.asarray(D[pairs[:, 0], pairs[:, 1]]).ravel()
    stored = _stored(D, pairs)
    sim = np.where(stored, 1.0 - dist, 0.0)
    keep = sim >= s_min
    return pairs[keep], sim[keep]


def _stored(D, pairs):
    """Whether D stores an entry at each pair (a stored 0 is distance 0, not absent)."""
    out = np.zeros(len(pairs), bool)
    for t, (i, j) in enumerate(pairs.tolist()):
        row = D.indices[D.indptr[i] : D.indptr[i + 1]]
        out[t] = bool(np.any(row == j))
    return out
