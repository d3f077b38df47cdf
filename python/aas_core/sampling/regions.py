"""Regions of uncertainty: where two clusterings disagree (paper §3.1 A)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import _core
from .._labels import outliers_to_singletons

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
    no region. O(n): union-find over the contingency table in C++ (O(n log n)
    only when label values exceed 4n); no pair enumeration.

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
    region, n_regions = _core.uncertainty_regions(a, b)
    return Regions(region, int(n_regions), a, b)


def _singletons(labels, name) -> np.ndarray:
    x = np.asarray(labels)
    if x.ndim != 1 or x.dtype.kind not in "iu":
        raise ValueError(
            f"uncertainty_regions: {name!r} must be a 1-D integer array; got dtype {x.dtype}, "
            f"shape {x.shape}."
        )
    return outliers_to_singletons(x.astype(np.int64))
