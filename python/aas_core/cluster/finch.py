"""FINCH: hierarchical clustering by first-neighbour relations.

Sarfraz, Sharma and Stiefelhagen, "Efficient Parameter-free Clustering Using
First Neighbor Relations", CVPR 2019 (§3, Algorithm 1), written from the paper.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .. import _core, _precision
from .._base import Estimator
from .._validation import check_int, effective_threads
from ..gpu import check_device, cuda_module
from ..neighbors import KNNGraph, _knn_blas, check_knn_graph, normalize_rows

__all__ = ["FINCH", "FinchResult", "closest_partition", "finch"]

_PARALLEL_MIN = 1 << 20  # clusters × d below which a level runs on one thread
# bf16 candidates per row for a first neighbour: 8 certified every row of FINCH's 30k
# levels (4 left 14 of 7,382 to the fallback); knn_graph's 33 cost 0.1 s more there
_CANDIDATES = 8


@dataclass(frozen=True, eq=False)
class FinchResult:
    """All FINCH partitions of one data set, finest first.

    Attributes
    ----------
    labels : (n, P) int64
        Column p is partition p (p = 0 is the first-neighbour partition). In
        every column labels are 0..C_p-1, numbered in order of each cluster's
        smallest member. The partitions are nested: each cluster of column
        p+1 is a union of clusters of column p.
    n_clusters : list of int
        C_p, the number of clusters of each partition (strictly decreasing).
    """

    labels: np.ndarray
    n_clusters: list[int]

    @property
    def n_levels(self) -> int:
        return len(self.n_clusters)


def finch(X_or_graph, *, stop_at_clusters=None, n_threads=None, device="cpu") -> FinchResult:
    """FINCH partitions with exact cosine first neighbours.

    Level 0 links every point to its first neighbour κ(i) (cosine, self
    excluded): i and j share a cluster when j = κ(i), i = κ(j) or
    κ(i) = κ(j), closed transitively (paper eq. 1). Each next level replaces
    every cluster by the mean of its original (L2-normalised) points, finds the
    first neighbour of every mean among the other means by cosine, links the
    clusters the same way and maps the result back to the points. Levels are
    added until one yields a single cluster or does not reduce the count; that
    level is dropped, except that level 0 is always returned (with n = 2 it is
    one cluster). First neighbours are always exact (BLAS candidates re-ranked
    by one fused multiply-add per feature, ties to the smaller index); a mean
    whose sum is exactly zero has no direction and gets cosine 0 to every other
    mean.

    Parameters
    ----------
    X_or_graph : (n, d) float array or KNNGraph
        Embeddings, n >= 2 (L2-normalised here, a copy unless already unit
        norm; float64 is converted to float32, a copy); or a graph from
        :func:`aas_core.knn_graph` with or without self, whose first non-self
        column gives level 0 (no new search). The graph must carry its
        ``features`` (``knn_graph`` always stores them, normalised), because
        levels >= 1 need the cluster means; they are used as they are.
    stop_at_clusters : int >= 1 or None
        Stop after the first level with at most this many clusters (None:
        compute every level). Counts strictly decrease, so no coarser level
        can be closer to this count: pass the count you will select by, and
        ``closest_partition(result, stop_at_clusters)`` picks the same level
        as on the full result, while the levels below it (level 1 is an
        exact 1-NN among ~n/4 cluster means) are never computed. The levels
        returned are exactly the first levels of the full result.
    n_threads : int or None
        Threads (None: OMP_NUM_THREADS or all CPUs). Results do not depend
        on it.
    device : {"cpu", "cuda"}
        "cuda": every level runs on the GPU (see :mod:`aas_core.gpu`): the
        exact first-neighbour searches (level 0 from features, and the 1-NN
        among the cluster means of each further level, the costly part), the
        linking and the means, with the points copied to the device once.
        The linking and the means are bit-identical to the CPU's, and both
        neighbour searches rank by the same fp32 similarity (one fused
        multiply-add per feature in feature order, ties to the smaller index:
        on the CPU BLAS candidates re-ranked that way), so the partitions
        equal the CPU ones.

    Returns
    -------
    FinchResult
        ``labels`` (n, P) int64, finest partition first, and ``n_clusters``.

    Notes
    -----
    Cost: given a graph, level 0 is O(n); level p >= 1 sums the rows once
    (coarser levels sum the finer sums) and runs an exact 1-NN among the C
    means, a C²·d/2 GEMM, so level 1 (C ≈ n/4) dominates; ``stop_at_clusters``
    skips it when level 0 already has few enough clusters (AAS: DBSCAN's
    count with outliers as singletons is usually above FINCH's level 0). Bounds from the
    point graph cannot prune that search: on make_reid_blobs(30000) the true
    first neighbour of a mean is outside the clusters reached by the 30-NN
    graph for about 3% of clusters.

    Compared with ``finch-clust`` 0.2.3 (``FINCH(X, distance="cosine",
    ensure_early_exit=False, ann_threshold=n + 1)``), which also averages the
    original rows at every level: the partitions are the same up to
    relabelling and floating-point near-ties. finch-clust drops a level whose
    count falls by at most one (``exit_clust <= 1``) rather than "does not
    fall": since each cluster joins at least its first neighbour's cluster, a
    level at least halves the count, so a fall of exactly one happens only
    from 2 clusters to 1, which both rules drop. Its labels are numbered by
    scipy's connected components (the same order here). Above 20,000 points
    finch-clust switches to an approximate search by default; this function
    never does. For input rows that are not unit norm, finch-clust averages
    the raw rows while this function averages the L2-normalised rows (the
    same vectors a KNNGraph carries); for normalised embeddings, as here,
    the two agree.

    Examples
    --------
    >>> import numpy as np, aas_core as aas
    >>> X = np.array([[1, 0], [0.99, 0.1], [0, 1], [0.1, 0.99], [-1, 0.05]], dtype=np.float32)
    >>> r = aas.finch(X)
    >>> r.labels[:, 0].tolist(), r.n_clusters
    ([0, 0, 1, 1, 1], [2])
    """
    return _finch(
        X_or_graph, n_threads=n_threads, owner="finch", stop_at=stop_at_clusters, device=device
    )


def _first_neighbours(M, threads):
    """Exact cosine first neighbour of every row of M (unit or zero rows), self excluded.

    The bf16 candidate search where the CPU has AMX or AVX512-BF16 (as knn_graph's "auto"),
    else BLAS tiles: both re-rank by the same fp32 dot products and certify every row,
    so the neighbours are identical; bf16 only changes the speed (FINCH's level 1
    among thousands of cluster means is most of its time given a kNN graph).
    """
    M = np.ascontiguousarray(M, dtype=np.float32)
    kernel = _precision._cpu_bf16_kernel()
    if kernel is not None and _precision._cpu_has_bf16():
        return _core.knn_graph_bf16(M, 1, False, _CANDIDATES, kernel, False, threads)[0][:, 0]
    return _knn_blas(M, 1, False, threads)[0][:, 0]


def _finch(
    X_or_graph, *, n_threads, owner, timings: list | None = None, stop_at=None, device="cpu"
) -> FinchResult:
    threads = effective_threads(n_threads, owner=owner)
    check_device(device, owner)
    if device == "cuda":
        cuda_module(owner)  # fail now, not after level 0
    if stop_at is not None:
        stop_at = check_int("stop_at_clusters", stop_at, low=1, owner=owner)
    t0 = time.perf_counter()
    if isinstance(X_or_graph, KNNGraph):
        graph = check_knn_graph(X_or_graph, name="X_or_graph", owner=owner)
        X, kappa = _first_neighbours_from_graph(graph, owner)
    else:
        # a dok sparse array is a dict: normalize_rows refuses it as sparse
        if X_or_graph is None or (
            isinstance(X_or_graph, (str, bytes, dict)) and not sp.issparse(X_or_graph)
        ):
            raise TypeError(
                f"{owner}: 'X_or_graph' must be an (n, d) float array or a KNNGraph; "
                f"got {type(X_or_graph).__name__}."
            )
        # a CUDA array is copied to the host once (device="cuda" only): the loop below
        # takes host rows
        X = normalize_rows(X_or_graph, name="X_or_graph", owner=owner, min_rows=2, device=device)
        kappa = None if device == "cuda" else _first_neighbours(X, threads)
    if device == "cuda":
        # the whole loop below, on the device (cuda/finch.cu), with the same results
        if kappa is not None:
            kappa = np.ascontiguousarray(kappa, dtype=np.int64)
        labels, counts = cuda_module(owner).finch(X, kappa, stop_at or 0)
        if timings is not None:
            timings.append(("levels (cuda)", time.perf_counter() - t0, int(counts[-1])))
        return FinchResult(labels=labels, n_clusters=[int(c) for c in counts])
    labels, count = _core.finch_link(np.ascontiguousarray(kappa))
    columns, counts = [labels], [int(count)]
    if timings is not None:
        timings.append(("level 0", time.perf_counter() - t0, counts[-1]))
    # Level p+1 needs the direction of each cluster's sum of original rows
    # (that of its mean). A coarser cluster's sum is the sum of its finer
    # clusters' sums (norm × direction), so the points are read only once.
    src, weights, rows_of, current = X, np.ones(X.shape[0]), labels, labels
    while counts[-1] > 1 and (stop_at is None or counts[-1] > stop_at):
        t0 = time.perf_counter()
        # Small levels run on one thread: waking a team costs more than the
        # work (results do not depend on the thread count).
        t = threads if counts[-1] * X.shape[1] >= _PARALLEL_MIN else 1
        means, norms = _core.cluster_directions(src, weights, rows_of, counts[-1], t)
        kappa = _first_neighbours(means, t)
        merged, count = _core.finch_link(np.ascontiguousarray(kappa))
        count = int(count)
        if timings is not None:
            timings.append((f"level {len(counts)}", time.perf_counter() - t0, count))
        if count == 1 or count >= counts[-1]:
            break
        src, weights, rows_of = means, norms, merged
        current = merged[current]
        columns.append(current)
        counts.append(count)
    return FinchResult(labels=np.stack(columns, axis=1), n_clusters=counts)


def _first_neighbours_from_graph(graph: KNNGraph, owner: str):
    idx, f = graph.indices, graph.features
    if not (isinstance(idx, np.ndarray) and idx.dtype == np.int64 and idx.ndim == 2):
        raise TypeError(
            f"{owner}: 'X_or_graph'.indices must be a 2-D int64 array; "
            f"got {getattr(idx, 'dtype', type(idx).__name__)}."
        )
    n, k = idx.shape
    if n < 2:
        raise ValueError(f"{owner}: 'X_or_graph' must have at least 2 rows; got {n}.")
    if k == 0 or idx.min() < 0 or idx.max() >= n:
        raise ValueError(f"{owner}: 'X_or_graph'.indices must lie in [0, {n - 1}] with k >= 1.")
    if f is None:
        raise ValueError(
            f"{owner}: 'X_or_graph' is a KNNGraph without features; levels >= 1 average "
            "the original vectors. Pass X itself, or KNNGraph(indices, sims, features=X) "
            "as knn_graph builds it."
        )
    if not (
        isinstance(f, np.ndarray)
        and f.dtype == np.float32
        and f.ndim == 2
        and f.shape[0] == n
        and f.shape[1] >= 1
        and f.flags.c_contiguous
    ):
        raise TypeError(
            f"{owner}: 'X_or_graph'.features must be a C-contiguous float32 ({n}, d) array; "
            f"got {getattr(f, 'shape', None)} {getattr(f, 'dtype', type(f).__name__)}."
        )
    col = 0
    if np.array_equal(idx[:, 0], np.arange(n)):  # built with include_self=True
        if k < 2:
            raise ValueError(
                f"{owner}: 'X_or_graph' holds only each row itself (k = 1); build it with "
                "k >= 2 so that column 1 is the first neighbour."
            )
        col = 1
    kappa = idx[:, col]
    if np.any(kappa == np.arange(n)):
        raise ValueError(
            f"{owner}: 'X_or_graph' lists a row as its own first neighbour "
            f"(row {int(np.flatnonzero(kappa == np.arange(n))[0])}); self may only sit in column 0."
        )
    return f, kappa


def closest_partition(result: FinchResult, n_target) -> int:
    """Index of the level whose cluster count is closest to ``n_target``.

    Ties go to the finer level (the smaller index). For AAS, clustering B is
    the FINCH level closest to DBSCAN's number of clusters with every outlier
    counted as a singleton.

    Examples
    --------
    >>> from aas_core.cluster import FinchResult, closest_partition
    >>> import numpy as np
    >>> r = FinchResult(labels=np.zeros((4, 3), dtype=np.int64), n_clusters=[40, 12, 3])
    >>> closest_partition(r, 26), closest_partition(r, 8)  # 26: a tie, the finer wins
    (0, 1)
    """
    owner = "closest_partition"
    if not isinstance(result, FinchResult):
        raise TypeError(f"{owner}: 'result' must be a FinchResult; got {type(result).__name__}.")
    n_target = check_int("n_target", n_target, low=1, owner=owner)
    gaps = np.abs(np.asarray(result.n_clusters, dtype=np.int64) - n_target)
    return int(np.argmin(gaps))  # first minimum: the finer level


class FINCH(Estimator):
    """FINCH as an estimator (see :func:`finch`).

    Parameters
    ----------
    level : int or None
        Which partition becomes ``labels_``: an index into the levels (0 =
        finest; negative counts from the coarsest, -1 = coarsest). None
        selects the coarsest partition kept, as finch-clust's last column.
    n_threads : int or None
        Threads (None: OMP_NUM_THREADS or all CPUs).

    Attributes
    ----------
    labels_ : (n,) int64
        The chosen partition.
    level_ : int
        Its index (non-negative).
    partitions_ : FinchResult
        Every partition, finest first.
    n_clusters_ : int
        Clusters in ``labels_``.
    n_features_in_ : int
        d, the number of features of X (or of the graph's ``features``).

    Examples
    --------
    >>> import numpy as np, aas_core as aas
    >>> X = np.array([[1, 0], [0.99, 0.1], [0, 1], [0.1, 0.99], [-1, 0.05]], dtype=np.float32)
    >>> aas.FINCH(level=0).fit_predict(X).tolist()
    [0, 0, 1, 1, 1]
    """

    def __init__(self, level=None, *, n_threads=None):
        self.level = level
        self.n_threads = n_threads

    def fit(self, X, y=None):
        """Computes every partition of X (features or KNNGraph) and picks one."""
        owner = "FINCH"
        if self.level is not None:
            check_int("level", self.level, owner=owner)
        result = _finch(X, n_threads=self.n_threads, owner=owner)
        p = result.n_levels
        level = p - 1 if self.level is None else int(self.level)
        if not -p <= level < p:
            raise ValueError(
                f"The 'level' parameter of FINCH must be an int in [{-p}, {p - 1}] for this "
                f"data ({p} levels with {result.n_clusters} clusters); got {self.level}."
            )
        level %= p
        self.partitions_ = result
        self.level_ = level
        self.labels_ = result.labels[:, level].copy()
        self.n_clusters_ = result.n_clusters[level]
        features = X.features if isinstance(X, KNNGraph) else X
        self.n_features_in_ = int(np.shape(features)[1])
        return self

    def fit_predict(self, X, y=None):
        """Fits X; returns ``labels_``."""
        return self.fit(X).labels_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.estimator_type = "clusterer"
        return tags
