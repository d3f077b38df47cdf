import warnings
from functools import cache

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import aas_core as aas
from aas_core import _core
from conftest import assert_same_partition

sklearn_cluster = pytest.importorskip("sklearn.cluster")


def graph_from_edges(n, edges, *, diagonal=False, dtype=np.float32):
    """Symmetric CSR distance graph holding the given (i, j, d) edges."""
    rows = [i for i, j, _ in edges] + [j for i, j, _ in edges]
    cols = [j for i, j, _ in edges] + [i for i, j, _ in edges]
    vals = [d for *_, d in edges] * 2
    if diagonal:
        rows += list(range(n))
        cols += list(range(n))
        vals += [0.0] * n
    return sp.csr_array((np.asarray(vals, dtype=dtype), (rows, cols)), shape=(n, n))


def sklearn_dbscan(D, eps, min_samples):
    with warnings.catch_warnings():  # sklearn warns (EfficiencyWarning) about row order
        warnings.simplefilter("ignore")
        est = sklearn_cluster.DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed")
        est.fit(D)
    return est.labels_, est.core_sample_indices_


def assert_dbscan_equivalent(got, got_core, ref, ref_core, D, eps):
    """cuML-style check: same core points and core partition, same noise, and
    every border point in the cluster of some core point within eps of it."""
    np.testing.assert_array_equal(got_core, ref_core)
    assert_same_partition(got[got_core], ref[ref_core])
    np.testing.assert_array_equal(got == -1, ref == -1)
    coo = sp.csr_array(D).tocoo()
    c, b = coo.coords
    core = np.zeros(len(got), dtype=bool)
    core[got_core] = True
    # (c, b) stored within eps, c core, b not: b may take c's cluster
    link = core[c] & ~core[b] & (coo.data <= np.float32(eps)) & (got[c] == got[b])
    next_to_its_cluster = np.zeros(len(got), dtype=bool)
    next_to_its_cluster[b[link]] = True
    border = ~core & (got >= 0)
    assert next_to_its_cluster[border].all(), "a border point is not next to its cluster"


@cache
def jaccard_graph(n, d, k1, k2, seed=0, max_distance=None):
    X, _ = aas.datasets.make_reid_blobs(n, d=d, seed=seed)
    return aas.k_reciprocal_jaccard(X, k1=k1, k2=k2, max_distance=max_distance)


# ---------------------------------------------------------------- toys


def test_hand_worked_six_points():
    # eps = 0.5, min_samples = 3 (the point itself included):
    #   0: {0, 1, 2} core      1: {1, 0, 2} core      2: {2, 0, 1, 3} core
    #   3: {3, 2} border (d(2, 3) = 0.5 = eps counts)
    #   4: {4, 5} and 5: {5, 4}: not core, no core neighbour (d(3, 4) = 0.6) -> noise
    D = graph_from_edges(
        6, [(0, 1, 0.2), (0, 2, 0.3), (1, 2, 0.4), (2, 3, 0.5), (3, 4, 0.6), (4, 5, 0.1)]
    )
    est = aas.DBSCAN(eps=0.5, min_samples=3).fit(D)
    assert est.labels_.tolist() == [0, 0, 0, 0, -1, -1]
    assert est.core_sample_indices_.tolist() == [0, 1, 2]
    assert est.n_clusters_ == 1
    assert est.n_features_in_ == 6
    # min_samples = 2 makes 4 and 5 a second cluster, and 3 core
    assert aas.dbscan(D, eps=0.5, min_samples=2).tolist() == [0, 0, 0, 0, 1, 1]
    # eps = 0.6 links 3 and 4
    assert aas.dbscan(D, eps=0.6, min_samples=2).tolist() == [0] * 6


def test_border_point_between_two_clusters_joins_the_smaller_label():
    # cliques {0, 1, 2, 3} and {5, 6, 7, 8}; 4 touches 3 and 5 but has only
    # 3 points in its neighbourhood, so it is a border point of both.
    def clique(a):
        return [(i, j, 0.1) for i in a for j in a if i < j]

    D = graph_from_edges(9, clique(range(4)) + clique(range(5, 9)) + [(3, 4, 0.2), (4, 5, 0.2)])
    labels = aas.dbscan(D, eps=0.3, min_samples=4)
    assert labels.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    # reversed order: the right clique now holds the smaller core points
    p = np.arange(9)[::-1]
    labels = aas.dbscan(D[p][:, p], eps=0.3, min_samples=4)
    assert labels.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    np.testing.assert_array_equal(labels, sklearn_dbscan(D[p][:, p], 0.3, 4)[0])


def test_clusters_are_numbered_by_their_smallest_core_point():
    # point 0 is a border point of the cluster whose smallest core point is 3;
    # the cluster {1, 2, 4, 5}... is numbered by its core points, as sklearn does.
    D = graph_from_edges(
        7,
        [(0, 3, 0.1), (3, 5, 0.1), (5, 6, 0.1), (3, 6, 0.1), (1, 2, 0.1), (2, 4, 0.1), (1, 4, 0.1)],
    )
    labels = aas.dbscan(D, eps=0.2, min_samples=3)
    assert labels.tolist() == [1, 0, 0, 1, 0, 1, 1]
    np.testing.assert_array_equal(labels, sklearn_dbscan(D, 0.2, 3)[0])


def test_self_is_counted_once_whether_or_not_the_diagonal_is_stored():
    edges = [(0, 1, 0.1), (1, 2, 0.1)]
    for diagonal in (False, True):
        D = graph_from_edges(3, edges, diagonal=diagonal)
        assert aas.dbscan(D, eps=0.2, min_samples=3).tolist() == [0, 0, 0]
        assert aas.DBSCAN(eps=0.2, min_samples=3).fit(D).core_sample_indices_.tolist() == [1]


def test_a_stored_diagonal_above_eps_still_counts_self():
    # Known difference: sklearn keeps a stored diagonal value, so a point whose
    # stored self-distance exceeds eps is not its own neighbour there. Here a
    # point is always its own neighbour (its distance to itself is 0).
    D = sp.csr_array(np.array([[0.9, 0.1, 0.1], [0.1, 0, 0.1], [0.1, 0.1, 0]], np.float32))
    assert aas.DBSCAN(eps=0.5, min_samples=3).fit(D).core_sample_indices_.tolist() == [0, 1, 2]
    assert sklearn_dbscan(D, 0.5, 3)[1].tolist() == [1, 2]


def test_stored_zeros_are_neighbours_and_absent_entries_never_are():
    D = graph_from_edges(4, [(0, 1, 0.0), (2, 3, 0.9)])
    assert D.nnz == 4
    assert aas.dbscan(D, eps=0.0, min_samples=2).tolist() == [0, 0, -1, -1]
    # eps >= 1: stored entries count, absent ones (distance 1 in the Jaccard graph) do not
    assert aas.dbscan(D, eps=5.0, min_samples=2).tolist() == [0, 0, 1, 1]
    assert aas.dbscan(D, eps=5.0, min_samples=3).tolist() == [-1] * 4
    # a dense array stores every entry
    dense = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0.9], [1, 1, 0.9, 0]], np.float32)
    assert aas.dbscan(dense, eps=1.0, min_samples=4).tolist() == [0] * 4


def test_eps_is_compared_in_float32_like_sklearn():
    d = np.float32(0.6)  # 0.60000002 > 0.6 in float64
    D = graph_from_edges(2, [(0, 1, d)])
    assert aas.dbscan(D, eps=0.6, min_samples=2).tolist() == [0, 0]
    np.testing.assert_array_equal(sklearn_dbscan(D, 0.6, 2)[0], [0, 0])


def test_degenerate_sizes():
    assert aas.dbscan(sp.csr_array((1, 1), dtype=np.float32), min_samples=1).tolist() == [0]
    assert aas.dbscan(sp.csr_array((1, 1), dtype=np.float32), min_samples=2).tolist() == [-1]
    assert aas.dbscan(sp.csr_array((5, 5), dtype=np.float32)).tolist() == [-1] * 5
    same = np.zeros((5, 5), dtype=np.float32)  # all points identical
    assert aas.dbscan(same, min_samples=5).tolist() == [0] * 5


# ---------------------------------------------------------------- sklearn parity


@pytest.mark.parametrize(
    "n, d, k1, k2, max_distance, eps, min_samples",
    [
        (600, 2048, 30, 6, None, 0.4, 4),
        (600, 2048, 30, 6, None, 0.5, 4),
        (600, 2048, 30, 6, None, 0.6, 4),
        (600, 2048, 30, 6, 0.7, 0.62, 4),
        (600, 2048, 30, 6, None, 0.7, 2),
        (300, 32, 10, 3, None, 0.7, 4),
        (300, 32, 10, 3, None, 0.8, 6),
        (300, 32, 10, 3, 0.9, 0.95, 1),
    ],
)
def test_matches_sklearn_on_jaccard_graphs(n, d, k1, k2, max_distance, eps, min_samples):
    D = jaccard_graph(n, d, k1, k2, max_distance=max_distance)
    est = aas.DBSCAN(eps=eps, min_samples=min_samples).fit(D)
    ref, ref_core = sklearn_dbscan(D, eps, min_samples)
    assert_dbscan_equivalent(est.labels_, est.core_sample_indices_, ref, ref_core, D, eps)
    # for a symmetric graph the labels are sklearn's, numbering included
    np.testing.assert_array_equal(est.labels_, ref)


@st.composite
def symmetric_graphs(draw):
    n = draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    density = draw(st.floats(0.0, 0.6))
    rng = np.random.default_rng(seed)
    upper = np.triu(rng.random((n, n)) < density, k=1)
    values = np.round(rng.random((n, n)) * 20) / 20  # a grid, so that ties with eps occur
    i, j = np.nonzero(upper)
    rows, cols = np.concatenate([i, j]), np.concatenate([j, i])
    vals = np.concatenate([values[i, j], values[i, j]]).astype(np.float32)
    if draw(st.booleans()):  # store the diagonal as explicit zeros
        rows = np.concatenate([rows, np.arange(n)])
        cols = np.concatenate([cols, np.arange(n)])
        vals = np.concatenate([vals, np.zeros(n, np.float32)])
    return sp.csr_array((vals, (rows, cols)), shape=(n, n))


@settings(max_examples=60, deadline=None)
@given(
    D=symmetric_graphs(),
    eps=st.sampled_from([0.05, 0.2, 0.35, 0.5, 0.8, 1.0]),
    min_samples=st.integers(1, 6),
)
def test_matches_sklearn_on_random_symmetric_graphs(D, eps, min_samples):
    labels = aas.dbscan(D, eps=eps, min_samples=min_samples)
    ref, _ = sklearn_dbscan(D, eps, min_samples)
    np.testing.assert_array_equal(labels, ref)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), eps=st.sampled_from([0.2, 0.5]))
def test_non_symmetric_graphs_have_sklearn_core_points_and_noise(seed, eps):
    rng = np.random.default_rng(seed)
    n = 30
    dense = np.where(rng.random((n, n)) < 0.2, rng.random((n, n)), 0).astype(np.float32)
    np.fill_diagonal(dense, 0)  # see test_a_stored_diagonal_above_eps_still_counts_self
    D = sp.csr_array(dense)
    est = aas.DBSCAN(eps=eps, min_samples=3).fit(D)
    ref, ref_core = sklearn_dbscan(D, eps, 3)
    np.testing.assert_array_equal(est.core_sample_indices_, ref_core)
    np.testing.assert_array_equal(est.labels_ == -1, ref == -1)


def test_dense_input_matches_sklearn_dense():
    D = aas.to_dense_distance(jaccard_graph(300, 32, 10, 3))
    for eps in (0.7, 1.0):
        ref, _ = sklearn_dbscan(D, eps, 4)
        np.testing.assert_array_equal(aas.dbscan(D, eps=eps), ref)


# ---------------------------------------------------------------- properties


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_permutation_equivariance(seed):
    D = jaccard_graph(600, 2048, 30, 6)
    eps = 0.5
    p = np.random.default_rng(seed).permutation(D.shape[0])
    Dp = D[p][:, p]
    base = aas.DBSCAN(eps=eps).fit(D)
    perm = aas.DBSCAN(eps=eps).fit(Dp)
    core = np.zeros(D.shape[0], dtype=bool)
    core[base.core_sample_indices_] = True
    np.testing.assert_array_equal(np.sort(p[perm.core_sample_indices_]), base.core_sample_indices_)
    # labels of the permuted graph, moved back to the original order
    back = np.empty_like(perm.labels_)
    back[p] = perm.labels_
    assert_dbscan_equivalent(
        back, np.flatnonzero(core), base.labels_, base.core_sample_indices_, D, eps
    )


def test_thread_count_does_not_change_the_labels():
    D = jaccard_graph(600, 2048, 30, 6)
    for eps in (0.4, 0.6):
        one = aas.dbscan(D, eps=eps, n_threads=1)
        np.testing.assert_array_equal(one, aas.dbscan(D, eps=eps, n_threads=2))
        np.testing.assert_array_equal(one, aas.dbscan(D, eps=eps, n_threads=-1))


def test_several_eps_in_one_pass_equal_separate_runs():
    D = jaccard_graph(600, 2048, 30, 6)
    eps = np.array([0.58, 0.6, 0.62])
    labels, is_core = _core.dbscan_csr(
        D.indptr.astype(np.int64), D.indices.astype(np.int32), D.data, eps, 4, 2
    )
    assert labels.shape == is_core.shape == (3, 600)
    for e, row, core in zip(eps, labels, is_core):
        est = aas.DBSCAN(eps=float(e)).fit(D)
        np.testing.assert_array_equal(row, est.labels_)
        np.testing.assert_array_equal(np.flatnonzero(core), est.core_sample_indices_)


# ---------------------------------------------------------------- input forms


def test_sparse_formats_dtypes_and_unsorted_rows_give_the_same_labels():
    D = jaccard_graph(300, 32, 10, 3)
    ref = aas.dbscan(D, eps=0.7)
    assert ref.dtype == np.int64 and ref.max() >= 1
    variants = [
        sp.csr_matrix(D),
        D.tocoo(),
        D.tocsc(),
        D.astype(np.float64),
        sp.csr_array(
            (D.data, D.indices.astype(np.int64), D.indptr.astype(np.int64)), shape=D.shape
        ),
    ]
    # the same rows with their columns reversed (unsorted)
    order = np.concatenate([np.arange(a, b)[::-1] for a, b in zip(D.indptr[:-1], D.indptr[1:])])
    unsorted = sp.csr_array((D.data[order], D.indices[order], D.indptr.copy()), shape=D.shape)
    variants.append(unsorted)
    for v in variants:
        np.testing.assert_array_equal(aas.dbscan(v, eps=0.7), ref)


def test_input_is_not_modified():
    D = jaccard_graph(300, 32, 10, 3)
    order = np.concatenate([np.arange(a, b)[::-1] for a, b in zip(D.indptr[:-1], D.indptr[1:])])
    inputs = [
        D.astype(np.float64),
        sp.csr_array((D.data[order], D.indices[order], D.indptr.copy()), shape=D.shape),
        D.tocoo(),
    ]
    for g in inputs:
        before = [a.copy() for a in _arrays(g)]
        aas.dbscan(g, eps=0.7)
        aas.spcl_pseudo_labels(g, eps=0.7)
        for a, b in zip(_arrays(g), before):
            np.testing.assert_array_equal(a, b)
    dense = aas.to_dense_distance(D)
    keep = dense.copy()
    aas.dbscan(dense, eps=0.7)
    np.testing.assert_array_equal(dense, keep)


def _arrays(g):
    if g.format == "coo":
        return [g.data, *g.coords]
    return [g.data, g.indices, g.indptr]


# ---------------------------------------------------------------- estimator API


def test_estimator_api_follows_sklearn():
    est = aas.DBSCAN(0.5, min_samples=3)
    assert est.get_params() == {"eps": 0.5, "min_samples": 3, "n_threads": None}
    assert repr(est) == "DBSCAN(eps=0.5, min_samples=3, n_threads=None)"
    assert est.set_params(eps=0.7) is est and est.eps == 0.7
    assert not hasattr(est, "labels_")
    D = jaccard_graph(300, 32, 10, 3)
    assert est.fit(D) is est
    np.testing.assert_array_equal(est.fit_predict(D), est.labels_)
    assert est.core_sample_indices_.dtype == np.int64
    clone = pytest.importorskip("sklearn.base").clone
    c = clone(est)
    assert c.get_params() == est.get_params() and not hasattr(c, "labels_")
    with pytest.raises(ValueError, match="Invalid parameter 'epsilon'"):
        est.set_params(epsilon=1)
    with pytest.raises(TypeError):
        aas.DBSCAN(0.5, 3)  # min_samples is keyword-only


# ---------------------------------------------------------------- bad input

GOOD = graph_from_edges(4, [(0, 1, 0.1), (2, 3, 0.2)])


@pytest.mark.parametrize(
    "D, kwargs, error, match",
    [
        (sp.csr_array((3, 4), dtype=np.float32), {}, ValueError, r"'D' must be a square"),
        (np.zeros((2, 3), np.float32), {}, ValueError, r"square .* got shape \(2, 3\)"),
        (sp.csr_array((0, 0), dtype=np.float32), {}, ValueError, "n >= 1"),
        (np.zeros(3, np.float32), {}, ValueError, r"'D' must be a 2-D .* got 1-D"),
        (np.zeros((2, 2, 2), np.float32), {}, ValueError, "got 3-D"),
        ([[0.0, 1.0], [1.0, 0.0]], {}, TypeError, "got list"),
        ("graph", {}, TypeError, "got str"),
        (sp.csr_array(np.eye(3, dtype=np.int64)), {}, TypeError, "floating-point .* int64"),
        (np.eye(3, dtype=bool), {}, TypeError, "floating-point .* bool"),
        (graph_from_edges(3, [(0, 1, -0.5)]), {}, ValueError, "distances >= 0; got .*-0.5"),
        (np.eye(3, dtype=np.complex64), {}, ValueError, "'D' .* Complex data not supported"),
        # dense NaN is reported before a wrong shape (as scikit-learn's checks expect)
        (np.full((2, 3), np.nan, np.float32), {}, ValueError, "'D' contains NaN"),
        (np.zeros((4, 0), np.float32), {}, ValueError, r"got 0 feature\(s\) \(shape=\(4, 0\)\)"),
        (graph_from_edges(3, [(0, 1, np.nan)]), {}, ValueError, "NaN or inf"),
        (graph_from_edges(3, [(0, 1, np.inf)], dtype=np.float64), {}, ValueError, "NaN or inf"),
        (GOOD, {"eps": -0.1}, ValueError, r"'eps' parameter of dbscan must be a float in \[0, "),
        (GOOD, {"eps": float("nan")}, ValueError, "'eps' parameter of dbscan"),
        (GOOD, {"eps": "0.5"}, TypeError, "'eps' parameter of dbscan must be a float; got '0.5'"),
        (GOOD, {"min_samples": 0}, ValueError, r"'min_samples' parameter .* got 0"),
        (GOOD, {"min_samples": 2.5}, TypeError, "'min_samples' parameter .* must be an int"),
        (GOOD, {"min_samples": True}, TypeError, "'min_samples' parameter"),
        (GOOD, {"n_threads": 0}, ValueError, "'n_threads' parameter"),
    ],
)
def test_bad_input_is_named_in_the_error(D, kwargs, error, match):
    with pytest.raises(error, match=match):
        aas.dbscan(D, **kwargs)


def test_estimator_validates_in_fit():
    est = aas.DBSCAN(eps=-1)  # __init__ stores only
    with pytest.raises(ValueError, match="'eps' parameter of DBSCAN"):
        est.fit(GOOD)


def test_broken_csr_structures_are_rejected():
    data = np.ones(2, np.float32) * 0.1
    bad_col = sp.csr_array((data, np.array([0, 7], np.int32), np.array([0, 1, 2, 2])), shape=(3, 3))
    with pytest.raises(ValueError, match=r"column indices outside \[0, 2\]"):
        aas.dbscan(bad_col)
    dup = sp.csr_array((data, np.array([1, 1], np.int32), np.array([0, 2, 2, 2])), shape=(3, 3))
    with pytest.raises(ValueError, match="duplicate entries"):
        aas.dbscan(dup)


def test_the_kernel_checks_again():
    indptr = np.array([0, 1, 2], np.int64)
    data = np.array([0.1, 0.1], np.float32)
    eps = np.array([0.5])
    ok = _core.dbscan_csr(indptr, np.array([1, 0], np.int32), data, eps, 2, 1)
    assert ok[0].tolist() == [[0, 0]]
    cases = [
        (indptr, np.array([1, 5], np.int32), data, eps, 2, "outside \\[0, 2\\)"),
        (np.array([0, 2, 1], np.int64), np.array([1, 0], np.int32), data, eps, 2, "non-decreasing"),
        (
            np.array([1, 1, 2], np.int64),
            np.array([1, 0], np.int32),
            data,
            eps,
            2,
            r"indptr\[0\] must be 0",
        ),
        (np.array([0, 1, 3], np.int64), np.array([1, 0], np.int32), data, eps, 2, "does not fit"),
        (indptr, np.array([1, 0], np.int32), np.array([0.1, -1], np.float32), eps, 2, ">= 0"),
        (indptr, np.array([1, 0], np.int32), data, np.array([-0.5]), 2, "eps must be"),
        (indptr, np.array([1, 0], np.int32), data, eps, 0, "min_samples"),
    ]
    for ip, ix, d, e, ms, msg in cases:
        with pytest.raises(ValueError, match=msg):
            _core.dbscan_csr(ip, ix, d, e, ms, 1)
    with pytest.raises(TypeError):  # no silent conversion of int32 row pointers
        _core.dbscan_csr(indptr.astype(np.int32), np.array([1, 0], np.int32), data, eps, 2, 1)
