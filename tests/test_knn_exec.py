"""The GPU's exact kNN from low-precision (bf16 / tf32) tiles, run on the CPU through
exec::Host (cpp/include/aas/knn_exec.hpp): candidates, exact fp32 re-rank, the
certificate and the fallback must give exactly the fp32 result, whatever the data."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aas_core as aas
from aas_core import _core
from aas_core.neighbors import normalize_rows

BF16, TF32, FP32 = 8, 11, 24


def _unit(X):
    return normalize_rows(np.asarray(X, np.float32), owner="test")


def _near_ties(n=600, d=64, spread=3e-3, seed=0):
    # tight groups: similarities inside a group differ by less than bf16's error
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, d))
    return _unit(centres[rng.integers(0, 20, n)] + rng.normal(scale=spread, size=(n, d)))


def test_the_fp32_tiles_agree_with_the_cpu_graph():
    X = _unit(aas.datasets.make_reid_blobs(1500, d=64, seed=1)[0])
    idx, sims, _ = _core._knn_emulated(X, 20, True, FP32, 0)
    g = aas.knn_graph(X, 20)
    # fp32 sums in another order: the same neighbour sets, similarities within rounding
    assert all(set(a) == set(b) for a, b in zip(idx, g.indices))
    assert np.abs(sims - g.sims).max() < 1e-6


@pytest.mark.parametrize("bits", [BF16, TF32])
@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("extra", [0, 2, 30])
def test_low_precision_candidates_give_exactly_the_fp32_graph(bits, include_self, extra):
    X = _unit(aas.datasets.make_reid_blobs(1200, d=96, seed=2)[0])
    k = 15
    ref = _core._knn_emulated(X, k, include_self, FP32, 0)
    cap = k - 1 if include_self else k
    idx, sims, fallback = _core._knn_emulated(X, k, include_self, bits, cap + extra)
    assert np.array_equal(idx, ref[0])
    assert np.array_equal(sims, ref[1])
    if extra == 30:  # enough candidates: (almost) every row certified without the fallback
        assert fallback <= len(X) // 50


@pytest.mark.parametrize("bits", [BF16, TF32])
def test_near_ties_below_the_rounding_error_go_through_the_fallback(bits):
    # bf16 / tf32 reorder these neighbours; without the certificate the result would
    # differ (checked: with a zero bound it does), with it the rows are recomputed
    X = _near_ties()
    ref = _core._knn_emulated(X, 10, True, FP32, 0)
    idx, sims, fallback = _core._knn_emulated(X, 10, True, bits, 12)
    assert fallback > 100
    assert np.array_equal(idx, ref[0]) and np.array_equal(sims, ref[1])


def test_duplicate_rows_and_exact_ties_rank_the_smaller_index_first():
    rng = np.random.default_rng(3)
    X = _unit(rng.choice([-1.0, 1.0], size=(10, 8))[rng.integers(0, 10, 300)])
    ref = _core._knn_emulated(X, 12, True, FP32, 0)
    for bits in (BF16, TF32):
        idx, sims, _ = _core._knn_emulated(X, 12, True, bits, 20)
        assert np.array_equal(idx, ref[0]) and np.array_equal(sims, ref[1])


def test_k_equal_to_all_other_rows_and_the_smallest_graphs():
    X = _unit(np.random.default_rng(4).normal(size=(9, 5)))
    for k, include_self in [(9 - 1, False), (9 - 1, True), (1, True), (1, False)]:
        ref = _core._knn_emulated(X, k, include_self, FP32, 0)
        got = _core._knn_emulated(X, k, include_self, BF16, 3)
        assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(3, 70),
    d=st.integers(1, 40),
    k=st.integers(1, 10),
    include_self=st.booleans(),
    bits=st.sampled_from([BF16, TF32, 4]),
    extra=st.integers(0, 12),
    spread=st.sampled_from([1e-4, 1e-2, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_any_input_gives_the_fp32_graph(n, d, k, include_self, bits, extra, spread, seed):
    k = min(k, n - 1)
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(3, d))
    X = _unit(base[rng.integers(0, 3, n)] + spread * rng.normal(size=(n, d)))
    ref = _core._knn_emulated(X, k, include_self, FP32, 0)
    got = _core._knn_emulated(X, k, include_self, bits, k + extra)
    assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1])


def test_a_producer_that_breaks_its_error_bound_is_caught_and_every_row_recomputed():
    # candidates from 3-bit inputs judged with tf32's bound: the re-rank sees candidate
    # similarities further from the fp32 ones than the bound allows, and trusts nothing
    X = _unit(aas.datasets.make_reid_blobs(400, d=32, seed=6)[0])
    ref = _core._knn_emulated(X, 10, True, FP32, 0)
    idx, sims, fallback = _core._knn_emulated(X, 10, True, TF32, 20, input_bits=3)
    assert fallback == -1
    assert np.array_equal(idx, ref[0]) and np.array_equal(sims, ref[1])
    # with the inputs the bound is for, nothing is flagged
    assert _core._knn_emulated(X, 10, True, TF32, 20)[2] >= 0


@pytest.mark.parametrize(
    ("rows", "cols", "d"),
    [(1, 1, 1), (64, 64, 16), (65, 63, 17), (150, 70, 33), (7, 300, 5), (200, 129, 64)],
)
def test_the_fp32_tile_kernel_computes_dot_fma_bit_for_bit(rows, cols, d):
    # the register-blocked kernel's steps (cpp/include/aas/gemm_tile.hpp) on the host,
    # block by block and thread by thread: every element, edges and padding included
    rng = np.random.default_rng(rows * 1000 + cols + d)
    A = rng.normal(size=(rows, d)).astype(np.float32)
    B = rng.normal(size=(cols, d)).astype(np.float32)
    tile = _core._similarity_tile_emulated(A, B)
    ref = _core._similarity_tile_emulated(A, B, reference=True)
    assert np.array_equal(tile, ref)
    np.testing.assert_allclose(tile, A.astype(np.float64) @ B.T.astype(np.float64), atol=1e-4)


@pytest.mark.parametrize(
    ("n16", "d16", "r0", "c0", "rows", "cols"),
    [
        (128, 32, 0, 0, 128, 128),  # one block, one slice
        (400, 48, 0, 128, 128, 272),  # a partial slice (48 = 32 + 16), blocks past n16
        (304, 80, 256, 0, 48, 300),  # a corner tile: rows and columns cut short
        (16, 16, 0, 0, 16, 16),  # smaller than a block
    ],
)
def test_the_tensor_core_tile_kernel_indexes_every_element(n16, d16, r0, c0, rows, cols):
    # the kernel's steps (cpp/include/aas/lp_tile.hpp) with host fragments: every block,
    # thread, warp and fragment of the launch, against a plain product
    Xr = np.random.default_rng(n16 + d16).normal(size=(n16, d16)).astype(np.float32)
    got = _core._lp_tile_emulated(Xr, r0, c0, rows, cols)
    want = Xr[r0 : r0 + rows].astype(np.float64) @ Xr[c0 : c0 + cols].T.astype(np.float64)
    want = np.pad(want, ((0, rows - want.shape[0]), (0, cols - want.shape[1])))  # past n16: 0
    np.testing.assert_allclose(got, want, atol=1e-4)
