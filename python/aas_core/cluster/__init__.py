"""Clustering: DBSCAN on sparse distance graphs, SpCL self-paced pseudo-labels, FINCH."""

from .dbscan import DBSCAN, dbscan
from .spcl import SpclState, spcl_pseudo_labels

__all__ = ["DBSCAN", "SpclState", "dbscan", "spcl_pseudo_labels"]
