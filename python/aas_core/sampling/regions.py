"""Regions of uncertainty: where two clusterings disagree (paper §3.1 A, DESIGN.md §3.6)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

__all__ = ["Regions", "uncertainty_regions"]


@dataclass(frozen=True, eq=False)
class Regions:
    """Regions S_k of disagreement between clusterings A and B.

    Attributes
    ----------
    region : (n,) int64
        Region of every point, numbered 0.. by smallest member; -1 where the
        point's A-cluster and B-cluster are the same set (an agreement).
    n_regions : int
    labels_a, labels_b : (n,) int64
        The clusterings with every -1 (outlier) made its own singleton cluster.
    """

    region: np.ndarray
    n_regions: int
    labels_a: np.ndarray
    labels_b: np.ndarray

    def members(self, k: int) -> np.ndarray:
        """Indices of the points of region k, ascending."""
        return np.flatnonzero(self.region == k)


def uncertainty_regions(labels_a, labels_b) -> Regions:
    """Connected regions where clusterings A and B disagree.

    Outliers (-1) are singleton clusters. Clusters of A and of B are the nodes
    of a bipartite graph with an edge where 0 < IoU < 1; a region is a
    connected component with at least one edge, and its points are the union
    of its clusters. Identical clusters (IoU = 1) are agreements and belong to
    no region. O(n log n) from the contingency table; no pair enumeration.

    Examples
    --------
    >>> r = uncertainty_regions([0, 0, 1, 1, -1, 2, 2], [0, 0, 0, 1, 1, 2, 2])
    >>> r.region.tolist(), r.n_regions
    ([0, 0, 0, 0, 0, -1, -1], 1)
    """
    a = _singletons(labels_a, "labels_a")
    b = _singletons(labels_b, "labels_b")
    if len(a) != len(b):
        raise ValueError(
            f"uncertainty_regions: 'labels_b' must have length {len(a)} like 'labels_a'; "
            f"got {len(b)}."
        )
    _, a_id = np.unique(a, return_inverse=True)
    _, b_id = np.unique(b, return_inverse=True)
    n_a = int(a_id.max(initial=-1)) + 1
    size_a = np.bincount(a_id, minlength=n_a)
    size_b = np.bincount(b_id)
    cell, cell_of_point, count = np.unique(
        a_id.astype(np.int64) * (len(size_b)) + b_id, return_inverse=True, return_counts=True
    )
    ca, cb = cell // len(size_b), cell % len(size_b)
    agree = (count == size_a[ca]) & (count == size_b[cb])
    edges = np.flatnonzero(~agree)
    nodes = n_a + len(size_b)
    g = sp.coo_array((np.ones(len(edges)), (ca[edges], n_a + cb[edges])), shape=(nodes, nodes))
    _, comp = connected_components(g, directed=False)
    region = np.where(agree[cell_of_point], -1, comp[a_id])
    # number regions 0.. by their smallest member
    inside = np.flatnonzero(region >= 0)
    uniq, first = np.unique(region[inside], return_index=True)
    rank = np.empty(len(uniq), np.int64)
    rank[np.argsort(inside[first])] = np.arange(len(uniq))
    region[inside] = rank[np.searchsorted(uniq, region[inside])]
    return Regions(region.astype(np.int64), int(len(uniq)), a, b)


def _singletons(labels, name) -> np.ndarray:
    x = np.asarray(labels)
    if x.ndim != 1 or x.dtype.kind not in "iu":
        raise ValueError(
            f"uncertainty_regions: {name!r} must be a 1-D integer array; got dtype {x.dtype}, "
            f"shape {x.shape}."
        )
    x = x.astype(np.int64)  # a copy
    noise = np.flatnonzero(x < 0)
    x[noise] = x.max(initial=-1) + 1 + np.arange(len(noise))
    return x
