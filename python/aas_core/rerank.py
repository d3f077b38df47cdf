"""k-reciprocal Jaccard distance (SpCL's re-ranking), sparse."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from . import _core
from ._validation import (
    _check_finite_distances,
    _check_graph_ndim_and_dtype,
    _check_square,
    as_distance_graph,
    check_float,
    check_int,
    effective_threads,
)
from .gpu import check_device, check_device_features, cuda_module, device_array
from .neighbors import KNNGraph, check_knn_graph, knn_graph, normalize_rows

__all__ = ["k_reciprocal_jaccard", "to_dense_distance"]


def k_reciprocal_jaccard(
    X_or_graph, *, k1=30, k2=6, max_distance=None, dense=False, n_threads=None, device="cpu"
):
    """SpCL's k-reciprocal Jaccard distance, computed on sparse structures.

    Follows SpCL's ``compute_jaccard_distance`` step for step: k-reciprocal
    sets from a ranking of k1 columns (self included), expansion by the
    round(k1/2)-reciprocal sets of the members (round half to even) tested
    against the unexpanded set, V = softmax of -(2 - 2·cos) over the expanded
    set, query expansion by the mean of the first k2 rows of the ranking
    (self included), and d = 1 - m/(2 - m) with m = Σ min(V_i, V_j), clipped
    at 0. Never allocates an n×n array (unless ``dense=True``).

    Parameters
    ----------
    X_or_graph : (n, d) float array or KNNGraph
        Embeddings (a kNN graph with k = k1 and self is computed), or a graph
        from :func:`knn_graph` built with ``include_self=True`` and at least k1
        columns. The graph must carry its ``features``: the expansion needs a
        few similarities that are not in the graph.
    k1, k2 : int
        SpCL's parameters; 2 <= k1 < n and 1 <= k2 <= k1.
    max_distance : float in [0, 1] or None
        Drop entries above this distance (None: keep every entry below 1).
    dense : bool
        Return a dense (n, n) float32 ndarray instead (small n, parity tests).
    n_threads : int or None
        Threads (None: OMP_NUM_THREADS or all CPUs).
    device : {"cpu", "cuda"}
        "cuda": the kNN graph (when X is given) and every step of the Jaccard
        computation run on the current CUDA device, with the same per-row arithmetic
        as the CPU; the result is the CPU's up to the last bits of the softmax's exp
        (CUDA's double exp against the C library's). Needs an aas-core built with its
        CUDA kernels (see :mod:`aas_core.gpu`).

    Returns
    -------
    scipy.sparse.csr_array of shape (n, n), float32
        Symmetric, rows sorted, diagonal stored as explicit zeros. An ABSENT
        entry means distance 1 (not 0!): use :func:`to_dense_distance`, not
        ``toarray()``, to densify.

    Examples
    --------
    >>> import aas_core as aas
    >>> X, _ = aas.datasets.make_reid_blobs(200, d=32, seed=0)
    >>> D = aas.k_reciprocal_jaccard(X, k1=10, k2=3)
    >>> D.shape, bool((D - D.T).count_nonzero() == 0)
    ((200, 200), True)
    """
    owner = "k_reciprocal_jaccard"
    threads = effective_threads(n_threads, owner=owner)
    check_device(device, owner)
    gpu = cuda_module(owner) if device == "cuda" else None
    if max_distance is None:
        max_d = 1.0
    else:
        max_d = check_float("max_distance", max_distance, low=0.0, high=1.0, owner=owner)
    if isinstance(X_or_graph, KNNGraph):
        graph = check_knn_graph(X_or_graph, name="X_or_graph", owner=owner)
        n = graph.n
        _check_graph(graph, owner)
        k1 = check_int("k1", k1, low=2, high=min(graph.k, n - 1), owner=owner)
    else:
        arr = device_array(X_or_graph, owner=owner) if gpu is not None else None
        if arr is not None:  # CUDA memory: the kNN reads it in place
            n, _ = check_device_features(arr, "X_or_graph", owner=owner, min_rows=3)
            X = X_or_graph
        else:
            X = normalize_rows(X_or_graph, owner=owner, min_rows=3, device=device)
            n = X.shape[0]
        k1 = check_int("k1", k1, low=2, high=n - 1, owner=owner)
        graph = knn_graph(X, k1, include_self=True, n_threads=threads, device=device)
    k2 = check_int("k2", k2, low=1, high=k1, owner=owner)
    features = graph.features
    if gpu is not None:
        indptr, indices, data = gpu.k_reciprocal_jaccard(
            graph.indices, graph.sims, features, k1, k2, max_d
        )
    else:
        indptr, indices, data = _core.k_reciprocal_jaccard(
            graph.indices, graph.sims, features, k1, k2, max_d, threads
        )
    D = sp.csr_array((data, indices, indptr), shape=(n, n))
    if dense:
        return to_dense_distance(D)
    return D


def to_dense_distance(D) -> np.ndarray:
    """Dense float32 copy of a distance graph where ABSENT means 1.

    Parameters
    ----------
    D : scipy.sparse array or matrix, or ndarray, shape (n, n)
        Distances, as :func:`k_reciprocal_jaccard` returns them: only stored
        entries are distances (explicit zeros included) and an absent one is 1.
        A dense array stores every entry and is returned as a float32 copy.
        Values must be floating point, finite and >= 0. Two stored entries for
        one (i, j) are an error (a CSR with a repeated column in a row); COO
        input is converted with ``tocsr()``, which adds up repeated entries.

    Returns
    -------
    (n, n) float32 ndarray, a new array (``D`` is never written).

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> D = sp.csr_array((np.float32([0, 0.25]), ([0, 0], [0, 1])), shape=(2, 2))
    >>> to_dense_distance(D)
    array([[0.  , 0.25],
           [1.  , 1.  ]], dtype=float32)
    """
    owner = "to_dense_distance"
    if isinstance(D, np.ndarray):  # checked as a graph would be, without n*n indices
        _check_graph_ndim_and_dtype(D, "D", owner)
        out = np.array(D, dtype=np.float32)  # a copy, never the caller's array
        _check_finite_distances(out.ravel(), "D", owner)
        _check_square(D.shape, "D", owner)
        if out.min() < 0:
            raise ValueError(
                f"{owner}: 'D' must hold distances >= 0; got a minimum of {float(out.min())!r}."
            )
        return out
    g = as_distance_graph(D, name="D", owner=owner)
    out = np.ones((g.n, g.n), dtype=np.float32)
    rows = np.repeat(np.arange(g.n), np.diff(g.indptr))
    out[rows, g.indices] = g.data
    return out


def _check_graph(graph: KNNGraph, owner: str) -> None:
    idx, sims = graph.indices, graph.sims
    if not (isinstance(idx, np.ndarray) and idx.dtype == np.int64 and idx.ndim == 2):
        raise TypeError(
            f"{owner}: graph.indices must be a 2-D int64 array; "
            f"got {getattr(idx, 'dtype', type(idx))}."
        )
    if not (isinstance(sims, np.ndarray) and sims.dtype == np.float32 and sims.shape == idx.shape):
        raise TypeError(f"{owner}: graph.sims must be float32 with the shape of graph.indices.")
    if not (idx.flags.c_contiguous and sims.flags.c_contiguous):
        raise ValueError(f"{owner}: graph arrays must be C-contiguous.")
    n = idx.shape[0]
    if idx.min() < 0 or idx.max() >= n:
        raise ValueError(f"{owner}: graph.indices must lie in [0, {n - 1}].")
    if not graph.includes_self:
        raise ValueError(
            f"{owner}: the graph must hold each row itself in column 0; "
            "build it with knn_graph(X, k1, include_self=True)."
        )
    f = graph.features
    if f is not None and not (
        isinstance(f, np.ndarray)
        and f.dtype == np.float32
        and f.ndim == 2
        and f.shape[0] == n
        and f.flags.c_contiguous
    ):
        raise TypeError(f"{owner}: graph.features must be a C-contiguous float32 (n, d) array.")
