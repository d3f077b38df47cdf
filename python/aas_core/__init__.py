"""aas-core: ambiguity-aware active learning for re-identification.

Fast, exact primitives (kNN graph, k-reciprocal Jaccard distance, DBSCAN,
SpCL self-paced pseudo-labels, FINCH, NP3 constrained refinement) with a C++
core, and the active loop around them: pair constraints, Ambiguity-Aware
Sampling and its baselines, a simulated annotator and the loop itself, and
the durable store behind the browser annotation app (``aas annotate``).
"""

import importlib

from . import _core

# Each public name and the module it lives in, imported when first used (PEP 562): the
# ``aas`` command starts without numpy's and scipy's import time, so a Ctrl+C in its first
# second lands in the command (one line), never in a half-done import (a traceback).
_LAZY = {
    "DBSCAN": "cluster",
    "FINCH": "cluster",
    "FinchResult": "cluster",
    "SpclState": "cluster",
    "dbscan": "cluster",
    "finch": "cluster",
    "spcl_pseudo_labels": "cluster",
    "PairConstraints": "constraints",
    "cuda_available": "gpu",
    "ActiveLoop": "loop",
    "ClusterState": "loop",
    "cluster_features": "loop",
    "KNNGraph": "neighbors",
    "knn_graph": "neighbors",
    "LabelOracle": "oracle",
    "ConstrainedClustering": "refine",
    "np3": "refine",
    "k_reciprocal_jaccard": "rerank",
    "to_dense_distance": "rerank",
    "PairProposal": "sampling",
}
_SUBMODULES = ("annotate", "datasets", "metrics", "sampling")


def __getattr__(name):
    if name in _SUBMODULES:
        module = importlib.import_module(f".{name}", __name__)
    elif name in _LAZY:
        module = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    else:
        raise AttributeError(f"module 'aas_core' has no attribute {name!r}")
    globals()[name] = module  # once: later look-ups are plain attributes
    return module


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))


__version__ = "0.1.0"
has_openmp: bool = bool(_core.has_openmp)

__all__ = sorted([*_LAZY, *_SUBMODULES, "has_openmp"]) + ["__version__"]
