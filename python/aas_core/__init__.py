"""aas-core: ambiguity-aware active learning for re-identification.

Fast, exact primitives (kNN graph, k-reciprocal Jaccard distance, DBSCAN,
SpCL self-paced pseudo-labels, FINCH) with a C++ core.
"""

from . import _core
from .neighbors import KNNGraph, knn_graph

__version__ = "0.1.0"
has_openmp: bool = bool(_core.has_openmp)

__all__ = [
    "KNNGraph",
    "datasets",
    "has_openmp",
    "k_reciprocal_jaccard",
    "knn_graph",
    "to_dense_distance",
    "__version__",
]

from . import datasets  # noqa: E402
from .rerank import k_reciprocal_jaccard, to_dense_distance  # noqa: E402
from .cluster.finch import FINCH, FinchResult, finch  # noqa: E402

__all__ += ["FINCH", "FinchResult", "finch"]
