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
