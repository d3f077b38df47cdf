"""Clustering: DBSCAN on sparse distance graphs, SpCL self-paced pseudo-labels, FINCH."""

from .finch import FINCH, FinchResult, closest_partition, finch

__all__: list = []
__all__ += ["FINCH", "FinchResult", "closest_partition", "finch"]
