"""Runs a batch of fuzz cases against the public API, in its own process.

    python tests/_fuzz_worker.py '<json list of [function, [arg ids], {kw: id}]>'

Each case calls one public function with values drawn from the pools below.
A case passes when the call returns, or raises ValueError / TypeError with a
one-line message that is not pybind11's signature dump. Failures are printed
as JSON lines; a crash of the interpreter (segfault, abort) shows as the
process dying, which the caller reports with the batch.
"""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import scipy.sparse as sp

import aas_core as aas
from aas_core.metrics import clustering

rng = np.random.default_rng(0)
_X = rng.normal(size=(24, 6)).astype(np.float32)
_X_nan = _X.copy()
_X_nan[3, 2] = np.nan
_graph = aas.knn_graph(_X, 6)
_D = aas.k_reciprocal_jaccard(_graph, k1=6, k2=3)
_D_nan = _D.copy()
_D_nan.data[:2] = np.nan
_labels = np.repeat(np.arange(6), 4)

ARRAYS = [
    _X,
    _X.astype(np.float64),
    _X_nan,
    np.zeros((24, 6), np.float32),
    np.empty((0, 6), np.float32),
    _X[:1],
    _X[:2],
    _X[0],
    _X[None],
    _X.tolist(),
    [[1.0, 2.0], [3.0]],
    "X",
    None,
    np.arange(24),
    np.full((24, 6), np.inf, np.float32),
    _X[:, :0],
    _X.T,
    _graph,
    aas.KNNGraph(_graph.indices.tolist(), _graph.sims, _graph.features),
    aas.KNNGraph(_graph.indices, _graph.sims * np.nan, _graph.features),
    aas.KNNGraph(_graph.indices, _graph.sims, _X_nan),
    aas.KNNGraph(_graph.indices + 100, _graph.sims, _graph.features),
    aas.KNNGraph(_graph.indices, _graph.sims, None),
]
GRAPHS = [_D, _D_nan, _D.toarray(), _D.toarray().tolist(), sp.csr_array((3, 4)), None, "D", _X, 5]
INTS = [
    0,
    1,
    2,
    3,
    5,
    23,
    24,
    -1,
    -2,
    2**31,
    2**63,
    -(2**63) - 1,
    10**30,
    True,
    2.5,
    "3",
    None,
    np.int64(4),
    float("nan"),
    [3],
]
FLOATS = [
    0.0,
    0.3,
    0.6,
    1.0,
    -0.1,
    1.5,
    float("nan"),
    float("inf"),
    "0.6",
    None,
    True,
    10**400,
    np.float32(0.5),
    [0.6],
]
LABELS = [
    _labels,
    _labels.tolist(),
    [],
    np.array([], int),
    _labels.astype(float),
    _labels[:5],
    np.full(24, -1),
    None,
    "abc",
    [[0, 1]],
    np.array([2**63], np.uint64),
    _labels - 5,
]
PAIRS = [
    [[0, 1]],
    [[0, 1], [2, 3]],
    [[0, 0]],
    [[0, 24]],
    [[0, 2**32]],
    [[0, 2**63]],
    [[0, -1]],
    [[0, 1], [2]],
    [],
    None,
    "pairs",
    [[0.5, 1]],
    np.array([[1, 2]], np.uint64),
    [[0, 1, 2]],
]
OPTIONS = ["raise", "drop_oldest", "clusters", "nearest", "auto", "all", None, 3, ""]


def _constraints(i):
    return [
        aas.PairConstraints(must_link=[[0, 1]], cannot_link=[[2, 3]]),
        aas.PairConstraints(must_link=[[0, 1]], cannot_link=[[0, 1]]),
        aas.PairConstraints(),
        None,
        [[0, 1]],
        "c",
    ][i % 6]


def _pick(kind, i):
    pool = {
        "X": ARRAYS,
        "D": GRAPHS,
        "int": INTS,
        "float": FLOATS,
        "labels": LABELS,
        "pairs": PAIRS,
        "option": OPTIONS,
    }[kind]
    if kind == "constraints":
        return _constraints(i)
    return pool[i % len(pool)]


# function -> (callable, [kinds of positional args], {keyword: kind})
FUNCTIONS = {
    "knn_graph": (aas.knn_graph, ["X", "int"], {"n_threads": "int"}),
    "jaccard": (
        aas.k_reciprocal_jaccard,
        ["X"],
        {"k1": "int", "k2": "int", "max_distance": "float", "n_threads": "int"},
    ),
    "dbscan": (aas.dbscan, ["D"], {"eps": "float", "min_samples": "int", "n_threads": "int"}),
    "spcl": (
        aas.spcl_pseudo_labels,
        ["D"],
        {"eps": "float", "eps_gap": "float", "min_samples": "int"},
    ),
    "finch": (aas.finch, ["X"], {"n_threads": "int"}),
    "np3": (aas.np3, ["labels", "constraints", "X"], {"on_conflict": "option", "merge": "option"}),
    "constraints": (aas.PairConstraints, ["pairs", "pairs"], {"n": "int"}),
    "is_known": (
        lambda p, q: aas.PairConstraints(must_link=[[0, 1]]).is_known(p, q),
        ["int", "int"],
        {},
    ),
    "is_known_arr": (lambda p: aas.PairConstraints(must_link=[[0, 1]]).is_known(p), ["pairs"], {}),
    "ari": (clustering.ari, ["labels", "labels"], {}),
    "nmi": (clustering.nmi, ["labels", "labels"], {}),
    "pairwise_f1": (clustering.pairwise_f1, ["labels", "labels"], {}),
    "cluster_features": (
        aas.cluster_features,
        ["X"],
        {"k1": "int", "k2": "int", "eps": "float", "min_samples": "int"},
    ),
    "make_reid_blobs": (aas.datasets.make_reid_blobs, ["int"], {"d": "int", "seed": "int"}),
}


def run(case):
    name, args, kwargs = case
    fn, kinds, kw_kinds = FUNCTIONS[name]
    pos = [_constraints(i) if k == "constraints" else _pick(k, i) for k, i in zip(kinds, args)]
    kw = {k: _pick(kw_kinds[k], i) for k, i in kwargs.items() if k in kw_kinds}
    if name == "make_reid_blobs" and isinstance(pos[0], int) and pos[0] > 5000:
        return None  # a valid but large request: not a robustness question
    if name == "make_reid_blobs" and isinstance(kw.get("d"), int) and kw["d"] > 5000:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn(*pos, **kw)
    except (ValueError, TypeError) as exc:
        text = str(exc)
        if "incompatible function arguments" in text or "\n" in text.strip() or not text:
            return {"case": case, "error": f"{type(exc).__name__}: {text[:300]}"}
    except Exception as exc:  # noqa: BLE001 - anything else is a finding
        return {"case": case, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    return None


if __name__ == "__main__":
    for case in json.loads(sys.argv[1]):
        bad = run(case)
        if bad is not None:
            print(json.dumps(bad), flush=True)
