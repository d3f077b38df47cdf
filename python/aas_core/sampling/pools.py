"""Candidate pair pools of AAS (paper §3.1 B–C).

U_us (under-segmentation, inside regions): for each clustering ζ in {A, B}
and each pair of ζ-clusters inside a region, the closest pair of images
(cosine, Eq. 2) is a candidate; it is kept when it is inconsistent, i.e. the
two images share a cluster of the other clustering (Eqs. 1, 3). Only cluster
pairs that share a cluster of the other clustering can give an inconsistent
closest pair, so only those are searched: exact, and giant regions stay cheap.

U_os (over-segmentation, across regions): the medoid of every region; each
medoid is paired with its k_max nearest medoids (cosine) and a pair is kept
when its similarity 1 - d_Jaccard reaches s_min.

The closest-pair search, the medoids and the sparse look-ups are C++ kernels
(OpenMP; results do not depend on the thread count); the medoid neighbours
are BLAS tiles with the C++ top-k of :func:`aas_core.knn_graph`.
"""

from __future__ import annotations

import numpy as np

from .. import _core
from .._validation import (
    DistanceGraph,
    as_distance_graph,
    as_features,
    check_float,
    check_int,
    effective_threads,
)
from ..gpu import check_device, cuda_module
from ..neighbors import _knn_blas
from .regions import Regions

__all__ = ["closest_inconsistent_pairs", "overseg_pairs", "region_medoids"]

_BLOCK = 2048  # rows per GEMM tile of the medoid neighbour search (16 MiB)
# Work (values) below which a merge or look-up runs on one thread: waking a
# team costs more, and right after a GEMM the BLAS threads still spin on the
# cores (results do not depend on the thread count).
_PARALLEL_MIN = 1 << 22


def region_medoids(X: np.ndarray, regions: Regions, *, n_threads=None) -> np.ndarray:
    """Medoid of every region: the member closest to all the others.

    The member i with the largest summed dot product with the other members,
    <x_i, s - x_i> with s the region's sum. With unit rows this minimises the
    summed cosine distance to the other members, exactly, in O(|S_k|·d); it
    orders members as <x_i, s> does, but without the rounding of |x_i|² = 1,
    so equally central members (the two points of a 2-point region) tie
    exactly. The sum and the scores are accumulated in float64 (the result
    does not depend on ``n_threads``); ties go to the smaller index. C++,
    parallel over regions (a large region is shared by the threads).
    Returns (n_regions,) int64.

    Parameters
    ----------
    X : (n, d) float array with unit rows
    regions : Regions from :func:`uncertainty_regions` for the same n points
    n_threads : int or None
        Threads (None: OMP_NUM_THREADS or all CPUs).
    """
    owner = "region_medoids"
    X, region = _check_inputs(X, regions, owner)
    return _region_medoids(X, region, regions.n_regions, effective_threads(n_threads, owner=owner))


def _region_medoids(X, region, n_regions, threads) -> np.ndarray:
    return _core.region_medoids(X, region, int(n_regions), threads)


def closest_inconsistent_pairs(X: np.ndarray, regions: Regions, *, n_threads=None, device="cpu"):
    """U_us: inconsistent closest pairs between clusters inside each region.

    For ζ in {A, B}, every pair of distinct ζ-clusters inside a region that
    share a cluster of the other clustering is searched for its exact closest
    pair (largest dot product; ties to the smallest (u, v) with u in the
    cluster of smaller label, row-major over ascending members), which is
    kept when its two points share the other clustering's cluster. C++,
    blocked dot products, parallel over cluster pairs (a giant pair is split
    over threads); cost Σ |c1|·|c2|·d over the searched pairs.

    Parameters
    ----------
    X : (n, d) float array with unit rows
    regions : Regions from :func:`uncertainty_regions` for the same n points
    n_threads : int or None
        Threads (None: OMP_NUM_THREADS or all CPUs). Results do not depend on it.
    device : {"cpu", "cuda"}
        "cuda": the search runs on the GPU (see :mod:`aas_core.gpu`) and returns
        exactly the CPU's pairs: each dot product is rounded as the CPU rounds it.

    Returns
    -------
    pairs : (m, 2) int64, i < j, sorted
    region : (m,) int64
    via : (m,) int8
        0 when the pair is the closest pair of two A-clusters, 1 of two
        B-clusters (a pair found both ways is listed once, with 0).
    """
    owner = "closest_inconsistent_pairs"
    threads = effective_threads(n_threads, owner=owner)
    check_device(device, owner)
    X, region = _check_inputs(X, regions, owner)
    return _closest_inconsistent_pairs(X, regions, region, threads, device=device, owner=owner)


def _closest_inconsistent_pairs(X, regions, region, threads, *, device="cpu", owner=""):
    a = np.ascontiguousarray(regions.labels_a, np.int64)
    b = np.ascontiguousarray(regions.labels_b, np.int64)
    if device == "cuda":
        # fused: the rounding of the CPU search on this machine, so the pairs are its pairs
        mod = cuda_module(owner or "closest_inconsistent_pairs")
        pairs, via = mod.closest_inconsistent_pairs(X, a, b, region, _core._closest_pairs_fused())
    else:
        pairs, via = _core.closest_inconsistent_pairs(X, a, b, region, threads)
    return pairs, region[pairs[:, 0]], via


def overseg_pairs(X, medoids, D, *, k_max=5, s_min=0.3, n_threads=None):
    """U_os: each medoid with its k_max nearest medoids (cosine), kept if 1 - D >= s_min.

    ``D`` is the sparse Jaccard distance (absent = 1, i.e. similarity 0; a
    dense array stores every entry). Neighbours are ranked by similarity
    descending, ties to the earlier medoid in ``medoids``.

    With ``s_min > 0`` a kept pair must be stored in D, so only the medoids
    that have such a partner are searched: their exact k_max nearest medoids
    come from (rows × all medoids) BLAS tiles and a C++ top-k, a fraction of
    the all-pairs product. With ``s_min = 0`` every medoid is searched.

    Returns (pairs (m, 2) int64 with i < j, sorted; sim (m,) float32).
    """
    owner = "overseg_pairs"
    X = as_features(X, name="X", owner=owner)
    k_max = check_int("k_max", k_max, low=1, owner=owner)
    s_min = check_float("s_min", s_min, low=0.0, high=1.0, owner=owner)
    threads = effective_threads(n_threads, owner=owner)
    medoids = _check_medoids(medoids, X.shape[0], owner)
    graph = as_distance_graph(D, name="D", owner=owner)
    if graph.n != X.shape[0]:
        raise ValueError(
            f"{owner}: 'D' must be ({X.shape[0]}, {X.shape[0]}) like the rows of 'X'; "
            f"got ({graph.n}, {graph.n})."
        )
    return _overseg_pairs(X, medoids, graph, k_max, s_min, threads)


def _overseg_pairs(X, medoids, graph: DistanceGraph, k_max, s_min, threads):
    r = len(medoids)
    if r < 2:
        return np.empty((0, 2), np.int64), np.empty(0, np.float32)
    k = min(k_max, r - 1)
    if s_min > 0:
        # A pair absent from D has similarity 0 < s_min: only medoids with a
        # stored partner close enough can end up in a kept pair.
        stored = _core.stored_pairs_within(
            graph.indptr, graph.indices, graph.data, medoids, float(s_min)
        )
        if not len(stored):
            return np.empty((0, 2), np.int64), np.empty(0, np.float32)
        position = np.full(X.shape[0], -1, np.int64)
        position[medoids] = np.arange(r)
        rows = np.unique(position[stored.ravel()])
    else:
        rows = np.arange(r)
    Xm = X[medoids]
    if len(rows) == r:
        nn = _knn_blas(Xm, k, False, threads)[0]
    else:
        nn = _knn_query(Xm, rows, k, threads)
    a = np.repeat(medoids[rows], k)
    b = medoids[nn.ravel()]
    pairs = np.unique(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1), axis=0)
    lookup_threads = threads if len(pairs) * 64 >= _PARALLEL_MIN else 1
    found, dist = _core.csr_lookup(graph.indptr, graph.indices, graph.data, pairs, lookup_threads)
    # float32 like the distances, compared with s_min in float32 (numpy's rule)
    sim = np.where(found, np.float32(1.0) - dist, np.float32(0.0))
    keep = sim >= np.float32(s_min)
    return pairs[keep], sim[keep]


def _knn_query(Xm, rows, k, threads, block=None):
    """k nearest rows of Xm for the rows ``rows`` of Xm (self excluded): (len(rows), k)."""
    block = block or _BLOCK
    m = len(rows)
    heap_sims = np.empty((m, k), dtype=np.float32)
    heap_idx = np.empty((m, k), dtype=np.int64)
    heap_size = np.zeros(m, dtype=np.int64)
    rows = np.ascontiguousarray(rows, np.int64)
    Q = Xm[rows]
    for i0 in range(0, m, block):
        q = Q[i0 : i0 + block]
        for j0 in range(0, len(Xm), block):
            tile = q @ Xm[j0 : j0 + block].T
            t = threads if tile.size >= _PARALLEL_MIN else 1
            _core.knn_merge_rows(tile, i0, j0, rows, heap_sims, heap_idx, heap_size, t)
    indices = np.empty((m, k), dtype=np.int64)
    sims = np.empty((m, k), dtype=np.float32)
    t = threads if m * k * 64 >= _PARALLEL_MIN else 1
    _core.knn_finalize(heap_sims, heap_idx, heap_size, False, indices, sims, t)
    return indices


def _check_inputs(X, regions, owner):
    if not isinstance(regions, Regions):
        raise TypeError(
            f"{owner}: 'regions' must be a Regions from uncertainty_regions; "
            f"got {type(regions).__name__}."
        )
    X = as_features(X, name="X", owner=owner)
    region = np.ascontiguousarray(regions.region, np.int64)
    if region.shape != (X.shape[0],):
        raise ValueError(
            f"{owner}: 'X' must have one row per point of 'regions' ({len(region)}); "
            f"got {X.shape[0]} rows."
        )
    return X, region


def _check_medoids(medoids, n, owner) -> np.ndarray:
    m = np.asarray(medoids)
    if m.ndim != 1 or (m.size and m.dtype.kind not in "iu"):
        raise ValueError(
            f"{owner}: 'medoids' must be a 1-D integer array; got dtype {m.dtype}, shape {m.shape}."
        )
    m = np.ascontiguousarray(m, np.int64)
    if m.size and (m.min() < 0 or m.max() >= n):
        raise ValueError(f"{owner}: 'medoids' must be row indices in [0, {n - 1}].")
    if len(np.unique(m)) != len(m):
        raise ValueError(f"{owner}: 'medoids' must be distinct row indices.")
    return m
