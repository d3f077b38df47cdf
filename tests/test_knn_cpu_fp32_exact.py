"""The CPU's fp32 kNN (BLAS candidates re-ranked by dot_fma, certified by the fp32
rounding bound, uncertified rows recomputed) gives the graph of one fused multiply-add
per element in element order, ties to the smaller index: the bf16 path's graph and the
CUDA fp32 one, bit for bit. The reference here is numpy's own, with a correctly rounded
fused multiply-add, so it does not share code with the kernels."""

import numpy as np
import pytest

import aas_core as aas
from aas_core import _core
from aas_core.neighbors import _knn_blas, normalize_rows

HAS_BF16 = bool(_core.cpu_has_avx512_bf16())
BF16_KERNEL = "avx512" if HAS_BF16 else "portable"


def _fma32(a, b, c):
    """fp32 fma(a, b, c) rounded once, to nearest even. The product is exact in float64
    and TwoSum gives the sum's float64 rounding error e; rounding the float64 sum s to
    float32 is the fma's rounding except where s is a float32 midpoint, where e decides."""
    a, b, c = (np.asarray(v, np.float32) for v in (a, b, c))
    p = a.astype(np.float64) * b.astype(np.float64)
    c64 = c.astype(np.float64)
    s = p + c64
    pv = s - c64  # TwoSum (Knuth): s + e == p + c exactly
    e = (c64 - (s - pv)) + (p - pv)
    r = s.astype(np.float32)
    r64 = r.astype(np.float64)
    other = np.nextafter(r, np.where(s > r64, np.float32(np.inf), np.float32(-np.inf)))
    o64 = other.astype(np.float64)
    tie = (s != r64) & (s == (r64 + o64) / 2) & (e != 0)
    return np.where(tie & (np.sign(e) == np.sign(o64 - r64)), other, r)


def _dot_fma(A, B):
    """S[i, j] = dot_fma(A[i], B[j]): one fma per feature, in feature order."""
    acc = np.zeros((A.shape[0], B.shape[0]), np.float32)
    for e in range(A.shape[1]):
        acc = _fma32(A[:, e][:, None], B[:, e][None, :], acc)
    return acc


def _reference(X, k, include_self):
    """Top-k by the clamped dot_fma similarity, ties to the smaller index."""
    n = X.shape[0]
    S = np.clip(_dot_fma(X, X), -1.0, 1.0)
    cap = k - 1 if include_self else k
    idx = np.empty((n, k), np.int64)
    sims = np.empty((n, k), np.float32)
    for i in range(n):
        others = np.delete(np.arange(n), i)
        order = others[np.lexsort((others, -S[i, others]))][:cap]
        first = 1 if include_self else 0
        if include_self:
            idx[i, 0], sims[i, 0] = i, 1.0
        idx[i, first:], sims[i, first:] = order, S[i, order]
    return idx, sims


def _unit(X):
    return normalize_rows(np.asarray(X, np.float32), owner="test")


def _assert_same(got, ref):
    assert np.array_equal(got[0], ref[0])
    assert np.array_equal(got[1], ref[1])


def test_the_numpy_fma_reference_is_the_kernels_dot_fma():
    rng = np.random.default_rng(0)
    A = _unit(rng.standard_normal((40, 77)))
    B = _unit(rng.standard_normal((30, 77)))
    assert np.array_equal(_dot_fma(A, B), _core._similarity_tile_emulated(A, B, reference=True))
    # 1 + 2^-23 - 2^-24 + 2^-60: float64 rounds the sum to the float32 midpoint 1 + 2^-24,
    # whose tie-to-even is 1; the fma rounds once, up, as does the kernels' dot_fma
    A = np.array([[1 + 2.0**-23, -(2.0**-12) * (1 + 2.0**-18)]], np.float32)
    B = np.array([[1.0, 2.0**-12 * (1 - 2.0**-18)]], np.float32)
    assert np.float32(np.float64(A[0, 0]) + np.float64(A[0, 1]) * B[0, 1]) == 1.0
    assert _dot_fma(A, B)[0, 0] == np.float32(1 + 2.0**-23)
    assert np.array_equal(_dot_fma(A, B), _core._similarity_tile_emulated(A, B, reference=True))


def _data(kind, rng):
    if kind == "random":
        return _unit(rng.standard_normal((300, 48)))
    if kind == "duplicates":  # exact ties: the smaller index first
        base = rng.standard_normal((40, 32))
        return _unit(base[rng.integers(0, 40, size=260)])
    if kind == "near-ties":  # neighbours apart in the last bits of their similarity
        base = rng.standard_normal(64)
        return _unit(base + 1e-6 * rng.standard_normal((250, 64)))
    if kind == "d-not-16":
        return _unit(rng.standard_normal((200, 37)))
    if kind == "blobs":
        return aas.datasets.make_reid_blobs(300, d=40, seed=4)[0].astype(np.float32)
    if kind == "wide":  # d >= 256: mutual candidates share one dot product; some duplicates
        X = rng.standard_normal((250, 260))
        X[200:] = X[:50]
        return _unit(X)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["random", "duplicates", "near-ties", "d-not-16", "blobs", "wide"])
@pytest.mark.parametrize("include_self", [True, False])
def test_fp32_and_bf16_give_the_dot_fma_graph(kind, include_self):
    X = _unit(_data(kind, np.random.default_rng(5)))
    k = 12
    ref = _reference(X, k, include_self)
    fp32 = aas.knn_graph(X, k, include_self=include_self, precision="fp32")
    assert fp32.precision == "fp32" and fp32.fallback_rows >= 0
    _assert_same((fp32.indices, fp32.sims), ref)
    auto = aas.knn_graph(X, k, include_self=include_self)
    _assert_same((auto.indices, auto.sims), ref)
    bf16 = _core.knn_graph_bf16(X, k, include_self, 0, BF16_KERNEL, False, 2)
    _assert_same(bf16, ref)


@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("k", [58, 59])
def test_k_close_to_n(include_self, k):
    X = _data("duplicates", np.random.default_rng(6))[:60]
    ref = _reference(X, k, include_self)
    for precision in ("fp32", "auto"):
        g = aas.knn_graph(X, k, include_self=include_self, precision=precision)
        _assert_same((g.indices, g.sims), ref)


def test_every_fallback_route_gives_the_same_graph():
    X = _data("near-ties", np.random.default_rng(7))
    ref = _reference(X, 10, True)
    # no margin: the certificate rarely holds, the fallback does the work
    got = _knn_blas(X, 10, True, 2, margin=0)
    _assert_same(got, ref)
    assert got[2] > 0
    forced = _knn_blas(X, 10, True, 2, force_fallback=True)
    _assert_same(forced, ref)
    assert forced[2] == X.shape[0]
    # small tiles: another BLAS summation order, the same graph
    _assert_same(_knn_blas(X, 10, True, 1, block=7), ref)


def test_candidates_off_by_more_than_the_bound_send_every_row_to_the_fallback():
    # a candidate search that breaks its bound (here: sims shifted by 1e-3) is caught
    X = _data("random", np.random.default_rng(8))
    n, cap = X.shape[0], 20
    S = _core._similarity_tile_emulated(X, X, reference=True) + np.float32(1e-3)
    hs = np.empty((n, cap), np.float32)
    hi = np.empty((n, cap), np.int64)
    size = np.zeros(n, np.int64)
    _core.knn_merge_tile(np.ascontiguousarray(S, np.float32), 0, 0, hs, hi, size, 1)
    idx, sims, fallback = _core.knn_graph_fp32_rerank(X, 10, True, hs, hi, size, False, 2)
    assert fallback == -1
    _assert_same((idx, sims), _reference(X, 10, True))
    # the same heaps without the shift: certified rows, no alarm
    S -= np.float32(1e-3)
    size[:] = 0
    _core.knn_merge_tile(np.ascontiguousarray(S, np.float32), 0, 0, hs, hi, size, 1)
    idx, sims, fallback = _core.knn_graph_fp32_rerank(X, 10, True, hs, hi, size, False, 2)
    assert 0 <= fallback < n
    _assert_same((idx, sims), _reference(X, 10, True))


def test_candidate_heaps_that_do_not_fit_are_refused():
    X = _data("random", np.random.default_rng(9))[:50]
    hs = np.zeros((50, 4), np.float32)
    hi = np.zeros((50, 4), np.int64)
    size = np.full(50, 4, np.int64)
    with pytest.raises(ValueError, match="candidate heaps"):
        _core.knn_graph_fp32_rerank(X, 10, True, hs, hi, size, False, 1)


def test_the_threaded_rerank_gives_the_single_threaded_graph():
    """Above n·(k + 16)·d = 2**27 the re-rank runs on several threads (mutual candidates
    share one value across threads); it must give the one-thread graph, ties included."""
    X, _ = aas.datasets.make_reid_blobs(6000, d=2048, seed=1)
    X = np.vstack([X, X[:40]])  # exact duplicates: ties across rows
    for precision in ("fp32", "auto"):
        one = aas.knn_graph(X, 30, n_threads=1, precision=precision)
        two = aas.knn_graph(X, 30, n_threads=2, precision=precision)
        np.testing.assert_array_equal(one.indices, two.indices)
        np.testing.assert_array_equal(one.sims, two.sims)
