"""Slow, readable reference implementations (dense numpy) for parity tests."""

from __future__ import annotations

import numpy as np


def exact_rank(X: np.ndarray, k: int) -> np.ndarray:
    """Self first, then others by cosine similarity descending, ties to the smaller index."""
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = Xn @ Xn.T
    n = len(X)
    rank = np.empty((n, k), dtype=np.int64)
    for i in range(n):
        others = np.array([j for j in range(n) if j != i])
        order = np.lexsort((others, -S[i, others]))
        rank[i, 0] = i
        rank[i, 1:] = others[order][: k - 1]
    return rank


def _k_reciprocal(rank: np.ndarray, i: int, k: int) -> np.ndarray:
    forward = rank[i, : k + 1]
    backward = rank[forward, : k + 1]
    return forward[np.where(backward == i)[0]]


def spcl_jaccard(X: np.ndarray, rank: np.ndarray, k1: int = 30, k2: int = 6) -> np.ndarray:
    """SpCL's compute_jaccard_distance, literally, in float32 numpy.

    ``rank`` is the initial ranking with k1 columns (SpCL's faiss search of k1
    neighbours, self first). Returns the dense (n, n) distance matrix.
    """
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    X = X.astype(np.float32)
    rank = rank[:, :k1]
    n = len(X)
    nn_k1 = [_k_reciprocal(rank, i, k1) for i in range(n)]
    nn_k1_half = [_k_reciprocal(rank, i, int(np.around(k1 / 2))) for i in range(n)]

    V = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        r = nn_k1[i]
        expansion = r
        for candidate in r:
            c_r = nn_k1_half[candidate]
            if len(np.intersect1d(c_r, r)) > 2 / 3 * len(c_r):
                expansion = np.append(expansion, c_r)
        expansion = np.unique(expansion)
        dist = 2 - 2 * (X[i : i + 1] @ X[expansion].T)
        w = np.exp(-dist - (-dist).max())
        V[i, expansion] = (w / w.sum()).ravel()

    if k2 != 1:
        V_qe = np.zeros_like(V)
        for i in range(n):
            V_qe[i] = np.mean(V[rank[i, :k2]], axis=0)
        V = V_qe

    inv_index = [np.where(V[:, i] != 0)[0] for i in range(n)]
    jaccard = np.zeros((n, n), dtype=np.float32)
    for i in range(n):
        temp_min = np.zeros(n, dtype=np.float32)
        nonzero = np.where(V[i] != 0)[0]
        for k in nonzero:
            js = inv_index[k]
            temp_min[js] += np.minimum(V[i, k], V[js, k])
        jaccard[i] = 1 - temp_min / (2 - temp_min)
    jaccard[jaccard < 0] = 0.0
    return jaccard


# ---- AAS sampling: brute force, straight from the definitions ----


def singletons(labels) -> np.ndarray:
    """Every -1 becomes its own cluster (numbered after the largest label, in index order)."""
    x = np.asarray(labels, dtype=np.int64).copy()
    noise = np.flatnonzero(x < 0)
    x[noise] = x.max(initial=-1) + 1 + np.arange(len(noise))
    return x


def uncertainty_regions(labels_a, labels_b):
    """(region (n,), n_regions): edges between A- and B-clusters with 0 < IoU < 1 found
    by comparing member sets, components by breadth-first search, numbered by
    smallest member."""
    a, b = singletons(labels_a), singletons(labels_b)
    n = len(a)
    sets_a = {c: frozenset(np.flatnonzero(a == c).tolist()) for c in np.unique(a).tolist()}
    sets_b = {c: frozenset(np.flatnonzero(b == c).tolist()) for c in np.unique(b).tolist()}
    adj = {("a", c): set() for c in sets_a} | {("b", c): set() for c in sets_b}
    for i in range(n):
        sa, sb = sets_a[int(a[i])], sets_b[int(b[i])]
        if sa != sb:  # they meet (both hold i) and are not the same set: 0 < IoU < 1
            adj[("a", int(a[i]))].add(("b", int(b[i])))
            adj[("b", int(b[i]))].add(("a", int(a[i])))
    region = np.full(n, -1, np.int64)
    count = 0
    for i in range(n):
        start = ("a", int(a[i]))
        if region[i] >= 0 or not adj[start]:
            continue
        seen, todo = {start}, [start]
        while todo:
            for nb in adj[todo.pop()]:
                if nb not in seen:
                    seen.add(nb)
                    todo.append(nb)
        for side, c in seen:
            region[list(sets_a[c] if side == "a" else sets_b[c])] = count
        count += 1
    return region, count


def region_medoids(X, region, n_regions):
    """Member with the largest summed dot product with the other members (exact for
    integer-valued X), ties to the smaller index."""
    out = np.empty(n_regions, np.int64)
    for k in range(n_regions):
        m = np.flatnonzero(region == k)
        G = X[m].astype(np.float64) @ X[m].T.astype(np.float64)
        score = G.sum(axis=1) - np.diag(G)
        out[k] = m[int(np.argmax(score))]
    return out


def closest_inconsistent_pairs(X, labels_a, labels_b, region):
    """{(i, j): via}: EVERY pair of distinct ζ-clusters of a region (not only those
    sharing a cluster of the other clustering), full block, first maximum in
    row-major order with the smaller-labelled cluster as rows; kept when the two
    points share the other clustering's cluster; via 0 (A) wins over 1 (B).
    Exact for integer-valued X."""
    a, b = np.asarray(labels_a), np.asarray(labels_b)
    found = {}
    for via, (mine, other) in enumerate(((a, b), (b, a))):
        for k in range(int(region.max(initial=-1)) + 1):
            inside = region == k
            clusters = np.unique(mine[inside])
            for t, c1 in enumerate(clusters):
                m1 = np.flatnonzero(mine == c1)
                for c2 in clusters[t + 1 :]:
                    m2 = np.flatnonzero(mine == c2)
                    block = X[m1].astype(np.float64) @ X[m2].T.astype(np.float64)
                    flat = int(np.argmax(block))
                    u, v = int(m1[flat // len(m2)]), int(m2[flat % len(m2)])
                    if other[u] == other[v]:
                        found.setdefault((min(u, v), max(u, v)), via)
    return found


def overseg_pairs(X, medoids, D_dense, D_stored, k_max, s_min):
    """{(i, j): sim}: each medoid's k_max nearest medoids by float32 cosine (ties to
    the earlier medoid), kept when sim = 1 - D (0 where not stored) >= s_min, in
    float32 like the distances."""
    medoids = np.asarray(medoids)
    r = len(medoids)
    S = X[medoids] @ X[medoids].T
    k = min(k_max, r - 1)
    out = {}
    for p in range(r):
        others = np.array([q for q in range(r) if q != p])
        order = others[np.lexsort((others, -S[p, others]))][:k]
        for q in order.tolist():
            i, j = sorted((int(medoids[p]), int(medoids[q])))
            sim = np.float32(1.0) - D_dense[i, j] if D_stored[i, j] else np.float32(0.0)
            if sim >= np.float32(s_min):
                out[(i, j)] = sim
    return out
