"""The GPU code of FINCH (linking, cluster directions, the level loop) and of the U_us
closest-pair search, run on the CPU (exec::Host) through private _core entry points:
its results must be IDENTICAL to the production CPU functions. Marked gpu at the end:
the same code on the device (aas_core._cuda) against the CPU path."""

import numpy as np
import pytest

import aas_core as aas
from aas_core import _core
from aas_core.cluster.finch import _finch
from aas_core.neighbors import _knn_blas
from aas_core.sampling import uncertainty_regions
from aas_core.sampling.pools import closest_inconsistent_pairs
from test_sampling_kernels import tangled_labels

HAS_GPU = aas.cuda_available()
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="no CUDA device, or aas-core built without CUDA")


def random_kappa(rng, n):
    kappa = rng.integers(0, n - 1, n)
    return np.where(kappa >= np.arange(n), kappa + 1, kappa).astype(np.int64)


# ---- first-neighbour linking -------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n", [2, 3, 17, 1000])
def test_link_equals_the_cpu_union_find(seed, n):
    rng = np.random.default_rng(seed * 1000 + n)
    kappa = random_kappa(rng, n)
    want, count = _core.finch_link(kappa)
    got, got_count = _core._finch_link_exec(kappa)
    assert got_count == count
    np.testing.assert_array_equal(got, want)


def test_link_long_chains_and_one_cluster():
    # a chain n-1 -> n-2 -> ... -> 0 -> 1: one cluster, many hooking rounds
    n = 5000
    kappa = np.arange(-1, n - 1, dtype=np.int64)
    kappa[0] = 1
    got, count = _core._finch_link_exec(kappa)
    assert count == 1 and not got.any()
    # a shuffled chain: the roots are found only by the min-hooking, not by luck of order
    rng = np.random.default_rng(0)
    p = rng.permutation(n)
    kappa2 = np.empty(n, np.int64)
    kappa2[p] = p[np.r_[1, np.arange(n - 1)]]
    want, wc = _core.finch_link(kappa2)
    got, gc = _core._finch_link_exec(kappa2)
    assert gc == wc == 1
    np.testing.assert_array_equal(got, want)


def test_link_empty_and_bad_first_neighbours_give_the_cpu_messages():
    labels, count = _core._finch_link_exec(np.zeros(0, np.int64))
    assert count == 0 and labels.shape == (0,)
    for kappa in ([1, 2, 5, 0], [1, -1, 0], [1, 1, 0], [1, 0, 2, 9]):
        k = np.array(kappa, np.int64)
        with pytest.raises(ValueError) as want:
            _core.finch_link(k)
        with pytest.raises(ValueError) as got:
            _core._finch_link_exec(k)
        assert str(got.value) == str(want.value)


# ---- cluster directions ------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_directions_equal_the_cpu_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    n, d, c = 700, 37, 90
    x = rng.standard_normal((n, d)).astype(np.float32)
    w = rng.random(n) * 3
    labels = rng.integers(0, c, n).astype(np.int64)
    labels[labels == 5] = 6  # an empty cluster: a zero row
    want = _core.cluster_directions(x, w, labels, c, 2)
    got = _core._cluster_directions_exec(x, w, labels, c)
    for g, t in zip(got, want):
        assert g.dtype == t.dtype and g.shape == t.shape
        np.testing.assert_array_equal(g.view(np.uint8), t.view(np.uint8))
    assert not got[0][5].any() and got[1][5] == 0


def test_directions_zero_sums_and_empty_input():
    x = np.array([[1, 0], [-1, 0], [0, 1], [0.5, 0.5]], np.float32)
    labels = np.array([0, 0, 1, 1], np.int64)
    w = np.ones(4)
    dirs, norms = _core._cluster_directions_exec(x, w, labels, 2)
    want = _core.cluster_directions(x, w, labels, 2, 1)
    np.testing.assert_array_equal(dirs, want[0])
    np.testing.assert_array_equal(norms, want[1])
    assert norms[0] == 0 and not dirs[0].any()
    dirs, norms = _core._cluster_directions_exec(
        np.zeros((0, 3), np.float32), np.zeros(0), np.zeros(0, np.int64), 2
    )
    assert dirs.shape == (2, 3) and not dirs.any() and not norms.any()


def test_directions_bad_labels_give_the_cpu_message():
    x = np.ones((3, 2), np.float32)
    for labels in ([0, 2, 1], [0, -1, 1]):
        lab = np.array(labels, np.int64)
        with pytest.raises(ValueError) as want:
            _core.cluster_directions(x, np.ones(3), lab, 2, 1)
        with pytest.raises(ValueError) as got:
            _core._cluster_directions_exec(x, np.ones(3), lab, 2)
        assert str(got.value) == str(want.value)


# ---- the level loop ----------------------------------------------------------------


def cpu_first_nn(M):
    return np.ascontiguousarray(_knn_blas(np.asarray(M), 1, False, 1)[0][:, 0])


def loop_exec(X, stop_at=None, kappa0=None):
    labels, counts = _core._finch_levels_exec(X, kappa0, stop_at or 0, cpu_first_nn)
    return labels, counts.tolist()


@pytest.mark.parametrize("n, seed", [(2, 0), (3, 1), (60, 2), (800, 3), (3000, 4)])
def test_level_loop_equals_finch(n, seed):
    X, _ = aas.datasets.make_reid_blobs(n, d=32, seed=seed) if n >= 60 else (None, None)
    if X is None:
        X = np.random.default_rng(seed).standard_normal((n, 4)).astype(np.float32)
    X = aas.neighbors.normalize_rows(X)
    want = aas.finch(X)
    labels, counts = loop_exec(X)
    assert counts == want.n_clusters
    np.testing.assert_array_equal(labels, want.labels)


@pytest.mark.parametrize("stop_at", [1, 2, 5, 40, 10**6])
def test_level_loop_stop_at_clusters(stop_at):
    X, _ = aas.datasets.make_reid_blobs(1500, d=16, seed=9)
    X = aas.neighbors.normalize_rows(X)
    want = aas.finch(X, stop_at_clusters=stop_at)
    labels, counts = loop_exec(X, stop_at)
    assert counts == want.n_clusters
    np.testing.assert_array_equal(labels, want.labels)


def test_level_loop_from_a_graph_and_with_zero_directions():
    X, _ = aas.datasets.make_reid_blobs(900, d=16, seed=5)
    g = aas.knn_graph(X, 5)
    want = aas.finch(g)
    labels, counts = loop_exec(g.features, kappa0=np.ascontiguousarray(g.indices[:, 1]))
    assert counts == want.n_clusters
    np.testing.assert_array_equal(labels, want.labels)
    # antipodal pairs: every level-0 cluster sums to zero and has no direction
    rng = np.random.default_rng(2)
    half = aas.neighbors.normalize_rows(rng.standard_normal((40, 6)).astype(np.float32))
    Xz = np.empty((80, 6), np.float32)
    Xz[0::2], Xz[1::2] = half, -half
    kappa = np.arange(80, dtype=np.int64) ^ 1
    want = _finch(
        aas.KNNGraph(kappa[:, None], np.zeros((80, 1), np.float32), features=Xz),
        n_threads=1,
        owner="t",
    )
    labels, counts = loop_exec(Xz, kappa0=kappa)
    assert counts == want.n_clusters
    np.testing.assert_array_equal(labels, want.labels)


# ---- U_us closest pairs --------------------------------------------------------------


def pairs_both_ways(X, a, b, **kw):
    r = uncertainty_regions(a, b)
    want_pairs, _, want_via = closest_inconsistent_pairs(X, r)
    got_pairs, got_via = _core._closest_pairs_exec(X, r.labels_a, r.labels_b, r.region, **kw)
    np.testing.assert_array_equal(got_pairs, want_pairs)
    np.testing.assert_array_equal(got_via, want_via)
    return got_pairs


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("d", [5, 8, 64, 67])
def test_closest_pairs_equal_the_cpu_on_float_rows(seed, d):
    rng = np.random.default_rng(seed)
    n = 1200
    a, b = tangled_labels(rng, n, n_ids=150)
    X = aas.neighbors.normalize_rows(rng.standard_normal((n, d)).astype(np.float32))
    assert len(pairs_both_ways(X, a, b)) > 20
    # near-duplicate rows: dot products differ by rounding only, so only the CPU's exact
    # lane arithmetic picks the same winners (the other rounding picks others)
    X = rng.standard_normal((1, d)) + 1e-6 * rng.standard_normal((n, d))
    X = aas.neighbors.normalize_rows(X.astype(np.float32))
    pairs = pairs_both_ways(X, a, b)
    other, _ = _core._closest_pairs_exec(
        X, *_regions_of(a, b), fused=not _core._closest_pairs_fused()
    )
    if d != 8:  # with d = 8 every lane holds one product: both roundings agree
        assert other.shape != pairs.shape or (other != pairs).any()


def _regions_of(a, b):
    r = uncertainty_regions(a, b)
    return r.labels_a, r.labels_b, r.region


def test_closest_pairs_ties_big_clusters_and_small_batches():
    # values in {0, 1}: ties everywhere, so the smallest (u, v) must win; big clusters
    # span several chunks of the second cluster, and tiny batches split pairs
    rng = np.random.default_rng(7)
    n = 1500
    b = rng.integers(0, 3, n)
    a = np.where(rng.random(n) < 0.5, rng.integers(0, 40, n), -1)
    X = rng.integers(0, 2, (n, 9)).astype(np.float32)
    base = pairs_both_ways(X, a, b)
    for batch in (1, 7, 1000):
        assert np.array_equal(pairs_both_ways(X, a, b, batch=batch), base)


def test_closest_pairs_edge_cases():
    X = np.array([[1, 0], [0, 1]], np.float32)
    for a, b in (([0, 1], [0, 0]), ([0, 0], [0, 1]), ([0, 0], [0, 0]), ([-1, -1], [0, 0])):
        pairs_both_ways(X, np.array(a), np.array(b))
    got, via = _core._closest_pairs_exec(
        np.zeros((0, 3), np.float32), *(np.zeros(0, np.int64),) * 3
    )
    assert got.shape == (0, 2) and via.shape == (0,)


def test_closest_pairs_nan_and_bad_labels_give_the_cpu_messages():
    X = np.full((4, 3), np.nan, np.float32)
    lab_a, lab_b = np.array([0, 1, 2, 3]), np.array([0, 0, 0, 0])
    region = np.zeros(4, np.int64)
    cases = [
        (X, lab_a, lab_b),
        (np.ones((4, 3), np.float32), np.array([0, -2, 1, 1]), lab_b),
    ]
    for x, a, b in cases:
        with pytest.raises(ValueError) as want:
            _core.closest_inconsistent_pairs(x, a, b, region, 1)
        with pytest.raises(ValueError) as got:
            _core._closest_pairs_exec(x, a, b, region)
        assert str(got.value) == str(want.value)


def test_closest_pairs_both_roundings_on_integer_rows():
    # integer rows: every dot product is exact, so fused and unfused agree with the CPU
    rng = np.random.default_rng(3)
    n = 800
    a, b = tangled_labels(rng, n, n_ids=100)
    X = rng.integers(-2, 3, (n, 13)).astype(np.float32)
    for fused in (False, True):
        pairs_both_ways(X, a, b, fused=fused)


# ---- device= in the Python API ----------------------------------------------------


def test_closest_pairs_and_the_sampler_take_device_and_say_why_cuda_is_not_there():
    rng = np.random.default_rng(0)
    a, b = tangled_labels(rng, 200, n_ids=20)
    X = aas.neighbors.normalize_rows(rng.standard_normal((200, 8)).astype(np.float32))
    r = uncertainty_regions(a, b)
    with pytest.raises(ValueError, match="'device'.*'cpu', 'cuda'"):
        closest_inconsistent_pairs(X, r, device="gpu")
    with pytest.raises(ValueError, match="'device'.*'cpu', 'cuda'"):
        aas.sampling.AmbiguityAwareSampler(device="gpu")
    s = aas.sampling.AmbiguityAwareSampler(device="cuda")
    assert s.device == "cuda" and "device='cuda'" in repr(s)
    assert "device" not in repr(aas.sampling.AmbiguityAwareSampler())
    want = closest_inconsistent_pairs(X, r)
    got = closest_inconsistent_pairs(X, r, device="cpu")
    assert all(np.array_equal(g, w) for g, w in zip(got, want))
    if HAS_GPU:
        return
    with pytest.raises(ValueError, match="closest_inconsistent_pairs: device='cuda'"):
        closest_inconsistent_pairs(X, r, device="cuda")
    g = aas.knn_graph(X, 10)
    with pytest.raises(ValueError, match="AmbiguityAwareSampler.propose_from: device='cuda'"):
        D = aas.k_reciprocal_jaccard(g, k1=10, k2=3)
        s.propose_from(X, a, b, D, aas.PairConstraints(), 5, rng=0, graph=g)


def test_the_cuda_entry_points_say_no_device_where_built_without_a_gpu():
    from aas_core import gpu

    mod = gpu._load()
    if mod is None or mod.device_count() > 0:
        pytest.skip("needs aas-core built with CUDA on a machine without a GPU")
    x = np.ones((4, 2), np.float32)
    z = np.zeros(4, np.int64)
    calls = [
        lambda: mod.finch_link(np.array([1, 0, 3, 2], np.int64)),
        lambda: mod.cluster_directions(x, np.ones(4), z, 1),
        lambda: mod.finch(x),
        lambda: mod.closest_inconsistent_pairs(x, z, z, z, True),
    ]
    for call in calls:
        with pytest.raises(RuntimeError, match="no device"):
            call()


# ---- the device (marked gpu) -------------------------------------------------------


@pytest.mark.gpu
@needs_gpu
def test_cuda_link_and_directions_equal_the_cpu_bit_for_bit():
    from aas_core.gpu import cuda_module

    mod = cuda_module("test")
    rng = np.random.default_rng(0)
    for n in (2, 3, 1000, 200_000):
        kappa = random_kappa(rng, n)
        want, count = _core.finch_link(kappa)
        got, got_count = mod.finch_link(kappa)
        assert got_count == count
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="row 1 is its own first neighbour"):
        mod.finch_link(np.array([1, 1, 0], np.int64))
    n, d, c = 20_000, 100, 3000
    x = rng.standard_normal((n, d)).astype(np.float32)
    w = rng.random(n) * 3
    labels = rng.integers(0, c, n).astype(np.int64)
    labels[labels == 5] = 6
    want = _core.cluster_directions(x, w, labels, c, 4)
    got = mod.cluster_directions(x, w, labels, c)
    for g, t in zip(got, want):
        np.testing.assert_array_equal(g.view(np.uint8), t.view(np.uint8))


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("n, d", [(2, 4), (500, 16), (5000, 128)])
def test_cuda_finch_equals_the_loop_given_the_same_neighbours(n, d):
    # the levels on the device equal the CPU loop given the device's own first
    # neighbours; the neighbour searches themselves (GPU fp32 tiles vs BLAS) can differ
    # at float near-ties, so against finch(device="cpu") level 0 is compared where the
    # two searches agree
    from aas_core.gpu import cuda_module

    if n == 2:
        X = np.random.default_rng(0).standard_normal((2, d))
    else:
        X, _ = aas.datasets.make_reid_blobs(n, d=d, seed=n)
    X = aas.neighbors.normalize_rows(X)
    mod = cuda_module("test")

    def device_nn(M):
        return np.ascontiguousarray(mod.knn_graph(np.asarray(M), 1, False)[0][:, 0])

    got = aas.finch(X, device="cuda")
    labels, counts = _core._finch_levels_exec(X, None, 0, device_nn)
    assert got.n_clusters == counts.tolist()
    np.testing.assert_array_equal(got.labels, labels)
    for stop in (1, 3, 50):
        part = aas.finch(X, device="cuda", stop_at_clusters=stop)
        labels, counts = _core._finch_levels_exec(X, None, stop, device_nn)
        assert part.n_clusters == counts.tolist()
        np.testing.assert_array_equal(part.labels, labels)
    if np.array_equal(_knn_blas(X, 1, False, 1)[0], mod.knn_graph(X, 1, False)[0]):
        np.testing.assert_array_equal(got.labels[:, 0], aas.finch(X).labels[:, 0])


@pytest.mark.gpu
@needs_gpu
def test_cuda_finch_from_a_graph_equals_the_loop_given_the_same_neighbours():
    from aas_core.gpu import cuda_module

    mod = cuda_module("test")
    X, _ = aas.datasets.make_reid_blobs(3000, d=64, seed=1)
    g = aas.knn_graph(X, 10)

    def device_nn(M):
        return np.ascontiguousarray(mod.knn_graph(np.asarray(M), 1, False)[0][:, 0])

    kappa0 = np.ascontiguousarray(g.indices[:, 1])
    for stop in (None, 3, 200):
        got = aas.finch(g, stop_at_clusters=stop, device="cuda")
        labels, counts = _core._finch_levels_exec(g.features, kappa0, stop or 0, device_nn)
        assert got.n_clusters == counts.tolist()
        np.testing.assert_array_equal(got.labels, labels)
        # level 0 comes from the graph: the same as on the CPU
        np.testing.assert_array_equal(got.labels[:, 0], aas.finch(g).labels[:, 0])


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("seed", range(3))
def test_cuda_closest_pairs_equal_the_cpu(seed):
    rng = np.random.default_rng(seed)
    n = 4000
    a, b = tangled_labels(rng, n, n_ids=400)
    r = uncertainty_regions(a, b)
    for X in (
        aas.neighbors.normalize_rows(rng.standard_normal((n, 96)).astype(np.float32)),
        # near-duplicates: winners decided by rounding alone
        aas.neighbors.normalize_rows(
            (rng.standard_normal((1, 67)) + 1e-6 * rng.standard_normal((n, 67))).astype(np.float32)
        ),
        # ties: the smallest (u, v) wins on the device too
        rng.integers(0, 2, (n, 9)).astype(np.float32),
    ):
        _same_pairs_on_the_device(X, r)


def _same_pairs_on_the_device(X, r):
    want = closest_inconsistent_pairs(X, r)
    got = closest_inconsistent_pairs(X, r, device="cuda")
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.gpu
@needs_gpu
def test_cuda_closest_pairs_in_one_giant_region():
    # few big clusters: every pair spans many chunks of its second cluster
    rng = np.random.default_rng(1)
    n = 20_000
    b = rng.integers(0, 4, n)
    a = np.where(rng.random(n) < 0.7, rng.integers(0, 6, n), -1)
    X = aas.neighbors.normalize_rows(rng.standard_normal((n, 16)).astype(np.float32))
    r = uncertainty_regions(a, b)
    _same_pairs_on_the_device(X, r)


@pytest.mark.gpu
@needs_gpu
def test_cuda_aas_sampler_equals_the_cpu():
    X, y = aas.datasets.make_reid_blobs(2000, d=64, seed=4)
    s = aas.cluster_features(X, k1=20)
    kw = dict(rng=0, graph=s.graph)
    args = (s.X, s.labels_a, s.labels_b, s.D, aas.PairConstraints(), 50)
    want = aas.sampling.AmbiguityAwareSampler().propose_from(*args, **kw)
    got = aas.sampling.AmbiguityAwareSampler(device="cuda").propose_from(*args, **kw)
    np.testing.assert_array_equal(got.pairs, want.pairs)
