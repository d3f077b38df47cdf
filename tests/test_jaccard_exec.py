"""The GPU algorithm of the Jaccard step (cpp/include/aas/jaccard_exec.hpp), run on the
CPU through exec::Host, against the CPU code bit for bit: everything the CUDA build
runs except the kernel launches and thrust. Marked gpu: the CUDA run itself."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aas_core as aas
from aas_core import _core

HAS_GPU = aas.cuda_available()


def _both(g, k1, k2, max_distance, budget, features="graph"):
    f = g.features if isinstance(features, str) else features
    cpu = _core.k_reciprocal_jaccard(g.indices, g.sims, f, k1, k2, max_distance, 2)
    emu = _core._k_reciprocal_jaccard_emulated(g.indices, g.sims, f, k1, k2, max_distance, budget)
    return cpu, emu


def _assert_identical(cpu, emu):
    for name, a, b in zip(("indptr", "indices", "data"), cpu, emu):
        assert a.dtype == b.dtype, name
        assert np.array_equal(a, b), name  # bit for bit, not approximately


@pytest.mark.parametrize(
    ("n", "d", "k1", "k2", "max_distance"),
    [
        (300, 16, 20, 6, 1.0),
        (500, 32, 30, 6, 0.85),
        (200, 8, 10, 1, 1.0),  # no query expansion
        (250, 64, 12, 12, 0.5),  # k2 = k1
        (120, 4, 2, 1, 1.0),  # smallest k1
        (150, 24, 7, 3, 0.0),  # only exact zeros kept
    ],
)
@pytest.mark.parametrize("budget", [1, 97, 1 << 27])  # one row at a time .. all at once
def test_the_gpu_algorithm_on_the_host_equals_the_cpu_code(n, d, k1, k2, max_distance, budget):
    X, _ = aas.datasets.make_reid_blobs(n, d=d, seed=n + d)
    g = aas.knn_graph(X, k1, include_self=True)
    _assert_identical(*_both(g, k1, k2, max_distance, budget))


def test_a_wider_graph_and_similarities_outside_it_come_from_the_features():
    # width 40 > k1: the ranking's later columns serve the similarity look-ups; the
    # expansion still reaches rows outside them (dot products of the features)
    X, _ = aas.datasets.make_reid_blobs(400, d=24, seed=3)
    g = aas.knn_graph(X, 40, include_self=True)
    _assert_identical(*_both(g, 20, 6, 0.9, 500))


def test_ties_and_duplicate_rows_give_the_same_result():
    rng = np.random.default_rng(0)
    base = rng.choice([-1.0, 1.0], size=(12, 4)).astype(np.float32)
    X = base[rng.integers(0, 12, 240)]  # many identical rows: tied similarities everywhere
    g = aas.knn_graph(X, 15, include_self=True)
    _assert_identical(*_both(g, 15, 4, 1.0, 64))


def test_without_features_the_same_error_when_the_expansion_needs_them():
    X, _ = aas.datasets.make_reid_blobs(300, d=16, seed=5)
    g = aas.knn_graph(X, 20, include_self=True)
    with pytest.raises(ValueError, match="pass the features the graph was built from"):
        _core.k_reciprocal_jaccard(g.indices, g.sims, None, 20, 6, 1.0, 2)
    with pytest.raises(ValueError, match="pass the features the graph was built from"):
        _core._k_reciprocal_jaccard_emulated(g.indices, g.sims, None, 20, 6, 1.0, 100)


def test_bad_arguments_are_refused_as_on_the_cpu():
    X, _ = aas.datasets.make_reid_blobs(60, d=8, seed=1)
    g = aas.knn_graph(X, 10, include_self=True)
    bad = g.indices.copy()
    bad[7, 3] = 60
    with pytest.raises(ValueError, match="neighbour index out of range"):
        _core._k_reciprocal_jaccard_emulated(bad, g.sims, g.features, 10, 3, 1.0, 100)
    with pytest.raises(ValueError, match="need 2 <= k1 <= graph width"):
        _core._k_reciprocal_jaccard_emulated(g.indices, g.sims, g.features, 11, 3, 1.0, 100)
    with pytest.raises(ValueError, match="need 1 <= k2 <= k1"):
        _core._k_reciprocal_jaccard_emulated(g.indices, g.sims, g.features, 10, 11, 1.0, 100)
    with pytest.raises(ValueError, match="pair_budget"):
        _core._k_reciprocal_jaccard_emulated(g.indices, g.sims, g.features, 10, 3, 1.0, 0)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(8, 80),
    d=st.integers(2, 12),
    k1=st.integers(2, 7),
    k2=st.integers(1, 7),
    max_distance=st.sampled_from([0.0, 0.3, 0.7, 1.0]),
    budget=st.integers(1, 400),
    seed=st.integers(0, 2**16),
)
def test_any_small_input_gives_the_cpu_result(n, d, k1, k2, max_distance, budget, seed):
    k2 = min(k2, k1)
    X = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    g = aas.knn_graph(X, k1, include_self=True)
    _assert_identical(*_both(g, k1, k2, max_distance, budget))


# ---- on a CUDA device ------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="no CUDA device, or aas-core built without CUDA")
@pytest.mark.parametrize(
    ("n", "k1", "k2", "max_distance"), [(3000, 30, 6, 1.0), (2000, 20, 1, 0.7)]
)
def test_cuda_jaccard_matches_the_cpu(n, k1, k2, max_distance):
    X, _ = aas.datasets.make_reid_blobs(n, d=64, seed=7)
    g = aas.knn_graph(X, k1, include_self=True)
    cpu = aas.k_reciprocal_jaccard(g, k1=k1, k2=k2, max_distance=max_distance)
    gpu = aas.k_reciprocal_jaccard(g, k1=k1, k2=k2, max_distance=max_distance, device="cuda")
    # the same entries (an entry at the max_distance edge could flip on the last bit of
    # exp; none does here) and distances within 1e-5
    assert np.array_equal(cpu.indptr, gpu.indptr)
    assert np.array_equal(cpu.indices, gpu.indices)
    assert np.abs(cpu.data - gpu.data).max(initial=0.0) <= 1e-5
    # and from features, the kNN graph on the device too
    from_x = aas.k_reciprocal_jaccard(X, k1=k1, k2=k2, max_distance=max_distance, device="cuda")
    assert np.array_equal(from_x.indices, cpu.indices)


def test_device_cuda_without_it_says_why():
    if HAS_GPU:
        pytest.skip("this machine has CUDA")
    X, _ = aas.datasets.make_reid_blobs(50, d=8, seed=0)
    with pytest.raises(ValueError, match="k_reciprocal_jaccard: device='cuda'"):
        aas.k_reciprocal_jaccard(X, k1=5, device="cuda")
    with pytest.raises(ValueError, match="'device'"):
        aas.k_reciprocal_jaccard(X, k1=5, device="tpu")
