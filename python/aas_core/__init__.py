"""aas-core: ambiguity-aware active learning for re-identification.

Fast, exact primitives (kNN graph, k-reciprocal Jaccard distance, DBSCAN,
SpCL self-paced pseudo-labels, FINCH) with a C++ core.
"""

from . import _core
from .neighbors import KNNGraph, knn_graph

__version__ = "0.1.0"
has_openmp: bool = bool(_core.has_openmp)

__all__ = [
    "DBSCAN",
    "FINCH",
    "FinchResult",
    "KNNGraph",
    "LabelOracle",
    "PairConstraints",
    "SpclState",
    "datasets",
    "dbscan",
    "finch",
    "has_openmp",
    "k_reciprocal_jaccard",
    "knn_graph",
    "sampling",
    "spcl_pseudo_labels",
    "to_dense_distance",
    "__version__",
]

from . import (
    datasets,  # noqa: E402
    sampling,  # noqa: E402
)
from .cluster import (  # noqa: E402
    DBSCAN,
    FINCH,
    FinchResult,
    SpclState,
    dbscan,
    finch,
    spcl_pseudo_labels,
)
from .constraints import PairConstraints  # noqa: E402
from .oracle import LabelOracle  # noqa: E402
from .rerank import k_reciprocal_jaccard, to_dense_distance  # noqa: E402
