"""DBSCAN's eps fitted to the data (and optionally to the answers): aas_core.cluster.eps."""

import numpy as np
import pytest
import scipy.sparse as sp

import aas_core as aas
from aas_core.cluster import eps as E
from aas_core.loop import cluster_features


def _brute_kth(D, k):
    dense = np.ones(D.shape)
    C = D.tocoo()
    dense[C.row, C.col] = C.data
    np.fill_diagonal(dense, np.inf)
    dense[dense >= 1] = 1.0
    return np.sort(dense, axis=1)[:, k - 1]


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_kth_neighbour_distance_equals_brute_force(k):
    X, _ = aas.datasets.make_reid_blobs(300, d=32, seed=1)
    D = aas.k_reciprocal_jaccard(X, k1=15, k2=3, max_distance=0.85)
    assert np.allclose(E.kth_neighbour_distance(D, k), _brute_kth(D, k))


def test_kth_neighbour_distance_ignores_the_diagonal_and_keeps_explicit_zeros():
    D = sp.csr_array(
        (
            np.array([0.0, 0.0, 0.3, 0.3, 0.0]),
            (np.array([0, 0, 1, 2, 2]), np.array([0, 1, 2, 1, 2])),
        ),
        shape=(3, 3),
    )
    assert E.kth_neighbour_distance(D, 1).tolist() == [0.0, 0.3, 0.3]
    assert E.kth_neighbour_distance(D, 2).tolist() == [1.0, 1.0, 1.0]


def test_data_eps_makes_the_share_of_core_points():
    X, _ = aas.datasets.make_reid_blobs(1000, d=64, seed=0)
    D = aas.k_reciprocal_jaccard(X, k1=20, k2=6, max_distance=0.85)
    eps = E.data_eps(D, min_samples=4)
    assert 0.2 <= eps <= 0.8
    kd = E.kth_neighbour_distance(D, 3)
    assert np.mean(kd <= eps) == pytest.approx(E.CORE_SHARE, abs=0.01)
    # clipped to the range
    far = sp.csr_array((np.ones(0), (np.array([], int), np.array([], int))), shape=(5, 5))
    assert E.data_eps(far) == E.EPS_RANGE[1]


def test_auto_eps_on_blobs_is_as_good_as_0_6_or_better():
    # at 10k points 0.6 is too tight for this data; 'auto' finds 0.70 (see docs/active-learning.md)
    for n, seed in ((2000, 1), (4000, 0)):
        X, y = aas.datasets.make_reid_blobs(n, seed=seed)
        auto = cluster_features(X)
        fixed = cluster_features(X, eps=0.6)
        f_auto = aas.metrics.clustering.pairwise_f1(y, auto.labels_a)
        f_fixed = aas.metrics.clustering.pairwise_f1(y, fixed.labels_a)
        assert auto.eps.source == "data" and f_auto >= f_fixed - 0.005, (n, f_auto, f_fixed)


def test_fit_eps_from_answers_and_its_guards():
    X, y = aas.datasets.make_reid_blobs(600, d=64, seed=0)
    D = aas.k_reciprocal_jaccard(X, k1=20, k2=6, max_distance=0.85)
    base = E.data_eps(D)
    # all "different": keep the data's eps and say why
    far = np.array([[i, i + 300] for i in range(20) if y[i] != y[i + 300]])
    c = aas.PairConstraints(cannot_link=far, n=600)
    got = E.fit_eps(D, c)
    assert got.source == "data" and got.eps == base and "there are 0 and" in got.message
    # enough of both: the chosen eps agrees best with the answers
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, 600, (4000, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    same = y[pairs[:, 0]] == y[pairs[:, 1]]
    sel = np.concatenate([np.flatnonzero(same)[:40], np.flatnonzero(~same)[:40]])
    c = aas.PairConstraints(must_link=pairs[sel][same[sel]], cannot_link=pairs[sel][~same[sel]])
    got = E.fit_eps(D, c)
    assert got.source == "answers" and 0.2 <= got.eps <= 0.8 and got.data_eps == base
    best = max(
        E._agreement(aas.dbscan(D, eps=float(e)), c.pairs, c.is_must_link)
        for e in np.arange(0.2, 0.8001, 0.025)
    )
    assert got.agreement == pytest.approx(best)


def test_cluster_state_refits_only_when_asked():
    X, y = aas.datasets.make_reid_blobs(600, d=64, seed=0)
    pairs = np.array([[i, j] for i in range(600) for j in range(i + 1, min(i + 40, 600))])
    same = y[pairs[:, 0]] == y[pairs[:, 1]]
    c = aas.PairConstraints(must_link=pairs[same][:30], cannot_link=pairs[~same][:30])
    plain = cluster_features(X, k1=20)
    assert plain.refit(c) is plain and plain.finch is None
    follow = cluster_features(X, k1=20, eps_from_answers=True)
    again = follow.refit(c)
    assert again.eps.source == "answers" and follow.eps.source == "data"
    assert again.finch is follow.finch and again.D is follow.D
    given = cluster_features(X, k1=20, eps=0.55, eps_from_answers=True)
    assert given.eps.source == "given" and given.refit(c) is given
    with pytest.raises(ValueError, match="'eps' parameter of cluster_features must be 'auto'"):
        cluster_features(X, eps="tight")
    with pytest.raises(TypeError, match="'eps_from_answers' parameter"):
        cluster_features(X, eps_from_answers="yes")


def test_active_loop_records_eps():
    X, y = aas.datasets.make_reid_blobs(400, d=64, seed=0)
    recs = aas.ActiveLoop(
        X,
        aas.sampling.AmbiguityAwareSampler(),
        aas.LabelOracle(y),
        budget_per_cycle=30,
        cycles=2,
        seed=0,
        k1=20,
    ).run()
    assert all(r["eps_source"] == "data" and 0.2 <= r["eps"] <= 0.8 for r in recs)
    recs = aas.ActiveLoop(
        X,
        aas.sampling.AmbiguityAwareSampler(),
        aas.LabelOracle(y),
        budget_per_cycle=30,
        cycles=1,
        seed=0,
        k1=20,
        eps=0.6,
    ).run()
    assert [r["eps_source"] for r in recs] == ["given", "given"] and recs[0]["eps"] == 0.6
