import numpy as np
import pytest

import aas_core as aas
from aas_core.sampling import GBAS, LBAS, NISSampler, RandomPairSampler


@pytest.fixture(scope="module")
def state():
    X, y = aas.datasets.make_reid_blobs(500, d=1024, seed=2)
    D = aas.k_reciprocal_jaccard(X, k1=20, k2=6, max_distance=0.7)
    a = aas.dbscan(D)
    return X, y, D, a


@pytest.mark.parametrize("sampler", [RandomPairSampler(), NISSampler(m=3), LBAS(), GBAS()])
def test_baselines_respect_budget_and_constraints(state, sampler):
    X, y, D, a = state
    c = aas.PairConstraints(n=len(X))
    p = sampler.propose_from(X, a, a, D, c, 40, rng=np.random.default_rng(0))
    assert 0 < len(p) <= 40 and (p.pairs[:, 0] < p.pairs[:, 1]).all()
    assert len(np.unique(p.pairs, axis=0)) == len(p)
    again = sampler.propose_from(X, a, a, D, c, 40, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(p.pairs, again.pairs)
    c.add(p.pairs, aas.LabelOracle(y).answer(p.pairs))
    nxt = sampler.propose_from(X, a, a, D, c, 200, rng=np.random.default_rng(1))
    assert not c.is_known(nxt.pairs).any()
    assert len(sampler.propose_from(X, a, a, D, c, 0, rng=np.random.default_rng(0))) == 0


def test_random_sampler_exhausts_a_tiny_problem_exactly():
    X = np.eye(4, dtype=np.float32)
    c = aas.PairConstraints(must_link=[[0, 1]])
    D = aas.k_reciprocal_jaccard(X + 0.01, k1=2, k2=1)
    p = RandomPairSampler().propose_from(X, None, None, D, c, 100, rng=np.random.default_rng(0))
    # 6 pairs, (0, 1) known: 5 left
    assert sorted(map(tuple, p.pairs.tolist())) == [(0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]


def test_nis_draws_vertices_with_probability_inverse_to_their_soft_degree():
    import scipy.sparse as sp

    # vertex 0 has one weak edge; 1..5 form a strong clique
    rows, cols, vals = [0, 1], [1, 0], [0.99, 0.99]
    for i in range(1, 6):
        for j in range(1, 6):
            if i != j:
                rows.append(i), cols.append(j), vals.append(0.1)
    D = sp.csr_array((np.array(vals, np.float32), (rows, cols)), shape=(6, 6))
    X = np.eye(6, dtype=np.float32)
    sim = (1.0 - D.toarray()) * (D.toarray() > 0)
    weight = 1.0 / (1.0 + sim.sum(axis=1))  # n̂(v) = 1 + Σ_u sim(v, u)
    expected = weight[0] / weight.sum()
    draws = 400
    hits = sum(
        0
        in NISSampler(m=1)
        .propose_from(X, None, None, D, aas.PairConstraints(), 1, rng=np.random.default_rng(s))
        .pairs[0]
        for s in range(draws)
    )
    # vertex 1's most similar neighbour is in the clique, so only vertex 0 itself yields 0
    assert abs(hits / draws - expected) < 4 * np.sqrt(expected * (1 - expected) / draws)
    assert expected > 4 * weight[1] / weight.sum()  # low degree really is favoured


def test_samplers_spend_the_budget_beyond_the_stored_distances(state):
    X, y, D, a = state
    graph = aas.knn_graph(X, 20)
    stored = (D.nnz - len(X)) // 2  # pairs the distance graph holds
    for sampler in (NISSampler(), GBAS(), LBAS()):
        c = aas.PairConstraints(n=len(X))
        for cycle in range(3):
            p = sampler.propose_from(
                X, a, a, D, c, 150, rng=np.random.default_rng(cycle), graph=graph
            )
            assert len(p) == 150, type(sampler).__name__
            assert not c.is_known(p.pairs).any()
            c.add(p.pairs, aas.LabelOracle(y).answer(p.pairs))
        assert len(c) > 0.25 * stored


def test_bad_input():
    with pytest.raises(ValueError, match="'m' parameter"):
        NISSampler(m=0)
    with pytest.raises(ValueError, match="'budget' parameter"):
        RandomPairSampler().propose_from(
            np.eye(3), None, None, None, aas.PairConstraints(), -2, rng=np.random.default_rng(0)
        )


def test_lbas_and_gbas_balance_positives_and_negatives(state):
    X, y, D, a = state
    for sampler in (LBAS(), GBAS()):
        p = sampler.propose_from(
            X, a, a, D, aas.PairConstraints(), 30, rng=np.random.default_rng(0)
        )
        same = a[p.pairs[:, 0]] == a[p.pairs[:, 1]]
        assert (a[p.pairs] >= 0).all()  # outliers are never used
        assert abs(int(same.sum()) - int((~same).sum())) <= 2, type(sampler).__name__


def test_gbas_takes_the_most_uncertain_pairs_first(state):
    X, y, D, a = state
    import scipy.sparse as sp

    G = sp.coo_array(D)
    m = (G.row < G.col) & (a[G.row] >= 0) & (a[G.col] >= 0) & (a[G.row] == a[G.col])
    best = np.abs(G.data[m] - 0.6).min()
    p = GBAS(eps=0.6).propose_from(
        X, a, a, D, aas.PairConstraints(), 2, rng=np.random.default_rng(0)
    )
    i, j = p.pairs[0]
    assert abs(float(sp.csr_array(D)[i, j]) - 0.6) == pytest.approx(best, abs=1e-6)


def test_merge_sources_yield_the_closest_pair_of_each_nearer_cluster_in_turn():
    """The chunked sources (one search for every cluster's first chunk, later chunks
    only when taken) give, cluster by cluster, what the plain definition gives: the
    closest pair (ties to the smallest u, then v) with each other cluster, nearest
    centroid first (ties to the smaller cluster)."""
    from aas_core.sampling.baselines import _centroid_sims, _closest_to_nearest_clusters

    rng = np.random.default_rng(3)
    X = rng.integers(-1, 2, (160, 6)).astype(np.float32)  # exact ties in both orders
    X[np.abs(X).sum(axis=1) == 0, 0] = 1.0
    labels = rng.integers(0, 12, 160)
    labels[:12] = np.arange(12)
    members = [np.flatnonzero(labels == c) for c in range(12)]
    sims = _centroid_sims(X, members)
    for first in ([1] * 12, list(range(12)), [20] * 12):
        sources = _closest_to_nearest_clusters(X, members, sims, first, 2)
        for t, source in enumerate(sources):
            got = [tuple(p) for chunk in source for p in chunk.tolist()]
            want = []
            for o in np.argsort(-sims[t], kind="stable")[:11].tolist():
                block = X[members[t]].astype(np.float64) @ X[members[o]].astype(np.float64).T
                u, v = divmod(int(np.argmax(block)), len(members[o]))
                want.append((int(members[t][u]), int(members[o][v])))
            assert got == want
