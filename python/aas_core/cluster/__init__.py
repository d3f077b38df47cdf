"""Clustering: DBSCAN on sparse distance graphs, SpCL self-paced pseudo-labels, FINCH."""

from .dbscan import DBSCAN, dbscan
from .finch import FINCH, FinchResult, closest_partition, finch
from .spcl import SpclState, spcl_pseudo_labels

__all__ = [
    "DBSCAN",
    "FINCH",
    "FinchResult",
    "SpclState",
    "closest_partition",
    "dbscan",
    "finch",
    "spcl_pseudo_labels",
]
