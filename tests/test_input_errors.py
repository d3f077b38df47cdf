"""Bad arguments found by the red-team fuzzing (issue 14): each names the argument in one line."""

import numpy as np
import pytest

import aas_core as aas
from aas_core.metrics import clustering


@pytest.fixture(scope="module")
def data():
    X = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    g = aas.knn_graph(X, 6)
    return X, g, aas.k_reciprocal_jaccard(g, k1=6, k2=3)


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda X, g, D: aas.knn_graph(X, 3, n_threads=2**31),
            "'n_threads' parameter of knn_graph",
        ),
        (lambda X, g, D: aas.finch(X, n_threads=2**40), "'n_threads' parameter of finch"),
        (lambda X, g, D: aas.dbscan(D, min_samples=2**63), "'min_samples' parameter of dbscan"),
        (lambda X, g, D: aas.spcl_pseudo_labels(D, min_samples=2**70), "'min_samples'"),
        (lambda X, g, D: aas.k_reciprocal_jaccard(X, max_distance=10**400), "'max_distance'"),
        (
            lambda X, g, D: aas.k_reciprocal_jaccard(
                aas.KNNGraph(g.indices, g.sims * np.nan, g.features), k1=4, k2=2
            ),
            "'X_or_graph' parameter of k_reciprocal_jaccard: sims hold NaN",
        ),
        (
            lambda X, g, D: aas.finch(aas.KNNGraph(g.indices, g.sims, np.where(X > 2, np.nan, X))),
            "'X_or_graph' parameter of finch: features hold NaN",
        ),
        (
            lambda X, g, D: aas.finch(aas.KNNGraph(g.indices + 40, g.sims, X)),
            "indices must lie in \\[0, 39\\]",
        ),
    ],
)
def test_bad_values_name_the_argument(data, call, match):
    with pytest.raises((ValueError, TypeError), match=match) as err:
        call(*data)
    assert "incompatible function arguments" not in str(err.value)
    assert "\n" not in str(err.value)


def test_a_graph_of_lists_is_read_like_arrays(data):
    X, g, D = data
    as_lists = aas.KNNGraph(g.indices.tolist(), g.sims.tolist(), g.features)
    got = aas.k_reciprocal_jaccard(as_lists, k1=6, k2=3)
    assert (got != D).nnz == 0
    assert aas.finch(as_lists).n_clusters == aas.finch(g).n_clusters
    assert isinstance(g.indices, np.ndarray) and g.indices.dtype == np.int64  # not modified


@pytest.mark.parametrize("f", [clustering.ari, clustering.nmi, clustering.pairwise_f1])
def test_empty_labels_behave_the_same_in_any_container(f):
    assert f([], []) == f(np.array([], int), np.array([], int)) == f((), np.empty(0, np.int64))
