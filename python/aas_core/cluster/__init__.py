"""Clustering: DBSCAN on sparse distance graphs, SpCL self-paced pseudo-labels, FINCH."""

from .dbscan import DBSCAN, dbscan
from .eps import EpsChoice, calibrated_eps, calibration_pairs, data_eps, fit_eps
from .finch import FINCH, FinchResult, closest_partition, finch
from .spcl import SpclState, spcl_pseudo_labels

__all__ = [
    "DBSCAN",
    "EpsChoice",
    "FINCH",
    "FinchResult",
    "SpclState",
    "calibrated_eps",
    "calibration_pairs",
    "closest_partition",
    "data_eps",
    "dbscan",
    "finch",
    "fit_eps",
    "spcl_pseudo_labels",
]
