import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import _oracles
import aas_core as aas


def test_hand_worked_three_points():
    # a and b are close (cos 0.8), c is far; k1 = 2, k2 = 1.
    # R(a) = {a, b}, R(b) = {b, a}, R(c) = {c}. V_a = softmax(0, 2·0.8 - 2) over
    # {a, b}: the off-diagonal weight is w = e^-0.4 / (1 + e^-0.4).
    # m_ab = V_ab + V_ba = 2w, d_ab = 1 - m/(2 - m); c shares no support: 1.
    X = np.array([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    X[2] = [0.05, 0.2, 0.978]
    D = aas.k_reciprocal_jaccard(X, k1=2, k2=1, dense=True)
    w = math.exp(-0.4) / (1 + math.exp(-0.4))
    m = 2 * w
    assert D[0, 1] == pytest.approx(1 - m / (2 - m), abs=1e-6)
    assert D[1, 0] == D[0, 1]
    assert D[0, 2] == 1 and D[2, 1] == 1
    assert np.all(np.diag(D) == 0)


CASES = [  # n, d, k1, k2
    (60, 8, 10, 3),
    (300, 32, 30, 6),
    (250, 64, 20, 1),
    (200, 16, 25, 6),  # k1/2 = 12.5 rounds (half to even) to 12
    (120, 8, 7, 7),  # 3.5 rounds to 4
    (90, 4, 2, 2),
]


@pytest.mark.parametrize("n, d, k1, k2", CASES)
def test_matches_the_spcl_oracle(n, d, k1, k2):
    X, _ = aas.datasets.make_reid_blobs(n, d=d, seed=n + k1)
    g = aas.knn_graph(X, k1)
    np.testing.assert_array_equal(g.indices, _oracles.exact_rank(X, k1))
    ref = _oracles.spcl_jaccard(X, g.indices, k1, k2)
    D = aas.k_reciprocal_jaccard(g, k1=k1, k2=k2)
    got = aas.to_dense_distance(D)
    np.testing.assert_array_equal(got < 1, ref < 1)  # same support
    np.testing.assert_allclose(got, ref, atol=1e-5)


@pytest.mark.parametrize("max_distance", [0.0, 0.3, 0.6, 0.95])
def test_max_distance_keeps_exactly_the_entries_below_it(max_distance):
    X, _ = aas.datasets.make_reid_blobs(250, d=32, seed=7)
    g = aas.knn_graph(X, 20)
    full = aas.k_reciprocal_jaccard(g, k1=20, k2=6)
    cut = aas.k_reciprocal_jaccard(g, k1=20, k2=6, max_distance=max_distance)
    expected = full.copy()
    expected.data[expected.data > max_distance] = 1.0
    np.testing.assert_array_equal(aas.to_dense_distance(cut), aas.to_dense_distance(expected))
    assert cut.data.max() <= max_distance


def test_output_properties():
    X, _ = aas.datasets.make_reid_blobs(400, d=32, seed=1)
    D = aas.k_reciprocal_jaccard(X, k1=20, k2=6)
    assert isinstance(D, sp.csr_array) and D.dtype == np.float32
    assert D.has_sorted_indices
    assert (D != D.T).nnz == 0  # exactly symmetric
    assert D.data.min() >= 0 and D.data.max() < 1
    np.testing.assert_array_equal(D.diagonal(), 0)
    assert D.nnz >= 400 and np.all(np.diff(D.indptr) >= 1)  # the diagonal is stored


def test_graph_input_equals_feature_input_and_wider_graphs_are_cut_to_k1():
    X, _ = aas.datasets.make_reid_blobs(300, d=32, seed=2)
    a = aas.k_reciprocal_jaccard(X, k1=15, k2=4)
    b = aas.k_reciprocal_jaccard(aas.knn_graph(X, 15), k1=15, k2=4)
    c = aas.k_reciprocal_jaccard(aas.knn_graph(X, 40), k1=15, k2=4)
    for other in (b, c):
        np.testing.assert_array_equal(a.indptr, other.indptr)
        np.testing.assert_array_equal(a.indices, other.indices)
        np.testing.assert_allclose(a.data, other.data, atol=1e-6)


def test_thread_count_does_not_change_the_result():
    X, _ = aas.datasets.make_reid_blobs(600, d=32, seed=3)
    g = aas.knn_graph(X, 20)
    a = aas.k_reciprocal_jaccard(g, k1=20, n_threads=1)
    b = aas.k_reciprocal_jaccard(g, k1=20, n_threads=2)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.data, b.data)


def test_input_is_not_modified():
    X, _ = aas.datasets.make_reid_blobs(100, d=16, seed=4)
    g = aas.knn_graph(X, 10)
    copies = [a.copy() for a in (X, g.indices, g.sims)]
    aas.k_reciprocal_jaccard(g, k1=10, k2=3)
    aas.k_reciprocal_jaccard(X, k1=10, k2=3)
    for before, after in zip(copies, (X, g.indices, g.sims)):
        np.testing.assert_array_equal(before, after)


X_PERM, _ = aas.datasets.make_reid_blobs(60, d=16, seed=9)
D_PERM = aas.to_dense_distance(aas.k_reciprocal_jaccard(X_PERM, k1=8, k2=3))


@settings(max_examples=15, deadline=None)
@given(perm=st.permutations(list(range(60))))
def test_equivariant_under_row_permutation(perm):
    p = np.asarray(perm)
    Dp = aas.to_dense_distance(aas.k_reciprocal_jaccard(X_PERM[p], k1=8, k2=3))
    np.testing.assert_allclose(Dp, D_PERM[np.ix_(p, p)], atol=1e-6)


def test_graph_without_features_fails_clearly_when_the_expansion_needs_them():
    X, _ = aas.datasets.make_reid_blobs(300, d=32, seed=5)
    g = aas.knn_graph(X, 20)
    bare = aas.KNNGraph(g.indices, g.sims)
    # The C++ check fires inside the OpenMP loop: it must reach Python as an
    # exception from any number of threads, never abort the interpreter.
    for threads in (1, 2):
        with pytest.raises(ValueError, match="pass the features"):
            aas.k_reciprocal_jaccard(bare, k1=20, k2=6, n_threads=threads)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"k1": 1}, ValueError, "'k1' parameter"),
        ({"k1": 50}, ValueError, "'k1' parameter"),
        ({"k1": 10, "k2": 11}, ValueError, "'k2' parameter"),
        ({"k2": 0}, ValueError, "'k2' parameter"),
        ({"max_distance": 1.5}, ValueError, "'max_distance' parameter"),
        ({"max_distance": -0.1}, ValueError, "'max_distance' parameter"),
        ({"n_threads": 0}, ValueError, "'n_threads' parameter"),
    ],
)
def test_bad_parameters_are_named(kwargs, exc, match):
    X, _ = aas.datasets.make_reid_blobs(40, d=8, seed=0)
    with pytest.raises(exc, match=match):
        aas.k_reciprocal_jaccard(X, **{"k1": 10, **kwargs})


def test_bad_graphs_are_rejected():
    X, _ = aas.datasets.make_reid_blobs(40, d=8, seed=0)
    no_self = aas.knn_graph(X, 10, include_self=False)
    with pytest.raises(ValueError, match="column 0"):
        aas.k_reciprocal_jaccard(no_self, k1=10)
    g = aas.knn_graph(X, 10)
    with pytest.raises(ValueError, match="'k1' parameter"):
        aas.k_reciprocal_jaccard(g, k1=12)
    # int32 indices are converted (a copy), as float64 features are
    as32 = aas.KNNGraph(g.indices.astype(np.int32), g.sims, g.features)
    assert (aas.k_reciprocal_jaccard(as32, k1=10) != aas.k_reciprocal_jaccard(g, k1=10)).nnz == 0
    with pytest.raises(TypeError, match="indices must be an \\(n, k\\) integer array"):
        aas.k_reciprocal_jaccard(aas.KNNGraph(g.indices.astype(float), g.sims), k1=10)
    with pytest.raises(ValueError, match="must be 2-D"):
        aas.k_reciprocal_jaccard(X[0], k1=10)
