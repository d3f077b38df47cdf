"""SpCL's self-paced pseudo-labels (Ge et al., NeurIPS 2020)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._labels import outliers_to_singletons
from .._validation import check_float, check_int
from .dbscan import _run

__all__ = ["SpclState", "spcl_pseudo_labels"]


@dataclass(frozen=True)
class SpclState:
    """What :func:`spcl_pseudo_labels` carries from one call to the next.

    Attributes
    ----------
    indep_threshold : float or None
        The R_indep threshold, fixed by the first call that saw a cluster with
        more than one member (None until then) and reused afterwards.
    eps, eps_gap, min_samples
        The parameters it was computed with; a later call must use the same.
    n_clusters : int
        Clusters (labels with more than one member) of the call that returned
        this state.
    n_unclustered : int
        Un-clustered instances (labels with one member) of that call.
    """

    indep_threshold: float | None
    eps: float
    eps_gap: float
    min_samples: int
    n_clusters: int = 0
    n_unclustered: int = 0


def spcl_pseudo_labels(D, *, eps=0.6, eps_gap=0.02, min_samples=4, state=None, n_threads=None):
    """Self-paced pseudo-labels of SpCL: reliable DBSCAN clusters, the rest alone.

    DBSCAN runs at eps - eps_gap (tight), eps (normal) and eps + eps_gap
    (loose) in one pass over the graph; in each run every outlier is its own
    cluster. For point i, R_comp = 1 - IoU(normal cluster of i, tight cluster
    of i) and R_indep = 1 - IoU(normal cluster, loose cluster); a cluster
    scores the minimum over its members. The R_indep threshold is the value
    at index min(M - 1, round(0.9 M)) of the sorted scores of the M normal
    clusters with more than one member; it is fixed by the first call and
    carried in ``state``. Point i keeps its normal cluster iff the cluster's
    R_indep <= threshold and R_comp(i) <= the cluster's R_comp; otherwise it
    becomes an un-clustered instance. This is SpCL's
    ``examples/spcl_train_usl.py`` with the IoUs taken from contingency counts
    (O(n) memory) instead of three dense n×n tensors.

    Parameters
    ----------
    D : sparse (n, n) distance graph
        As for :func:`aas_core.dbscan` (absent entries are not neighbours).
    eps : float >= 0
    eps_gap : float in [0, eps]
    min_samples : int >= 1
    state : SpclState or None
        None on the first call; afterwards the state returned by the previous
        call, whose threshold is reused. If the first call finds no cluster
        with more than one member (M = 0, where SpCL itself would fail), every
        point is un-clustered and the threshold stays None, to be fixed by the
        next call.
    n_threads : int or None

    Returns
    -------
    labels : ndarray of shape (n,), int64
        Every point is labelled: clusters (two or more members) are numbered
        0 .. n_clusters - 1 in order of their smallest member, then each
        un-clustered instance gets its own label in index order. The same
        partition as SpCL's pseudo-labels.
    state : SpclState
        The threshold and the counts of clusters and un-clustered instances.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> import aas_core as aas
    >>> D = sp.csr_array(np.kron(np.eye(2), np.full((4, 4), 0.5)).astype(np.float32))
    >>> D.setdiag(0)
    >>> labels, state = aas.spcl_pseudo_labels(D)
    >>> labels, state.n_clusters, state.indep_threshold
    (array([0, 0, 0, 0, 1, 1, 1, 1]), 2, 0.0)
    """
    owner = "spcl_pseudo_labels"
    eps = check_float("eps", eps, low=0.0, owner=owner)
    eps_gap = check_float("eps_gap", eps_gap, low=0.0, high=eps, owner=owner)
    min_samples = check_int("min_samples", min_samples, low=1, owner=owner)
    if state is not None:
        if not isinstance(state, SpclState):
            raise TypeError(
                f"The 'state' parameter of {owner} must be None or the SpclState returned by "
                f"the previous call; got {type(state).__name__}."
            )
        used = (state.eps, state.eps_gap, state.min_samples)
        if used != (eps, eps_gap, min_samples):
            raise ValueError(
                f"{owner}: the state was computed with (eps, eps_gap, min_samples) = {used}; "
                f"got {(eps, eps_gap, min_samples)}. Pass the same parameters, or state=None "
                "to compute a new threshold."
            )
    runs, _ = _run(D, [eps, eps - eps_gap, eps + eps_gap], min_samples, n_threads, owner)
    normal, tight, loose = (outliers_to_singletons(r) for r in runs)
    n = normal.shape[0]

    r_comp = 1.0 - _iou_per_point(normal, tight)
    r_indep = 1.0 - _iou_per_point(normal, loose)
    n_labels = int(normal.max()) + 1
    cluster_comp = np.full(n_labels, np.inf)
    cluster_indep = np.full(n_labels, np.inf)
    np.minimum.at(cluster_comp, normal, r_comp)
    np.minimum.at(cluster_indep, normal, r_indep)

    threshold = None if state is None else state.indep_threshold
    if threshold is None:
        scores = np.sort(cluster_indep[np.bincount(normal, minlength=n_labels) > 1])
        m = scores.shape[0]
        if m:
            threshold = float(scores[min(m - 1, int(np.round(m * 0.9)))])
    if threshold is None:  # M = 0: every normal cluster is a single point already
        keep = np.zeros(n, dtype=bool)
    else:
        keep = (cluster_indep[normal] <= threshold) & (r_comp <= cluster_comp[normal])
    provisional = np.where(keep, normal, n_labels + np.arange(n))
    labels, n_clusters = _clusters_first(provisional)
    new_state = SpclState(
        indep_threshold=threshold,
        eps=eps,
        eps_gap=eps_gap,
        min_samples=min_samples,
        n_clusters=n_clusters,
        n_unclustered=n - int(np.count_nonzero(labels < n_clusters)),
    )
    return labels, new_state


def _iou_per_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of the a-cluster and the b-cluster of every point, from counts."""
    size_a = np.bincount(a)[a]
    size_b = np.bincount(b)[b]
    _, pair, both = np.unique(a * (int(b.max()) + 1) + b, return_inverse=True, return_counts=True)
    inter = both[pair.ravel()]
    return inter / (size_a + size_b - inter)


def _clusters_first(labels: np.ndarray):
    """Renumbers: groups of >= 2 points as 0..C-1 by smallest member, then the
    single points C.. in index order. Returns (labels int64, C)."""
    _, first, inverse, counts = np.unique(
        labels, return_index=True, return_inverse=True, return_counts=True
    )
    inverse = inverse.ravel()
    grouped = np.flatnonzero(counts > 1)
    grouped = grouped[np.argsort(first[grouped], kind="stable")]
    new_id = np.full(counts.shape[0], -1, dtype=np.int64)
    new_id[grouped] = np.arange(grouped.shape[0])
    out = new_id[inverse]
    alone = out < 0
    out[alone] = grouped.shape[0] + np.arange(np.count_nonzero(alone))
    return out, int(grouped.shape[0])
