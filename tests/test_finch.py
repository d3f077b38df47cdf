import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import aas_core as aas
from aas_core import _core
from aas_core.cluster import FINCH, FinchResult, closest_partition, finch
from conftest import assert_same_partition


def _reference_finch():
    with warnings.catch_warnings():  # finch-clust warns at import when pynndescent is absent
        warnings.simplefilter("ignore")
        mod = pytest.importorskip("finch.finch")
    return mod.FINCH


def _angles(deg):
    a = np.deg2rad(np.asarray(deg, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)


# ---------------------------------------------------------------- hand-worked toys


def test_link_covers_the_three_first_neighbour_relations():
    # κ: 0→1, 1→0 (mutual), 2→1 (shares... links to 1), 3→4, 5→4 (κ(3)=κ(5)), 4→3
    labels, c = _core.finch_link(np.array([1, 0, 1, 4, 3, 4], dtype=np.int64))
    assert c == 2
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]
    labels, c = _core.finch_link(np.array([3, 2, 1, 0], dtype=np.int64))
    assert labels.tolist() == [0, 1, 1, 0]  # numbered by smallest member
    assert c == 2


def test_points_on_a_circle_two_tight_pairs_and_a_chain():
    # angles: a tight pair at 0/2°, another at 90/92°, and a chain 180, 185, 191, 198
    # whose first neighbours are 185→180, 180→185, 191→185, 198→191.
    X = _angles([0, 2, 90, 92, 180, 185, 191, 198])
    r = finch(X)
    assert r.labels[:, 0].tolist() == [0, 0, 1, 1, 2, 2, 2, 2]
    assert r.n_clusters[0] == 3
    # Level 1: means at 1°, 91° and ~188.5°; 1° and 91° are mutual first
    # neighbours (90° apart), 188.5° is 97.5° from 91° -> everything merges,
    # which is a single cluster and therefore dropped.
    assert r.n_clusters == [3]
    assert r.labels.shape == (8, 1) and r.labels.dtype == np.int64


def test_second_level_is_computed_from_cluster_means():
    # Four pairs at 0°, 40°, 180°, 220° (each pair 1° wide): level 0 gives 4
    # clusters; their means pair up (0,40) and (180,220): level 1 has 2.
    X = _angles([0, 1, 40, 41, 180, 181, 220, 221])
    r = finch(X)
    assert r.n_clusters == [4, 2]
    assert r.labels[:, 0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert r.labels[:, 1].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_two_points_give_one_level_with_one_cluster():
    r = finch(np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32))
    assert r.n_clusters == [1]
    assert r.labels.tolist() == [[0], [0]]


def test_identical_points_form_one_cluster():
    r = finch(np.ones((6, 3), dtype=np.float32))
    assert r.n_clusters == [1]
    assert np.all(r.labels == 0)


def test_partitions_are_nested_and_counts_strictly_fall():
    X, _ = aas.datasets.make_reid_blobs(600, d=32, seed=3)
    r = finch(X)
    assert r.labels.shape == (600, r.n_levels)
    assert all(a > b for a, b in zip(r.n_clusters, r.n_clusters[1:]))
    for p in range(r.n_levels):
        col = r.labels[:, p]
        assert col.max() + 1 == r.n_clusters[p] == len(np.unique(col))
        first = np.unique(col, return_index=True)[1]
        assert np.all(np.diff(first) > 0)  # labels ordered by smallest member
        if p:
            pairs = np.unique(r.labels[:, p - 1 : p + 1], axis=0)
            assert len(pairs) == r.n_clusters[p - 1]  # each finer cluster in one coarser


def test_cluster_directions_are_normalised_weighted_sums():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 700)).astype(np.float32)
    w = rng.uniform(0.5, 2.0, 50)
    lab = rng.integers(0, 7, 50).astype(np.int64)
    dirs, norms = _core.cluster_directions(x, w, lab, 8, 2)  # label 7 is empty
    ref = np.zeros((8, 700))
    np.add.at(ref, lab, w[:, None] * x.astype(np.float64))
    np.testing.assert_allclose(norms, np.linalg.norm(ref, axis=1), rtol=1e-12)
    assert dirs.dtype == np.float32 and norms.dtype == np.float64
    np.testing.assert_allclose(dirs[:7], ref[:7] / norms[:7, None], atol=1e-6)
    assert np.all(dirs[7] == 0) and norms[7] == 0
    # sums of sums: the next level sums norm × direction
    up = np.array([0, 0, 1, 1, 1, 2, 2, 2], dtype=np.int64)
    d2, n2 = _core.cluster_directions(dirs, norms, up, 3, 1)
    np.testing.assert_allclose(n2[1] * d2[1], ref[2:5].sum(0), atol=1e-5)
    np.testing.assert_array_equal(_core.cluster_directions(x, w, lab, 8, 1)[0], dirs)


def test_core_rejects_bad_first_neighbours_and_labels():
    with pytest.raises(ValueError, match="its own first neighbour"):
        _core.finch_link(np.array([1, 1], dtype=np.int64))
    with pytest.raises(ValueError, match="outside"):
        _core.finch_link(np.array([1, 2], dtype=np.int64))
    with pytest.raises(ValueError, match="outside"):
        _core.cluster_directions(
            np.ones((2, 2), np.float32), np.ones(2), np.array([0, 3], np.int64), 2, 1
        )
    with pytest.raises(TypeError):
        _core.finch_link(np.array([1, 0], dtype=np.int32))  # noconvert


# ---------------------------------------------------------------- parity with finch-clust


def _assert_matches_reference(X):
    ref_finch = _reference_finch()
    n = len(X)
    r = finch(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c, nc, _ = ref_finch(
            X, distance="cosine", ensure_early_exit=False, ann_threshold=n + 1, verbose=False
        )
    common = min(r.n_levels, c.shape[1])
    assert common >= 1
    assert r.n_clusters[:common] == list(nc)[:common]
    for p in range(common):
        assert_same_partition(r.labels[:, p], c[:, p])
    # same stopping rule in practice (see the docstring)
    assert r.n_levels == c.shape[1]


@pytest.mark.parametrize("n, seed", [(300, 0), (1000, 1), (2000, 2), (700, 5)])
def test_matches_finch_clust_on_reid_blobs(n, seed):
    X, _ = aas.datasets.make_reid_blobs(n, d=64, seed=seed)
    _assert_matches_reference(X)


@pytest.mark.parametrize("n, d, seed", [(500, 8, 0), (1500, 16, 1), (800, 3, 2), (1000, 64, 0)])
def test_matches_finch_clust_on_normalised_gaussians(n, d, seed):
    G = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    G /= np.linalg.norm(G, axis=1, keepdims=True)
    _assert_matches_reference(G)


# ---------------------------------------------------------------- equivalences


@pytest.fixture(scope="module")
def blobs800():
    X, _ = aas.datasets.make_reid_blobs(800, d=48, seed=11)
    return X


@pytest.mark.parametrize("k, include_self", [(2, True), (10, True), (1, False), (5, False)])
def test_graph_input_equals_features_input(blobs800, k, include_self):
    g = aas.knn_graph(blobs800, k, include_self=include_self)
    a, b = finch(blobs800), finch(g)
    assert a.n_clusters == b.n_clusters
    np.testing.assert_array_equal(a.labels, b.labels)


def test_thread_count_does_not_change_the_result(blobs800):
    a, b = finch(blobs800, n_threads=1), finch(blobs800, n_threads=2)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.n_clusters == b.n_clusters


def test_float64_and_unnormalised_input(blobs800):
    a = finch(blobs800)
    b = finch((blobs800 * 3.0).astype(np.float64))
    np.testing.assert_array_equal(a.labels, b.labels)


_PERM_X, _ = aas.datasets.make_reid_blobs(60, d=16, seed=4)


@settings(max_examples=25, deadline=None)
@given(perm=st.permutations(range(60)))
def test_labels_equivariant_under_row_permutation(perm):
    p = np.asarray(perm)
    a = finch(_PERM_X)
    b = finch(_PERM_X[p])
    assert a.n_clusters == b.n_clusters
    for level in range(a.n_levels):
        assert_same_partition(a.labels[p, level], b.labels[:, level])


# ---------------------------------------------------------------- closest_partition, estimator


def test_closest_partition_picks_the_nearest_count_and_the_finer_on_ties():
    r = FinchResult(labels=np.zeros((3, 4), dtype=np.int64), n_clusters=[100, 30, 10, 2])
    assert closest_partition(r, 1000) == 0
    assert closest_partition(r, 31) == 1
    assert closest_partition(r, 20) == 1  # |30-20| == |10-20|: the finer level
    assert closest_partition(r, 7) == 2
    assert closest_partition(r, 1) == 3
    with pytest.raises(ValueError, match="'n_target' parameter"):
        closest_partition(r, 0)
    with pytest.raises(TypeError, match="'result'"):
        closest_partition([100, 30], 5)


def test_stop_at_clusters_returns_the_prefix_with_the_same_closest_level(blobs800):
    full = finch(aas.knn_graph(blobs800, 10))
    assert full.n_levels >= 3
    targets = [1, 2, full.n_clusters[-1], full.n_clusters[1], full.n_clusters[1] + 1]
    targets += [full.n_clusters[0] - 1, full.n_clusters[0], 10**6]
    for target in targets:
        part = finch(aas.knn_graph(blobs800, 10), stop_at_clusters=target)
        p = part.n_levels
        # the prefix of the full run, ending at the first level with <= target clusters
        assert part.n_clusters == full.n_clusters[:p]
        np.testing.assert_array_equal(part.labels, full.labels[:, :p])
        assert part.n_clusters[-1] <= target or p == full.n_levels
        assert all(c > target for c in part.n_clusters[:-1])
        assert closest_partition(part, target) == closest_partition(full, target)
    assert finch(blobs800, stop_at_clusters=10**6).n_levels == 1  # level 0 is always returned
    with pytest.raises(ValueError, match="'stop_at_clusters' parameter of finch"):
        finch(blobs800, stop_at_clusters=0)
    with pytest.raises(TypeError, match="'stop_at_clusters' parameter of finch"):
        finch(blobs800, stop_at_clusters=2.5)


def test_estimator_api(blobs800):
    r = finch(blobs800)
    est = FINCH()
    assert repr(est) == "FINCH(level=None, n_threads=None)"
    assert est.fit(blobs800) is est
    assert est.level_ == r.n_levels - 1
    np.testing.assert_array_equal(est.labels_, r.labels[:, -1])
    assert est.n_clusters_ == r.n_clusters[-1]
    assert est.n_features_in_ == blobs800.shape[1]
    np.testing.assert_array_equal(est.partitions_.labels, r.labels)
    np.testing.assert_array_equal(FINCH(level=0).fit_predict(blobs800), r.labels[:, 0])
    assert FINCH(level=-1).fit(blobs800).level_ == r.n_levels - 1
    assert est.set_params(level=1).get_params() == {"level": 1, "n_threads": None}
    with pytest.raises(ValueError, match="'level' parameter of FINCH"):
        FINCH(level=r.n_levels).fit(blobs800)
    with pytest.raises(TypeError, match="'level' parameter of FINCH"):
        FINCH(level=0.5).fit(blobs800)


def test_sklearn_clone_works():
    base = pytest.importorskip("sklearn.base")
    est = base.clone(FINCH(level=2, n_threads=1))
    assert est.get_params() == {"level": 2, "n_threads": 1}


def test_public_names():
    assert aas.finch is finch and aas.FINCH is FINCH and aas.FinchResult is FinchResult
    assert {"finch", "FINCH", "FinchResult"} <= set(aas.__all__)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "X, exc, msg",
    [
        (np.ones(5, dtype=np.float32), ValueError, "'X_or_graph' must be 2-D"),
        (np.ones((1, 3), dtype=np.float32), ValueError, "'X_or_graph' .* 2 rows; got 1 sample"),
        (np.ones((4, 0), dtype=np.float32), ValueError, r"0 feature\(s\) \(shape=\(4, 0\)\)"),
        (np.eye(3, dtype=np.complex64), ValueError, "'X_or_graph' .* Complex data not supported"),
        (sp.csr_array(np.eye(3, dtype=np.float32)), TypeError, "sparse input .* not supported"),
        (sp.dok_array(np.eye(3, dtype=np.float32)), TypeError, "sparse input .* not supported"),
        (np.array([[1, 0], [np.nan, 1], [0, 1]], dtype=np.float32), ValueError, "NaN"),
        (np.array([[1, 0], [0, 0], [0, 1]], dtype=np.float32), ValueError, "all zeros"),
        (np.ones((4, 2), dtype=np.int64), TypeError, "'X_or_graph' must be a floating-point"),
        ("abc", TypeError, "'X_or_graph' must be an"),
        (None, TypeError, "'X_or_graph' must be an"),
    ],
)
def test_bad_features_are_named_in_the_error(X, exc, msg):
    with pytest.raises(exc, match=msg):
        finch(X)


def test_graph_without_features_is_rejected(blobs800):
    g = aas.knn_graph(blobs800, 5)
    bare = aas.KNNGraph(indices=g.indices, sims=g.sims)
    with pytest.raises(ValueError, match="'X_or_graph' is a KNNGraph without features"):
        finch(bare)
    with pytest.raises(ValueError, match="KNNGraph without features"):
        FINCH().fit(bare)


def test_bad_graphs_are_rejected(blobs800):
    g = aas.knn_graph(blobs800, 3)
    with pytest.raises(ValueError, match="k >= 2"):
        finch(aas.KNNGraph(g.indices[:, :1].copy(), g.sims[:, :1].copy(), features=g.features))
    bad = g.indices.copy()
    bad[5, 1] = 900
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 799\]"):
        finch(aas.KNNGraph(bad, g.sims, features=g.features))
    # other integer / float dtypes are converted (a copy), as for X
    want = finch(g).labels
    got = finch(aas.KNNGraph(g.indices.astype(np.int32), g.sims, features=g.features))
    assert np.array_equal(got.labels, want)
    got = finch(aas.KNNGraph(g.indices, g.sims, features=g.features.astype(np.float64)))
    assert np.array_equal(got.labels, want)
    with pytest.raises(TypeError, match="indices must be an \\(n, k\\) integer array"):
        finch(aas.KNNGraph(g.indices.astype(np.float32), g.sims, features=g.features))
    with pytest.raises(TypeError, match="features must be an \\(800, d\\) float array"):
        finch(aas.KNNGraph(g.indices, g.sims, features=g.features[:10]))
    # a graph without self whose column 0 is (wrongly) self somewhere else
    ns = aas.knn_graph(blobs800, 3, include_self=False)
    bad = ns.indices.copy()
    bad[7, 0] = 7
    with pytest.raises(ValueError, match="own first neighbour"):
        finch(aas.KNNGraph(bad, ns.sims, features=ns.features))


def test_bad_n_threads():
    with pytest.raises(ValueError, match="'n_threads' parameter of finch"):
        finch(np.eye(3, dtype=np.float32), n_threads=0)


def test_inputs_are_not_modified(blobs800):
    X = (blobs800 * 2.0).astype(np.float32)
    X_copy = X.copy()
    finch(X)
    np.testing.assert_array_equal(X, X_copy)
    g = aas.knn_graph(blobs800, 4)
    idx, sims, f = g.indices.copy(), g.sims.copy(), g.features.copy()
    finch(g)
    np.testing.assert_array_equal(g.indices, idx)
    np.testing.assert_array_equal(g.sims, sims)
    np.testing.assert_array_equal(g.features, f)


def test_non_contiguous_input(blobs800):
    Xf = np.asfortranarray(blobs800)
    np.testing.assert_array_equal(finch(Xf).labels, finch(blobs800).labels)


# ---------------------------------------------------------------- bf16 first neighbours


def _bf16_cpu():
    from aas_core import _precision

    if not _precision._cpu_has_bf16():
        pytest.skip("this CPU has no AVX512-BF16 instructions")


def _tied_rows(seed):
    """Unit rows with exact duplicates, a zero row (a cluster whose sum cancels),
    near-ties one float step apart and a spread of ordinary rows."""
    rng = np.random.default_rng(seed)
    G = rng.standard_normal((300, 96)).astype(np.float32)
    G /= np.linalg.norm(G, axis=1, keepdims=True)
    G[10:14] = G[3]  # four copies of row 3: ties broken by the smaller index
    G[20] = 0.0
    G[30] = np.nextafter(G[31], np.float32(2))  # a near-tie with row 31
    return G


@pytest.mark.parametrize("seed", [0, 1])
def test_first_neighbours_are_the_same_through_bf16_and_fp32(monkeypatch, seed):
    from aas_core import _precision
    from aas_core.cluster.finch import _first_neighbours

    _bf16_cpu()
    G = _tied_rows(seed)
    calls = []
    search = _core.knn_graph_bf16
    monkeypatch.setattr(_core, "knn_graph_bf16", lambda *a: calls.append(a) or search(*a))
    bf16 = _first_neighbours(G, 2)
    assert len(calls) == 1  # the bf16 search ran
    monkeypatch.setattr(_precision, "_cpu_has_bf16", lambda: False)
    fp32 = _first_neighbours(G, 2)
    np.testing.assert_array_equal(bf16, fp32)
    assert bf16[3] == 10 and bf16[10] == 3  # copies: the smallest other index


def test_finch_is_the_same_through_bf16_and_fp32(monkeypatch):
    from aas_core import _precision

    _bf16_cpu()
    X, _ = aas.datasets.make_reid_blobs(3000, d=256, seed=4)
    g = aas.knn_graph(X, 10)
    bf16_graph, bf16_features = finch(g), finch(X)
    monkeypatch.setattr(_precision, "_cpu_has_bf16", lambda: False)
    for ours in (bf16_graph, bf16_features):
        for ref in (finch(g), finch(X)):
            assert ours.n_clusters == ref.n_clusters
            np.testing.assert_array_equal(ours.labels, ref.labels)
