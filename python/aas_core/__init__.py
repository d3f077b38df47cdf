"""aas-core: ambiguity-aware active learning for re-identification.

Fast, exact primitives (kNN graph, k-reciprocal Jaccard distance, DBSCAN,
SpCL self-paced pseudo-labels, FINCH, NP3 constrained refinement) with a C++
core, and the active loop around them: pair constraints, Ambiguity-Aware
Sampling and its baselines, a simulated annotator and the loop itself, and
the durable store behind the browser annotation app (``aas annotate``).
"""

from . import _core, annotate, datasets, metrics, sampling
from .cluster import (
    DBSCAN,
    FINCH,
    FinchResult,
    SpclState,
    dbscan,
    finch,
    spcl_pseudo_labels,
)
from .constraints import PairConstraints
from .gpu import cuda_available
from .loop import ActiveLoop, ClusterState, cluster_features
from .neighbors import KNNGraph, knn_graph
from .oracle import LabelOracle
from .refine import ConstrainedClustering, np3
from .rerank import k_reciprocal_jaccard, to_dense_distance
from .sampling import PairProposal

__version__ = "0.1.0"
has_openmp: bool = bool(_core.has_openmp)

__all__ = [
    "ActiveLoop",
    "ClusterState",
    "ConstrainedClustering",
    "DBSCAN",
    "FINCH",
    "FinchResult",
    "KNNGraph",
    "LabelOracle",
    "PairConstraints",
    "PairProposal",
    "SpclState",
    "annotate",
    "cluster_features",
    "cuda_available",
    "datasets",
    "dbscan",
    "finch",
    "has_openmp",
    "k_reciprocal_jaccard",
    "knn_graph",
    "metrics",
    "np3",
    "sampling",
    "spcl_pseudo_labels",
    "to_dense_distance",
    "__version__",
]
