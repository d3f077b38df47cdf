"""C++ kernels of AAS (regions, medoids, closest pairs, medoid pairs) against brute force.

Integer-valued features make every dot product exact in float32 and float64,
so the kernels must agree with the references exactly, ties included.
"""

import numpy as np
import pytest
import scipy.sparse as sp

import _oracles as oracles
import aas_core as aas
from aas_core import _core
from aas_core.sampling import Regions, uncertainty_regions
from aas_core.sampling.pools import closest_inconsistent_pairs, overseg_pairs, region_medoids


def integer_rows(rng, n, d=16, low=-2, high=3):
    return rng.integers(low, high, (n, d)).astype(np.float32)


def unit_rows(rng, n, d=8):
    X = rng.standard_normal((n, d)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def tangled_labels(rng, n, n_ids, outliers=0.1):
    """A splits some identities and marks outliers; B merges some neighbouring identities."""
    y = rng.integers(0, n_ids, n)
    a = y.copy()
    split = rng.random(n_ids) < 0.3
    half = rng.random(n) < 0.5
    a[split[y] & half] += n_ids
    a[rng.random(n) < outliers] = -1
    b = y.copy()
    merge = rng.random(n_ids) < 0.3
    b[merge[y]] = (y[merge[y]] + 1) % n_ids
    b[rng.random(n) < outliers / 2] = -1
    return a, b


def check_regions(a, b):
    r = uncertainty_regions(a, b)
    region, count = oracles.uncertainty_regions(a, b)
    np.testing.assert_array_equal(r.region, region)
    assert r.n_regions == count
    return r


def check_pairs(X, r, n_threads=None):
    pairs, region, via = closest_inconsistent_pairs(X, r, n_threads=n_threads)
    want = oracles.closest_inconsistent_pairs(X, r.labels_a, r.labels_b, r.region)
    assert {tuple(p): int(v) for p, v in zip(pairs.tolist(), via.tolist())} == want
    keys = sorted(want)
    assert pairs.tolist() == [list(k) for k in keys]  # sorted, i < j
    np.testing.assert_array_equal(region, r.region[pairs[:, 0]])
    assert pairs.dtype == np.int64 and region.dtype == np.int64 and via.dtype == np.int8
    return pairs, region, via


@pytest.mark.parametrize("seed", range(4))
def test_regions_medoids_and_pairs_match_brute_force_at_larger_sizes(seed):
    rng = np.random.default_rng(seed)
    n = 1500
    a, b = tangled_labels(rng, n, n_ids=200)
    r = check_regions(a, b)
    assert r.n_regions > 20
    X = integer_rows(rng, n)
    np.testing.assert_array_equal(
        region_medoids(X, r), oracles.region_medoids(X, r.region, r.n_regions)
    )
    check_pairs(X, r)


def test_one_giant_region_with_many_singletons_and_exact_ties():
    # B: three big clusters; A: many small clusters and outliers (singletons).
    # Values in {0, 1} make ties everywhere: the smallest (u, v) must win.
    rng = np.random.default_rng(7)
    n = 300
    b = rng.integers(0, 3, n)
    a = rng.integers(0, 40, n)
    a[rng.random(n) < 0.4] = -1
    r = check_regions(a, b)
    X = integer_rows(rng, n, d=13, low=0, high=2)  # d % 8 != 0: the masked tail
    pairs, _, _ = check_pairs(X, r)
    assert len(pairs) > 1000
    for t in (1, 2, 3):
        got = closest_inconsistent_pairs(X, r, n_threads=t)
        np.testing.assert_array_equal(got[0], pairs)
    np.testing.assert_array_equal(
        region_medoids(X, r), oracles.region_medoids(X, r.region, r.n_regions)
    )


def test_large_cluster_pair_is_split_over_threads_with_the_same_result():
    # Two B-clusters of 600 points joined by A: one cluster pair of 360k dot
    # products, split into work items by rows; every thread count agrees.
    rng = np.random.default_rng(3)
    n = 1200
    b = np.repeat([0, 1], n // 2)
    a = np.zeros(n, np.int64)
    a[:5] = 1
    a[-5:] = 2
    r = check_regions(a, b)
    X = unit_rows(rng, n, d=40)
    ref = closest_inconsistent_pairs(X, r, n_threads=1)
    for t in (2, 3, 4):
        got = closest_inconsistent_pairs(X, r, n_threads=t)
        for g, w in zip(got, ref):
            np.testing.assert_array_equal(g, w)
    # the B side's closest pair is the maximum of the 600 × 600 block, kept
    # exactly when A puts its two points together
    S = X[: n // 2] @ X[n // 2 :].T
    u, v = np.unravel_index(np.argmax(S), S.shape)
    u, v = int(u), int(v) + n // 2
    assert ((u, v) in set(map(tuple, ref[0].tolist()))) == (a[u] == a[v])


@pytest.mark.parametrize(
    "a, b",
    [
        ([0], [0]),
        ([-1], [-1]),
        ([0, 0], [0, 1]),
        ([-1, -1], [0, 0]),
        ([-1, -1, -1, -1, -1], [-1, -1, -1, -1, -1]),
        ([-1, -1, -1, -1, -1], [3, 3, 3, 3, 3]),  # everything one region, all singletons
        ([0, 0, 0, 0, 0], [-1, -1, -1, -1, -1]),
        ([0, 1, 2, 3, 4], [0, 0, 0, 0, 0]),
        ([5, 5, 7, 7, 9], [5, 5, 7, 7, 9]),  # agreement: no region
        ([10**12, 10**12, 3, 3], [0, 1, 1, 2]),  # label values far above n
    ],
)
def test_odd_cases(a, b):
    a, b = np.array(a), np.array(b)
    r = check_regions(a, b)
    X = integer_rows(np.random.default_rng(0), len(a), d=5)
    check_pairs(X, r)
    np.testing.assert_array_equal(
        region_medoids(X, r), oracles.region_medoids(X, r.region, r.n_regions)
    )


def test_all_outliers_in_one_cluster_give_every_pair():
    n = 40
    r = uncertainty_regions(np.full(n, -1), np.zeros(n, np.int64))
    assert r.n_regions == 1
    X = unit_rows(np.random.default_rng(1), n)
    pairs, region, via = closest_inconsistent_pairs(X, r)
    assert len(pairs) == n * (n - 1) // 2 and (via == 0).all() and (region == 0).all()


def test_identical_points_tie_to_the_smallest_pair_and_smallest_medoid():
    X = np.ones((6, 9), np.float32) / 3.0
    r = uncertainty_regions([0, 0, 1, 1, 2, 2], [0, 0, 0, 0, 0, 0])
    pairs, _, _ = closest_inconsistent_pairs(X, r)
    # A-clusters {0,1} {2,3} {4,5}: closest pairs (0,2), (0,4), (2,4)
    assert pairs.tolist() == [[0, 2], [0, 4], [2, 4]]
    assert region_medoids(X, r).tolist() == [0]


def test_empty_input():
    r = uncertainty_regions(np.empty(0, np.int64), np.empty(0, np.int64))
    assert r.n_regions == 0 and r.region.shape == (0,)


@pytest.mark.parametrize("seed", range(3))
def test_overseg_pairs_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, r = 400, 120
    X = unit_rows(rng, n, d=8)
    medoids = rng.choice(n, r, replace=False)
    # a symmetric sparse "Jaccard" graph over a few pairs, some stored zeros
    i = rng.integers(0, n, 3000)
    j = rng.integers(0, n, 3000)
    keep = i != j
    i, j = i[keep], j[keep]
    d = rng.choice(np.array([0.0, 0.2, 0.5, 0.69, 0.71, 0.9], np.float32), len(i))
    D = sp.csr_array((np.r_[d, d], (np.r_[i, j], np.r_[j, i])), shape=(n, n))
    D.sum_duplicates()
    dense = np.ones((n, n), np.float32)
    stored = np.zeros((n, n), bool)
    rows = np.repeat(np.arange(n), np.diff(D.indptr))
    dense[rows, D.indices] = D.data
    stored[rows, D.indices] = True
    for k_max, s_min in ((5, 0.3), (1, 0.3), (3, 0.0), (200, 0.5)):
        pairs, sim = overseg_pairs(X, medoids, D, k_max=k_max, s_min=s_min)
        want = oracles.overseg_pairs(X, medoids, dense, stored, k_max, s_min)
        assert pairs.tolist() == [list(p) for p in sorted(want)]
        np.testing.assert_array_equal(sim, np.array([want[p] for p in sorted(want)], np.float32))
        assert sim.dtype == np.float32
        again = overseg_pairs(X, medoids, D, k_max=k_max, s_min=s_min, n_threads=1)
        np.testing.assert_array_equal(again[0], pairs)


def test_overseg_pairs_small_cases():
    X = unit_rows(np.random.default_rng(0), 5)
    D = sp.csr_array((5, 5), dtype=np.float32)
    for medoids in ([], [3]):
        pairs, sim = overseg_pairs(X, np.array(medoids, np.int64), D)
        assert pairs.shape == (0, 2) and sim.shape == (0,)
    pairs, sim = overseg_pairs(X, np.array([1, 3]), D, s_min=0.0)  # absent: similarity 0
    assert pairs.tolist() == [[1, 3]] and sim.tolist() == [0.0]
    assert overseg_pairs(X, np.array([1, 3]), D)[0].shape == (0, 2)


def test_inputs_are_not_modified():
    rng = np.random.default_rng(5)
    a, b = tangled_labels(rng, 200, 30)
    a0, b0 = a.copy(), b.copy()
    r = uncertainty_regions(a, b)
    X = unit_rows(rng, 200)
    X0 = X.copy()
    closest_inconsistent_pairs(X, r)
    region_medoids(X, r)
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(b, b0)
    np.testing.assert_array_equal(X, X0)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda X, r: closest_inconsistent_pairs(X, "r"), TypeError, "'regions' must be a Regions"),
        (lambda X, r: region_medoids(X[:5], r), ValueError, "'X' must have one row per point"),
        (lambda X, r: region_medoids(X.astype(int), r), TypeError, "'X' must be a floating"),
        (lambda X, r: closest_inconsistent_pairs(X, r, n_threads=0), ValueError, "'n_threads'"),
        (lambda X, r: overseg_pairs(X, [0, 99], sp.eye(10)), ValueError, "'medoids' must be row"),
        (lambda X, r: overseg_pairs(X, [0, 0], sp.eye(10)), ValueError, "distinct"),
        (lambda X, r: overseg_pairs(X, [0, 1], sp.eye(9)), ValueError, "'D' must be"),
        (lambda X, r: overseg_pairs(X, [0, 1], sp.eye(10), k_max=0), ValueError, "'k_max'"),
        (lambda X, r: overseg_pairs(X, [0, 1], sp.eye(10), s_min=2), ValueError, "'s_min'"),
    ],
)
def test_bad_input_is_named(call, exc, match):
    X = unit_rows(np.random.default_rng(0), 10)
    r = uncertainty_regions([0] * 5 + [1] * 5, [0] * 10)
    with pytest.raises(exc, match=match):
        call(X, r)


def test_core_rechecks_its_input():
    x = np.zeros((3, 2), np.float32)
    lab = np.zeros(3, np.int64)
    with pytest.raises(ValueError, match="must be >= 0"):
        _core.uncertainty_regions(np.array([0, -1, 2]), lab)
    with pytest.raises(ValueError, match="labels_b must have 3 entries"):
        _core.uncertainty_regions(lab, lab[:2])
    with pytest.raises(ValueError, match="outside \\[-1, 1\\)"):
        _core.region_medoids(x, np.array([0, 1, 0]), 1, 1)
    with pytest.raises(ValueError, match="region 1 is empty"):
        _core.region_medoids(x, np.array([0, 0, -1]), 2, 1)
    with pytest.raises(ValueError, match="region must have 3 entries"):
        _core.closest_inconsistent_pairs(x, lab, lab, lab[:1], 1)
    with pytest.raises(TypeError):  # noconvert: no silent int32 -> int64 copy
        _core.uncertainty_regions(lab.astype(np.int32), lab)
    with pytest.raises(TypeError):
        _core.region_medoids(x.astype(np.float64), lab, 1, 1)
    bad = np.array([[np.nan, 1.0], [0.0, 1.0], [1.0, 0.0]], np.float32)
    with pytest.raises(ValueError, match="NaN or inf"):
        _core.closest_inconsistent_pairs(bad, np.array([0, 1, 1]), lab, lab, 1)
    with pytest.raises(ValueError, match="outside"):
        ptr, ind, dat = np.array([0, 1, 1, 1]), np.array([0], np.int32), np.zeros(1, np.float32)
        _core.csr_lookup(ptr, ind, dat, np.array([[0, 5]]), 1)


def test_aas_proposal_unchanged_by_thread_count(monkeypatch):
    X, _ = aas.datasets.make_reid_blobs(600, d=64, seed=2)
    g = aas.knn_graph(X, 15)
    D = aas.k_reciprocal_jaccard(g, k1=15, max_distance=0.7)
    a = aas.dbscan(D, eps=0.6, min_samples=3)
    b = aas.finch(g).labels[:, 0]
    props = []
    for t in ("1", "3"):
        monkeypatch.setenv("OMP_NUM_THREADS", t)
        props.append(
            aas.sampling.AmbiguityAwareSampler().propose_from(
                X, a, b, D, aas.PairConstraints(n=600), 50, rng=np.random.default_rng(0)
            )
        )
    np.testing.assert_array_equal(props[0].pairs, props[1].pairs)
    np.testing.assert_array_equal(props[0].prob, props[1].prob)
    assert isinstance(uncertainty_regions(a, b), Regions)


def test_medoid_search_threads_and_tiles_do_not_change_the_result(monkeypatch):
    from aas_core.sampling import pools

    rng = np.random.default_rng(9)
    n, r = 700, 300
    X = unit_rows(rng, n, d=6)
    medoids = rng.choice(n, r, replace=False)
    pairs = medoids[rng.integers(0, r, (3000, 2))]  # stored pairs between medoids
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    d = rng.uniform(0.0, 0.9, len(pairs)).astype(np.float32)
    D = sp.csr_array(
        (np.r_[d, d], (np.r_[pairs[:, 0], pairs[:, 1]], np.r_[pairs[:, 1], pairs[:, 0]])),
        shape=(n, n),
    )
    D.sum_duplicates()
    ref = overseg_pairs(X, medoids, D, k_max=30, s_min=0.2, n_threads=1)
    monkeypatch.setattr(pools, "_PARALLEL_MIN", 0)  # parallel merges and look-ups
    monkeypatch.setattr(pools, "_BLOCK", 64)  # many tiles
    got = overseg_pairs(X, medoids, D, k_max=30, s_min=0.2, n_threads=3)
    np.testing.assert_array_equal(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])
    assert len(ref[0]) > 100


def brute_closest(X, members, c1, c2):
    """The first largest dot product in row-major order of members[c1] × members[c2]
    (members ascending): ties to the smallest u, then v."""
    block = X[members[c1]].astype(np.float64) @ X[members[c2]].astype(np.float64).T
    flat = int(np.argmax(block))
    return int(members[c1][flat // len(members[c2])]), int(members[c2][flat % len(members[c2])])


@pytest.mark.parametrize("seed", range(4))
def test_closest_cluster_pairs_match_brute_force_ties_included(seed):
    rng = np.random.default_rng(seed)
    n = 300
    X = integer_rows(rng, n, d=5, low=-1, high=2)  # few values: many exact ties
    labels = rng.integers(-1, 25, n)
    labels[:25] = np.arange(25)  # no empty cluster
    members = [np.flatnonzero(labels == c) for c in range(25)]
    starts = np.concatenate([[0], np.cumsum([len(m) for m in members])]).astype(np.int64)
    rows = np.concatenate(members).astype(np.int64)
    pairs = rng.integers(0, 25, (200, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]].astype(np.int64)
    want = [brute_closest(X, members, a, b) for a, b in pairs.tolist()]
    for threads in (1, 2):
        got = _core.closest_cluster_pairs(X, starts, rows, pairs, threads)
        assert got.dtype == np.int64 and got.shape == (len(pairs), 2)
        assert [tuple(p) for p in got.tolist()] == want


def test_closest_cluster_pairs_split_a_large_pair_over_threads_alike():
    rng = np.random.default_rng(7)
    X = integer_rows(rng, 2000, d=24)
    members = [np.arange(0, 1200), np.arange(1200, 2000)]
    starts, rows = np.array([0, 1200, 2000]), np.arange(2000, dtype=np.int64)
    pairs = np.array([[0, 1], [1, 0]], np.int64)
    want = [brute_closest(X, members, 0, 1), brute_closest(X, members, 1, 0)]
    for threads in (1, 2):
        got = _core.closest_cluster_pairs(X, starts, rows, pairs, threads)
        assert [tuple(p) for p in got.tolist()] == want


def test_closest_cluster_pairs_recheck_their_input():
    x = np.eye(4, dtype=np.float32)
    starts, rows = np.array([0, 2, 4]), np.arange(4, dtype=np.int64)
    ok = np.array([[0, 1]], np.int64)
    none = np.empty((0, 2), np.int64)
    assert _core.closest_cluster_pairs(x, starts, rows, none, 1).shape == (0, 2)
    with pytest.raises(ValueError, match="pair 0 \\(0, 0\\) is not two distinct clusters"):
        _core.closest_cluster_pairs(x, starts, rows, np.array([[0, 0]]), 1)
    with pytest.raises(ValueError, match="pair 1 \\(0, 2\\)"):
        _core.closest_cluster_pairs(x, starts, rows, np.array([[0, 1], [0, 2]]), 1)
    with pytest.raises(ValueError, match="cluster 1 has no rows"):
        _core.closest_cluster_pairs(x, np.array([0, 2, 2, 4]), rows, ok, 1)
    with pytest.raises(ValueError, match="row 9 outside \\[0, 4\\)"):
        _core.closest_cluster_pairs(x, starts, np.array([0, 1, 2, 9]), ok, 1)
    with pytest.raises(ValueError, match="starts must end at len\\(rows\\) = 4"):
        _core.closest_cluster_pairs(x, np.array([0, 2, 3]), rows, ok, 1)
    with pytest.raises(ValueError, match="NaN or inf"):
        bad = x.copy()
        bad[:, 0] = np.nan
        _core.closest_cluster_pairs(bad, starts, rows, ok, 1)
    with pytest.raises(TypeError):  # noconvert: no silent int32 -> int64 copy
        _core.closest_cluster_pairs(x, starts.astype(np.int32), rows, ok, 1)
