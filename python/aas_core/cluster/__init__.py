"""Clustering: DBSCAN on sparse distance graphs, SpCL self-paced pseudo-labels, FINCH."""

__all__: list = []
