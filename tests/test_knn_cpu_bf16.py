"""The CPU's exact kNN through a bf16 candidate search (cpp/src/knn_bf16.cpp): AMX tiles or
AVX512-BF16 dot products where the CPU has them (the AMX kernel's steps also with the tile
instruction emulated in C++, on any CPU; and the bf16 arithmetic in portable C++), the
CUDA path's re-rank, certificate and fp32 fallback. Whatever the data, the graph must be exactly the
fp32 one of one fused multiply-add per element (the CUDA fp32 graph, `_knn_emulated`
with 24 bits), indices and similarities, ties to the smaller index."""

import numpy as np
import pytest

import aas_core as aas
from aas_core import _core, _precision, neighbors
from aas_core.neighbors import normalize_rows

HAS_BF16 = bool(_core.cpu_has_avx512_bf16())
HAS_AMX = bool(_core.cpu_amx_ready())
needs_bf16 = pytest.mark.skipif(not HAS_BF16, reason="this CPU has no AVX512-BF16 instructions")
needs_amx = pytest.mark.skipif(not HAS_AMX, reason="this CPU (or OS) runs no AMX tiles")
KERNELS = [
    pytest.param("avx512", marks=needs_bf16),
    pytest.param("amx", marks=needs_amx),
    "amx_emulated",
    "portable",
]


def _unit(X):
    return normalize_rows(np.asarray(X, np.float32), owner="test")


def _reference(X, k, include_self):
    idx, sims, _ = _core._knn_emulated(X, k, include_self, 24, 0)
    return idx, sims


def _bf16(X, k, include_self, kernel, cand_cap=0, force=False, threads=2):
    return _core.knn_graph_bf16(X, k, include_self, cand_cap, kernel, force, threads)


def _assert_same(got, ref):
    assert np.array_equal(got[0], ref[0])
    assert np.array_equal(got[1], ref[1])


def _round_bf16(X):
    # to nearest, ties to even (the kernels' rounding), in numpy
    u = np.ascontiguousarray(X, np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.astype(np.uint32).view(np.float32)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("d", [1, 31, 32, 45, 100])
def test_the_tile_is_the_dot_product_of_the_rounded_rows(kernel, d):
    rng = np.random.default_rng(d)
    A, B = rng.normal(size=(13, d)).astype(np.float32), rng.normal(size=(11, d)).astype(np.float32)
    C = _core._bf16_tile(A, B, kernel)
    a, b = _round_bf16(A).astype(np.float64), _round_bf16(B).astype(np.float64)
    exact = a @ b.T
    # products of bf16 values are exact in fp32; only the fp32 sums round
    assert np.all(np.abs(C - exact) <= d * 2.0**-23 * (np.abs(a) @ np.abs(b).T) + 1e-30)
    # and the rounding matters: fp32 rows give other values
    assert d < 8 or not np.allclose(C, A.astype(np.float64) @ B.T, atol=1e-6, rtol=0)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("include_self", [True, False])
def test_random_rows_give_exactly_the_fp32_graph(kernel, include_self):
    X = _unit(aas.datasets.make_reid_blobs(900, d=96, seed=2)[0])
    got = _bf16(X, 15, include_self, kernel)
    _assert_same(got, _reference(X, 15, include_self))
    # the candidates did the work: a broken kernel fails the bound (-1) or the certificate
    assert 0 <= got[2] <= len(X) // 50


@pytest.mark.parametrize("kernel", KERNELS)
def test_forced_fallback_recomputes_every_row_and_gives_the_same_graph(kernel):
    X = _unit(np.random.default_rng(1).normal(size=(300, 40)))
    ref = _reference(X, 12, True)
    certified = _bf16(X, 12, True, kernel)
    forced = _bf16(X, 12, True, kernel, force=True)
    assert forced[2] == forced[3] == len(X)  # no second chance either
    _assert_same(forced, ref)
    _assert_same(certified, ref)


@pytest.mark.parametrize("kernel", KERNELS)
def test_exact_ties_of_duplicate_rows_rank_the_smaller_index_first(kernel):
    rng = np.random.default_rng(3)
    X = _unit(rng.choice([-1.0, 1.0], size=(10, 40))[rng.integers(0, 10, 300)])
    for include_self in (True, False):
        _assert_same(_bf16(X, 12, include_self, kernel), _reference(X, 12, include_self))


@pytest.mark.parametrize("kernel", KERNELS)
def test_near_ties_below_the_bf16_error_go_through_the_fallback(kernel):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 64))
    X = _unit(centres[rng.integers(0, 20, 500)] + rng.normal(scale=3e-3, size=(500, 64)))
    got = _bf16(X, 10, True, kernel, cand_cap=12)
    assert got[2] > 50  # bf16 cannot tell these apart: the certificate sent them back
    _assert_same(got, _reference(X, 10, True))
    # their second chance (48 candidates) holds each row's whole group of about 25, so
    # the certificate holds there; almost none is left for the fp32 fallback
    assert got[3] <= got[2] // 10


@pytest.mark.parametrize("kernel", KERNELS)
def test_rows_the_second_chance_cannot_certify_go_to_the_fp32_fallback(kernel):
    # two groups of 200 near-copies: bf16 cannot order a group, and neither 12 nor 48
    # candidates hold all of it, so both certificates fail and fp32 decides
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(2, 48))
    X = _unit(centres[rng.integers(0, 2, 400)] + rng.normal(scale=1e-3, size=(400, 48)))
    got = _bf16(X, 10, True, kernel, cand_cap=12)
    assert got[3] > 200 and got[2] >= got[3]
    _assert_same(got, _reference(X, 10, True))
    # and with room for a group, the second chance certifies them all
    roomy = _bf16(X, 10, True, kernel, cand_cap=60)
    assert roomy[2] > 200 and roomy[3] == 0
    _assert_same(roomy, _reference(X, 10, True))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(
    "n,d,k,include_self",
    [(2, 3, 1, False), (2, 1, 1, True), (5, 7, 4, False), (9, 33, 8, True), (40, 65, 39, False)],
)
def test_small_graphs_k_up_to_n_and_odd_widths(kernel, n, d, k, include_self):
    X = _unit(np.random.default_rng(n * d).normal(size=(n, d)))
    _assert_same(_bf16(X, k, include_self, kernel), _reference(X, k, include_self))


@pytest.mark.parametrize(
    "kernel",
    [
        pytest.param("avx512", marks=needs_bf16),
        pytest.param("amx", marks=needs_amx),
        "amx_emulated",
    ],
)
def test_more_rows_than_one_tile_and_any_thread_count(kernel):
    X = _unit(aas.datasets.make_reid_blobs(2100, d=40, seed=5)[0])
    ref = _reference(X, 8, True)
    for threads in (1, 3):
        got = _bf16(X, 8, True, kernel, threads=threads)
        _assert_same(got, ref)
        assert got[2] >= 0
    # few candidates (cand_cap = k - 1): many rows are not certified, still exact
    _assert_same(_bf16(X, 8, True, kernel, cand_cap=7), ref)


@pytest.mark.parametrize(
    "shape", [(1, 1, 1), (17, 33, 31), (40, 72, 96), (33, 31, 33), (65, 5, 300)]
)
def test_the_amx_steps_sum_the_features_in_order(shape):
    # the tiles' sums run feature by feature, as the portable kernel's: with no
    # subnormals (which the instruction flushes) the two agree bit for bit, so a
    # wrong row, column or feature pair anywhere in the tiles' layout shows
    rows, cols, d = shape
    rng = np.random.default_rng(rows * cols + d)
    A = rng.normal(size=(rows, d)).astype(np.float32)
    B = rng.normal(size=(cols, d)).astype(np.float32)
    want = _core._bf16_tile(A, B, "portable")
    assert np.array_equal(_core._bf16_tile(A, B, "amx_emulated"), want)
    if HAS_AMX:  # the instructions: within fp32 rounding of the emulation
        a, b = _round_bf16(A).astype(np.float64), _round_bf16(B).astype(np.float64)
        tol = 2 * d * 2.0**-23 * (np.abs(a) @ np.abs(b).T)
        assert np.all(np.abs(_core._bf16_tile(A, B, "amx") - want) <= tol + 1e-30)


def test_the_amx_kernel_runs_only_where_the_cpu_and_os_allow_it():
    X = _unit(np.random.default_rng(3).normal(size=(50, 20)))
    assert isinstance(_core.cpu_amx_ready(), bool)
    assert _core.cpu_amx_ready() == _core.cpu_amx_ready()  # asked once, kept
    if HAS_AMX:
        assert _precision._cpu_bf16_kernel() == "amx"
        _assert_same(_bf16(X, 5, True, "amx"), _reference(X, 5, True))
    else:
        assert _precision._cpu_bf16_kernel() == ("avx512" if HAS_BF16 else None)
        with pytest.raises(ValueError, match="cannot run the AMX kernel"):
            _bf16(X, 5, True, "amx")


def test_knn_graph_and_finch_take_the_kernel_the_cpu_offers(monkeypatch):
    # whichever kernel _cpu_bf16_kernel names is the one that runs (here the AMX
    # kernel's emulation, on any CPU), and the graph stays the fp32 one
    calls = []
    search = _core.knn_graph_bf16
    monkeypatch.setattr(_precision, "_cpu_bf16_kernel", lambda: "amx_emulated")
    monkeypatch.setattr(_core, "knn_graph_bf16", lambda *a: calls.append(a[4]) or search(*a))
    X, _ = aas.datasets.make_reid_blobs(300, d=24, seed=9)
    g = aas.knn_graph(X, 7, precision="bf16")
    assert calls == ["amx_emulated"] and g.precision == "bf16"
    _assert_same((g.indices, g.sims), _reference(g.features, 7, True))
    r = aas.finch(X)
    assert calls[1:] and set(calls[1:]) == {"amx_emulated"}
    monkeypatch.undo()
    assert np.array_equal(r.labels, aas.finch(X).labels)


@needs_bf16
@pytest.mark.parametrize("precision", ["auto", "bf16"])
def test_knn_graph_runs_the_bf16_search_where_the_cpu_has_it(precision):
    X, _ = aas.datasets.make_reid_blobs(600, d=64, seed=7)
    g = aas.knn_graph(X, 10, precision=precision)
    assert neighbors.cpu_precision() == "bf16"
    assert g.precision == "bf16" and 0 <= g.fallback_rows <= g.widened_rows <= 600
    assert aas.knn_graph(X, 10).precision == "bf16"  # the default is "auto"
    _assert_same((g.indices, g.sims), _reference(g.features, 10, True))
    # the BLAS candidates' fp32 graph: the same, bit for bit
    f = aas.knn_graph(X, 10, precision="fp32")
    assert f.precision == "fp32" and f.fallback_rows >= 0 and f.widened_rows is None
    _assert_same((f.indices, f.sims), (g.indices, g.sims))


def test_without_avx512_bf16_auto_is_the_fp32_path_and_bf16_says_why(monkeypatch):
    monkeypatch.setattr(_precision, "_cpu_has_bf16", lambda: False)
    X, _ = aas.datasets.make_reid_blobs(300, d=16, seed=8)
    assert neighbors.cpu_precision() == "fp32"
    g, f = aas.knn_graph(X, 6, precision="auto"), aas.knn_graph(X, 6, precision="fp32")
    assert g.precision == "fp32" and g.fallback_rows >= 0
    _assert_same((g.indices, g.sims), (f.indices, f.sims))
    _assert_same((g.indices, g.sims), _reference(g.features, 6, True))
    assert aas.knn_graph(X, 6).precision == "fp32"  # the default is "auto"
    with pytest.raises(ValueError, match="precision='bf16' on the CPU needs AMX or AVX512-BF16"):
        aas.knn_graph(X, 6, precision="bf16")


def test_precision_is_checked_and_named():
    X, _ = aas.datasets.make_reid_blobs(40, d=8, seed=0)
    with pytest.raises(ValueError, match="'precision'"):
        aas.knn_graph(X, 5, precision="bfloat16")
    with pytest.raises(ValueError, match="precision='tf32'.*CUDA"):
        aas.knn_graph(X, 5, precision="tf32")
    with pytest.raises(ValueError, match="backend='faiss' use 'fp32' or 'auto'"):
        aas.knn_graph(X, 5, precision="bf16", backend="faiss")
    with pytest.raises(ValueError, match="kernel must be"):
        _core.knn_graph_bf16(_unit(X), 5, True, 0, "amx512", False, 1)


@pytest.mark.parametrize("kernel", KERNELS)
def test_the_residual_bound_holds_where_bf16_rounding_errors_add_up(kernel):
    # every feature just below a bf16 rounding midpoint, signs shared: the rounding
    # errors of a row and of its neighbours point the same way and add up over d;
    # a bound that did not hold would be caught (-1: every row recomputed)
    rng = np.random.default_rng(11)
    d = 300
    worst = (1.0 + 2.0**-8 - 2.0**-20) * 2.0 ** rng.integers(-3, 0, size=d)
    X = _unit(worst * rng.choice([-1.0, 1.0], size=d) + rng.normal(scale=1e-3, size=(400, d)))
    got = _bf16(X, 10, True, kernel)
    assert got[2] >= 0
    _assert_same(got, _reference(X, 10, True))


def test_knn_graph_reports_the_rows_the_second_chance_took(monkeypatch):
    # groups of 60 near-copies: the default 41 candidates (k = 10) cannot hold a group,
    # so no row is certified at first; 164 can, so the second chance certifies all
    monkeypatch.setattr(_precision, "_cpu_bf16_kernel", lambda: "portable")
    rng = np.random.default_rng(12)
    centres = rng.normal(size=(5, 32))
    X = centres.repeat(60, axis=0) + rng.normal(scale=1e-3, size=(300, 32))
    g = aas.knn_graph(X, 10, precision="bf16")
    assert g.widened_rows == 300 and g.fallback_rows == 0
    _assert_same((g.indices, g.sims), _reference(g.features, 10, True))


@pytest.mark.parametrize("seed", range(4))
def test_random_shapes_few_candidates_and_copies_give_the_fp32_graph(seed):
    # few candidates (cand_cap k or k + 1) leave many rows to the second chance, some of
    # them (groups of copies larger than 4 cand_cap) to the fp32 fallback: every route,
    # every kernel, any thread count, the same graph
    rng = np.random.default_rng(seed)
    kernels = ["portable", "amx_emulated"] + ["avx512"] * HAS_BF16 + ["amx"] * HAS_AMX
    routes = set()
    for _ in range(8):
        n, d = int(rng.integers(20, 300)), int(rng.integers(1, 60))
        centres = rng.normal(size=(max(1, n // int(rng.integers(2, 40))), d))
        noise = 10.0 ** rng.uniform(-4, -1)
        X = _unit(centres[rng.integers(0, len(centres), n)] + rng.normal(scale=noise, size=(n, d)))
        k = int(rng.integers(2, min(n - 1, 20) + 1))
        include_self = bool(rng.integers(0, 2))
        cap = k - 1 if include_self else k
        ref = _reference(X, k, include_self)
        for kernel in kernels:
            got = _bf16(
                X,
                k,
                include_self,
                kernel,
                cand_cap=cap + int(rng.integers(0, 2)),
                threads=int(rng.integers(1, 4)),
            )
            _assert_same(got, ref)
            routes.add((got[2] > got[3], got[3] > 0))
    assert (True, False) in routes or (True, True) in routes  # the second chance ran
