import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aas_core as aas
from aas_core import _core
from aas_core.neighbors import _knn_blas, normalize_rows


def brute_force(X, k, include_self):
    """Self first (if asked), then similarity descending, ties to the smaller index."""
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    S = np.clip(Xn.astype(np.float64) @ Xn.T.astype(np.float64), -1, 1)
    n = len(X)
    out = np.empty((n, k), dtype=np.int64)
    for i in range(n):
        others = np.array([j for j in range(n) if j != i])
        order = others[np.lexsort((others, -S[i, others]))]
        out[i] = np.concatenate([[i], order])[:k] if include_self else order[:k]
    return out


def test_toy_from_the_docstring():
    X = np.array([[1, 0], [0.9, 0.1], [0, 1]], dtype=np.float32)
    g = aas.knn_graph(X, 2)
    assert g.indices.tolist() == [[0, 1], [1, 0], [2, 1]]
    assert g.sims[:, 0].tolist() == [1, 1, 1]
    np.testing.assert_allclose(g.sims[2, 1], 0.1 / np.hypot(0.9, 0.1), rtol=1e-6)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("include_self", [True, False])
def test_matches_brute_force_on_random_data(seed, include_self):
    rng = np.random.default_rng(seed)
    n, d = 150 + 37 * seed, 8 + 4 * seed
    X = rng.standard_normal((n, d)).astype(np.float32)
    k = 12
    g = aas.knn_graph(X, k, include_self=include_self)
    np.testing.assert_array_equal(g.indices, brute_force(X, k, include_self))
    assert g.indices.dtype == np.int64 and g.sims.dtype == np.float32
    assert np.all(np.diff(g.sims, axis=1) <= 0)


@pytest.mark.parametrize("block", [1, 7, 64])
def test_tiling_does_not_change_the_result(block):
    X, _ = aas.datasets.make_reid_blobs(130, d=16, seed=3)
    ref = _knn_blas(X, 9, True, 2, block=4096)
    got = _knn_blas(X, 9, True, 2, block=block)
    np.testing.assert_array_equal(got[0], ref[0])
    # BLAS rounds differently for other tile shapes; the dot_fma re-rank does not
    np.testing.assert_array_equal(got[1], ref[1])


def test_ties_go_to_the_smaller_index_and_self_stays_first():
    base = np.eye(4, dtype=np.float32)
    X = np.concatenate([base, base, base])  # every row has two exact duplicates
    g = aas.knn_graph(X, 4)
    assert g.indices[0].tolist() == [0, 4, 8, 1]
    assert g.indices[8].tolist() == [8, 0, 4, 1]
    assert g.sims[8, :3].tolist() == [1, 1, 1]
    g2 = aas.knn_graph(X, 3, include_self=False)
    assert g2.indices[4].tolist() == [0, 8, 1]


def test_k_equal_n_minus_one_lists_everything():
    X, _ = aas.datasets.make_reid_blobs(20, d=8, seed=1)
    g = aas.knn_graph(X, 19, include_self=False)
    for i in range(20):
        assert sorted(g.indices[i].tolist()) == [j for j in range(20) if j != i]
    g = aas.knn_graph(X[:2], 1, include_self=False)
    assert g.indices.tolist() == [[1], [0]]


def test_thread_count_does_not_change_the_result():
    X, _ = aas.datasets.make_reid_blobs(700, d=32, seed=2)
    a = aas.knn_graph(X, 15, n_threads=1)
    b = aas.knn_graph(X, 15, n_threads=2)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.sims, b.sims)


def test_input_is_not_modified_and_other_layouts_agree():
    rng = np.random.default_rng(0)
    X64 = rng.standard_normal((90, 12))  # float64, not unit norm
    before = X64.copy()
    g64 = aas.knn_graph(X64, 6)
    np.testing.assert_array_equal(X64, before)
    X32 = (X64 / np.linalg.norm(X64, axis=1, keepdims=True)).astype(np.float32)
    g32 = aas.knn_graph(X32, 6)
    np.testing.assert_array_equal(g64.indices, g32.indices)
    Xf = np.asfortranarray(X32)
    np.testing.assert_array_equal(aas.knn_graph(Xf, 6).indices, g32.indices)
    strided = np.zeros((90, 24), dtype=np.float32)
    strided[:, ::2] = X32
    np.testing.assert_array_equal(aas.knn_graph(strided[:, ::2], 6).indices, g32.indices)


def test_normalize_rows_returns_the_same_array_when_already_unit():
    X, _ = aas.datasets.make_reid_blobs(30, d=8, seed=0)
    assert normalize_rows(X) is X
    Y = 3 * X
    np.testing.assert_allclose(np.linalg.norm(normalize_rows(Y), axis=1), 1, rtol=1e-6)
    np.testing.assert_array_equal(Y, 3 * X)


def test_faiss_backend_agrees_when_installed():
    pytest.importorskip("faiss")
    X, _ = aas.datasets.make_reid_blobs(300, d=32, seed=4)
    a = aas.knn_graph(X, 10)
    b = aas.knn_graph(X, 10, backend="faiss")
    assert (a.indices == b.indices).mean() > 0.999


@settings(max_examples=20, deadline=None)
@given(perm=st.permutations(list(range(40))))
def test_equivariant_under_row_permutation(perm):
    X, _ = aas.datasets.make_reid_blobs(40, d=16, seed=5)
    p = np.asarray(perm)
    g = aas.knn_graph(X, 5)
    gp = aas.knn_graph(X[p], 5)
    # row r of the permuted graph is original row p[r]; its neighbours q are p[q]
    np.testing.assert_array_equal(p[gp.indices], g.indices[p])


@pytest.mark.parametrize(
    "X, k, kwargs, exc, match",
    [
        (np.ones(5, dtype=np.float32), 1, {}, ValueError, "must be 2-D"),
        (np.ones((1, 3), dtype=np.float32), 1, {}, ValueError, "at least 2 rows"),
        (np.eye(4, dtype=np.float32), 4, {}, ValueError, "'k' parameter"),
        (np.eye(4, dtype=np.float32), 0, {}, ValueError, "'k' parameter"),
        (np.eye(4, dtype=np.float32), 2.0, {}, TypeError, "'k' parameter"),
        (np.eye(4, dtype=np.int64), 2, {}, TypeError, "floating-point"),
        (
            np.array([[1, 0], [np.nan, 1], [0, 1]], dtype=np.float32),
            1,
            {},
            ValueError,
            "NaN or inf",
        ),
        (np.array([[1, 0], [0, 0], [0, 1]], dtype=np.float32), 1, {}, ValueError, "all zeros"),
        (np.eye(4, dtype=np.float32), 2, {"backend": "gpu"}, ValueError, "'backend' parameter"),
        (np.eye(4, dtype=np.float32), 2, {"include_self": 1}, TypeError, "'include_self'"),
        (np.eye(4, dtype=np.float32), 2, {"n_threads": 0}, ValueError, "'n_threads' parameter"),
    ],
)
def test_bad_input_names_the_argument(X, k, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        aas.knn_graph(X, k, **kwargs)


@pytest.mark.parametrize(
    "where", [(0, 0), (-1, -1), (131071, 7), (131072, 0)], ids=str
)  # the first, the last, and either side of the first 2**20-element block's end
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_all_finite_finds_a_bad_value_in_any_block(where, bad):
    from aas_core._validation import all_finite

    X = np.ones(((1 << 20) // 8 * 3 + 5, 8), dtype=np.float32)
    assert all_finite(X) and all_finite(X[:, ::3]) and all_finite(X[:0])
    X[where] = bad
    assert not all_finite(X)
    assert not all_finite(np.asfortranarray(X))
    with pytest.raises(ValueError, match="row"):
        aas.knn_graph(X, 2)


def _merge_reference(S, cap):
    """Each row's top `cap` of a symmetric similarity matrix (self excluded), in the
    heap's order (similarity clamped to [-1, 1] descending, then index ascending; NaN
    never kept)."""
    n = S.shape[0]
    out = []
    for i in range(n):
        cand = [(max(min(float(S[i, j]), 1.0), -1.0), j) for j in range(n) if j != i]
        cand = [(s, j) for s, j in cand if s == s]
        cand.sort(key=lambda t: (-t[0], t[1]))
        out.append(cand[:cap])
    return out


@pytest.mark.parametrize("cap", [1, 5, 40])
@pytest.mark.parametrize("block", [1000, 70, 33])
def test_merge_tiles_keep_each_rows_top_cap_with_ties_nan_and_out_of_range(cap, block):
    # values on a coarse grid (many ties), NaN, and values just outside [-1, 1];
    # tiles on and above the diagonal of sizes that end inside the 16- and 64-column
    # blocks of the floor tests
    rng = np.random.default_rng(cap * 100 + block)
    n = 150
    U = np.triu(rng.integers(-12, 13, (n, n)).astype(np.float32) / 10, 1)
    U[np.triu(rng.random((n, n)) < 0.01, 1)] = np.nan
    S = U + U.T  # symmetric, NaN in both places; the merge reads the upper triangle
    hs = np.empty((n, cap), np.float32)
    hi = np.empty((n, cap), np.int64)
    size = np.zeros(n, np.int64)
    for i0 in range(0, n, block):
        for j0 in range(i0, n, block):
            tile = np.ascontiguousarray(S[i0 : i0 + block, j0 : j0 + block])
            _core.knn_merge_tile(tile, i0, j0, hs, hi, size, 2)
    want = _merge_reference(S, cap)
    for i in range(n):
        got = sorted(
            zip(hs[i, : size[i]].tolist(), hi[i, : size[i]].tolist()), key=lambda t: (-t[0], t[1])
        )
        assert [(round(v, 6), j) for v, j in got] == [(round(v, 6), j) for v, j in want[i]], i
