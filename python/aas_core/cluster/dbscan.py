"""DBSCAN on a sparse precomputed distance graph."""

from __future__ import annotations

import numpy as np

from .. import _core
from .._base import Estimator
from .._validation import as_distance_graph, check_float, check_int, effective_threads

__all__ = ["DBSCAN", "dbscan"]


def _run(D, eps_values, min_samples, n_threads, owner):
    """Checks everything, then runs the kernel for all eps values at once.

    Returns (labels (len(eps), n) int64, is_core (len(eps), n) bool)."""
    eps_values = [check_float("eps", e, low=0.0, owner=owner) for e in eps_values]
    min_samples = check_int("min_samples", min_samples, low=1, owner=owner)
    threads = effective_threads(n_threads, owner=owner)
    g = as_distance_graph(D, name="D", owner=owner)
    return _core.dbscan_csr(
        g.indptr,
        g.indices,
        g.data,
        np.asarray(eps_values, dtype=np.float64),
        min_samples,
        threads,
    )


def dbscan(D, *, eps=0.6, min_samples=4, n_threads=None) -> np.ndarray:
    """DBSCAN on a precomputed distance graph, with scikit-learn's semantics.

    A point is core when at least ``min_samples`` points, itself included,
    lie within ``eps`` (d <= eps). Clusters are the connected components of
    the core points plus their border points; noise is -1. For a symmetric
    graph the labels are exactly those of
    ``sklearn.cluster.DBSCAN(eps, min_samples=min_samples,
    metric="precomputed")``: clusters are numbered in order of their smallest
    core point, and a border point within eps of several clusters joins the
    smallest-numbered one.

    Parameters
    ----------
    D : scipy.sparse array or matrix, or ndarray, shape (n, n)
        Distances. Sparse: only stored entries count and an ABSENT entry means
        "not a neighbour" for every eps (the Jaccard graph of
        :func:`aas_core.k_reciprocal_jaccard` stores entries < 1, so eps >= 1
        still only links stored pairs). Explicit zeros are neighbours. Non-CSR
        sparse formats are converted with ``tocsr()``. A dense array is taken
        as a graph storing every entry. Values must be finite and >= 0;
        float64 is converted to float32 (a copy) and eps is compared in
        float32, as sklearn does for float32 input. The diagonal is ignored:
        a point always counts itself.
    eps : float >= 0
        Neighbourhood radius (SpCL's default 0.6).
    min_samples : int >= 1
        Neighbourhood size, the point itself included, that makes it core.
    n_threads : int or None
        Threads (None: OMP_NUM_THREADS or all CPUs). Labels do not depend on it.

    Returns
    -------
    labels : ndarray of shape (n,), int64
        Cluster labels 0, 1, ... and -1 for noise.

    Notes
    -----
    For a non-symmetric graph the neighbourhood of i is row i (as in sklearn);
    two core points are linked when either row stores the other within eps
    (sklearn's result would depend on its visiting order), and a border point
    joins a cluster whose core point stores it in its row.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> import aas_core as aas
    >>> rows, cols = [0, 1, 1, 2, 3, 4], [1, 0, 2, 1, 4, 3]
    >>> D = sp.csr_array((np.full(6, 0.1, np.float32), (rows, cols)), shape=(6, 6))
    >>> aas.dbscan(D, eps=0.2, min_samples=2)
    array([ 0,  0,  0,  1,  1, -1])
    """
    labels, _ = _run(D, [eps], min_samples, n_threads, "dbscan")
    return labels[0]


class DBSCAN(Estimator):
    """DBSCAN estimator on a precomputed distance graph (see :func:`dbscan`).

    Parameters
    ----------
    eps : float >= 0
    min_samples : int >= 1
    n_threads : int or None

    Attributes
    ----------
    labels_ : ndarray of shape (n,), int64
        Cluster labels, -1 for noise.
    core_sample_indices_ : ndarray of shape (n_core,), int64
        Indices of the core points, increasing.
    n_clusters_ : int
        Number of clusters.
    n_features_in_ : int
        n, the number of columns of D (as in scikit-learn).

    Examples
    --------
    >>> import numpy as np
    >>> import aas_core as aas
    >>> D = np.array([[0, .1, .9], [.1, 0, .9], [.9, .9, 0]], dtype=np.float32)
    >>> est = aas.DBSCAN(eps=0.2, min_samples=2).fit(D)
    >>> est.labels_, est.core_sample_indices_
    (array([ 0,  0, -1]), array([0, 1]))
    """

    def __init__(self, eps=0.6, *, min_samples=4, n_threads=None):
        self.eps = eps
        self.min_samples = min_samples
        self.n_threads = n_threads

    def fit(self, D, y=None):
        """Clusters the graph D; returns self."""
        labels, is_core = _run(D, [self.eps], self.min_samples, self.n_threads, "DBSCAN")
        self.labels_ = labels[0]
        self.core_sample_indices_ = np.flatnonzero(is_core[0]).astype(np.int64)
        self.n_clusters_ = int(self.labels_.max(initial=-1)) + 1
        self.n_features_in_ = int(D.shape[1])  # n: the columns of the graph, as in sklearn
        return self

    def fit_predict(self, D, y=None):
        """Clusters the graph D; returns ``labels_``."""
        return self.fit(D).labels_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.estimator_type = "clusterer"
        tags.input_tags.pairwise = True  # D is (n, n) distances, not features
        tags.input_tags.positive_only = True  # distances are >= 0
        tags.input_tags.sparse = True
        return tags
