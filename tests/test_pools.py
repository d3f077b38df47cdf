import itertools

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from aas_core.sampling import uncertainty_regions
from aas_core.sampling.pools import closest_inconsistent_pairs, overseg_pairs, region_medoids


def unit_rows(rng, n, d=8):
    X = rng.standard_normal((n, d)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def brute_us(X, r):
    """Every pair of distinct ζ-clusters in a region, closest pair by brute force."""
    found = set()
    for mine, other in ((r.labels_a, r.labels_b), (r.labels_b, r.labels_a)):
        for k in range(r.n_regions):
            clusters = sorted(set(mine[r.region == k].tolist()))
            for c1, c2 in itertools.combinations(clusters, 2):
                m1, m2 = np.flatnonzero(mine == c1), np.flatnonzero(mine == c2)
                best, arg = -np.inf, None
                for u in m1:
                    for v in m2:
                        s = float(X[u] @ X[v])
                        if s > best:
                            best, arg = s, (int(u), int(v))
                u, v = arg
                if other[u] == other[v]:
                    found.add((min(u, v), max(u, v)))
    return found


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_closest_inconsistent_pairs_match_brute_force(data):
    n = data.draw(st.integers(2, 25))
    seed = data.draw(st.integers(0, 10_000))
    rng = np.random.default_rng(seed)
    X = unit_rows(rng, n)
    a = rng.integers(-1, 4, n)
    b = rng.integers(-1, 4, n)
    r = uncertainty_regions(a, b)
    pairs, region, via = closest_inconsistent_pairs(X, r)
    assert set(map(tuple, pairs.tolist())) == brute_us(X, r)
    assert (pairs[:, 0] < pairs[:, 1]).all()
    np.testing.assert_array_equal(region, r.region[pairs[:, 0]])
    np.testing.assert_array_equal(region, r.region[pairs[:, 1]])
    # every kept pair is inconsistent: together in exactly one clustering
    la, lb = r.labels_a, r.labels_b
    same_a = la[pairs[:, 0]] == la[pairs[:, 1]]
    same_b = lb[pairs[:, 0]] == lb[pairs[:, 1]]
    assert (same_a ^ same_b).all()
    assert set(via.tolist()) <= {0, 1}


def test_hand_worked_under_segmentation_pair():
    # B joins {0,1} and {2,3}; A keeps them apart: the closest cross pair (1, 2) is asked
    X = np.array([[1, 0], [0.8, 0.6], [0.6, 0.8], [0, 1]], dtype=np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    r = uncertainty_regions([0, 0, 1, 1], [0, 0, 0, 0])
    pairs, region, via = closest_inconsistent_pairs(X, r)
    assert pairs.tolist() == [[1, 2]] and region.tolist() == [0] and via.tolist() == [0]


def test_no_disagreement_gives_empty_pools():
    X = unit_rows(np.random.default_rng(0), 6)
    r = uncertainty_regions([0, 0, 1, 1, 2, 2], [5, 5, 3, 3, 4, 4])
    pairs, _, _ = closest_inconsistent_pairs(X, r)
    assert pairs.shape == (0, 2)
    assert region_medoids(X, r).shape == (0,)


def test_medoids_minimise_summed_cosine_distance():
    rng = np.random.default_rng(1)
    X = unit_rows(rng, 60, d=5)
    a, b = rng.integers(0, 6, 60), rng.integers(0, 6, 60)
    r = uncertainty_regions(a, b)
    med = region_medoids(X, r)
    for k in range(r.n_regions):
        m = r.members(k)
        cost = (1 - X[m] @ X[m].T).sum(axis=1)
        assert med[k] == m[int(np.argmin(cost))]


def test_overseg_pairs_keep_k_nearest_medoids_above_s_min():
    rng = np.random.default_rng(2)
    X = unit_rows(rng, 30, d=4)
    medoids = np.array([0, 5, 9, 14, 20, 27])
    # a Jaccard graph storing some medoid pairs
    rows = [0, 5, 0, 9, 14, 20]
    cols = [5, 0, 9, 0, 20, 14]
    vals = np.array([0.2, 0.2, 0.9, 0.9, 0.0, 0.0], np.float32)
    D = sp.csr_array((vals, (rows, cols)), shape=(30, 30))
    pairs, sim = overseg_pairs(X, medoids, D, k_max=5, s_min=0.3)
    # with k_max >= r - 1 every medoid pair is a candidate; kept: stored with 1 - d >= 0.3
    assert pairs.tolist() == [[0, 5], [14, 20]]
    np.testing.assert_allclose(sim, [0.8, 1.0], rtol=1e-6)
    # k_max = 1: only each medoid's nearest medoid is a candidate
    S = X[medoids] @ X[medoids].T
    np.fill_diagonal(S, -np.inf)
    nearest = {
        tuple(sorted((int(m), int(medoids[np.argmax(S[t])])))) for t, m in enumerate(medoids)
    }
    pairs1, _ = overseg_pairs(X, medoids, D, k_max=1, s_min=0.0)
    assert set(map(tuple, pairs1.tolist())) == nearest
