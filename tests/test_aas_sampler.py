import numpy as np
import pytest

import aas_core as aas
from aas_core.cluster import closest_partition
from aas_core.sampling import AmbiguityAwareSampler


@pytest.fixture(scope="module")
def state():
    X, y = aas.datasets.make_reid_blobs(800, d=128, seed=4)
    g = aas.knn_graph(X, 20)
    D = aas.k_reciprocal_jaccard(g, k1=20, k2=6, max_distance=0.7)
    a = aas.dbscan(D, eps=0.6, min_samples=4)
    fin = aas.finch(g)
    target = int(a.max() + 1 + (a < 0).sum())
    b = fin.labels[:, closest_partition(fin, target)]
    return X, y, D, a, b


def test_proposal_is_within_budget_unknown_and_reproducible(state):
    X, y, D, a, b = state
    s = AmbiguityAwareSampler()
    c = aas.PairConstraints(n=len(X))
    p = s.propose_from(X, a, b, D, c, 25, rng=np.random.default_rng(0))
    assert 0 < len(p) <= 25 and p.n_candidates >= len(p)
    assert (p.pairs[:, 0] < p.pairs[:, 1]).all()
    assert len(np.unique(p.pairs, axis=0)) == len(p)
    assert ((p.prob > 0) & (p.prob <= 1)).all()
    assert set(p.pool.tolist()) <= {"us", "os"}
    assert ((p.pool == "us") == (p.region >= 0)).all()
    assert set(p.kind[p.pool == "us"].tolist()) <= {"beta1", "beta2", "beta3"}
    again = s.propose_from(X, a, b, D, c, 25, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(p.pairs, again.pairs)
    # answered pairs (and what they imply) are never proposed again
    answers = aas.LabelOracle(y).answer(p.pairs)
    c.add(p.pairs, answers)
    nxt = s.propose_from(X, a, b, D, c, 1000, rng=np.random.default_rng(1))
    assert not c.is_known(nxt.pairs).any()
    assert not {tuple(q) for q in nxt.pairs.tolist()} & {tuple(q) for q in p.pairs.tolist()}


def test_whole_pool_when_it_fits_and_budget_zero(state):
    X, y, D, a, b = state
    s = AmbiguityAwareSampler()
    c = aas.PairConstraints()
    full = s.propose_from(X, a, b, D, c, 10**6, rng=np.random.default_rng(0))
    assert len(full) == full.n_candidates and "fits the budget" in full.message
    assert full.prob.sum() == pytest.approx(1.0)
    assert len(s.propose_from(X, a, b, D, c, 0, rng=np.random.default_rng(0))) == 0


def test_agreement_proposes_nothing_and_says_why(state):
    X, y, D, a, b = state
    p = AmbiguityAwareSampler().propose_from(
        X, b, b, D, aas.PairConstraints(), 10, rng=np.random.default_rng(0)
    )
    assert len(p) == 0 and "agree everywhere" in p.message


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"eps": 1.5}, "'eps' parameter"),
        ({"k_max": 0}, "'k_max' parameter"),
        ({"s_min": -0.1}, "'s_min' parameter"),
        ({"pi": [1, 1]}, "'pi' must be 3"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AmbiguityAwareSampler(**kwargs)


def test_bad_budget_and_constraints(state):
    X, y, D, a, b = state
    s = AmbiguityAwareSampler()
    with pytest.raises(ValueError, match="'budget' parameter"):
        s.propose_from(X, a, b, D, aas.PairConstraints(), -1, rng=np.random.default_rng(0))
    with pytest.raises(TypeError, match="'constraints' must be PairConstraints"):
        s.propose_from(X, a, b, D, [[0, 1]], 5, rng=np.random.default_rng(0))


def _cells_of(a, b):
    from aas_core.sampling import uncertainty_regions
    from aas_core.sampling.cells import cells

    r = uncertainty_regions(a, b)
    return cells(r.labels_a, r.labels_b)[0], r


def test_pool_composition_cells_and_regions(state):
    X, y, D, a, b = state
    g = aas.knn_graph(X, 20)
    c = aas.PairConstraints(n=len(X))
    whole = 10**6
    cells_mode = AmbiguityAwareSampler().propose_from(X, a, b, D, c, whole, rng=0, graph=g)
    regions_mode = AmbiguityAwareSampler(overseg="regions").propose_from(
        X, a, b, D, c, whole, rng=0, graph=g
    )
    cell, r = _cells_of(a, b)
    for p in (cells_mode, regions_mode):
        us = p.pool == "us"
        # U_us: inside one region, inconsistent, and a kNN edge
        assert (r.region[p.pairs[us, 0]] == p.region[us]).all()
        assert (r.region[p.pairs[us, 1]] == p.region[us]).all()
        same_a = r.labels_a[p.pairs[us, 0]] == r.labels_a[p.pairs[us, 1]]
        same_b = r.labels_b[p.pairs[us, 0]] == r.labels_b[p.pairs[us, 1]]
        assert (same_a ^ same_b).all()
        nb = g.indices[:, 1:]
        i, j = p.pairs[us, 0], p.pairs[us, 1]
        assert ((nb[i] == j[:, None]).any(1) | (nb[j] == i[:, None]).any(1)).all()
        assert p.prob.sum() == pytest.approx(1.0)
    # both modes share U_us; they differ in U_os
    np.testing.assert_array_equal(
        cells_mode.pairs[cells_mode.pool == "us"], regions_mode.pairs[regions_mode.pool == "us"]
    )
    os_cells = cells_mode.pool == "os"
    assert set(cells_mode.kind[os_cells].tolist()) <= {"linked", "nearest"}
    assert (cell[cells_mode.pairs[os_cells, 0]] != cell[cells_mode.pairs[os_cells, 1]]).all()
    assert set(regions_mode.kind[regions_mode.pool == "os"].tolist()) <= {"medoids"}
    # the cell pool offers far more over-segmentation questions than the region medoids
    assert os_cells.sum() > 5 * max(1, (regions_mode.pool == "os").sum())


def test_eps_shares_the_probability_between_the_pools(state):
    X, y, D, a, b = state
    c = aas.PairConstraints(n=len(X))
    # a pair found by both pools is listed once, as "us", with both shares
    for eps in (0.0, 0.6, 1.0):
        p = AmbiguityAwareSampler(eps=eps).propose_from(X, a, b, D, c, 10**6, rng=0)
        assert p.prob.sum() == pytest.approx(1.0)
        assert p.prob[p.pool == "os"].sum() <= eps + 1e-9
        assert p.prob[p.pool == "os"].sum() > 0 or eps == 0
        if eps == 0:
            assert (p.prob[p.pool == "os"] == 0).all()
    only_us = AmbiguityAwareSampler(eps=0.0).propose_from(X, a, b, D, c, 10**6, rng=0)
    only_os = AmbiguityAwareSampler(eps=1.0).propose_from(X, a, b, D, c, 10**6, rng=0)
    # eps = 0: probability only on U_us pairs; eps = 1: only on U_os pairs
    us_pairs = {tuple(q) for q in only_us.pairs[only_us.prob > 0].tolist()}
    os_pairs = {tuple(q) for q in only_os.pairs[only_os.prob > 0].tolist()}
    assert us_pairs and os_pairs and us_pairs != os_pairs


def test_answers_shrink_the_pool_and_refinement_closes_regions(state):
    X, y, D, a, b = state
    g = aas.knn_graph(X, 20)
    c = aas.PairConstraints(n=len(X))
    s = AmbiguityAwareSampler()
    first = s.propose_from(X, a, b, D, c, 10**6, rng=0, graph=g)
    c.add(first.pairs, aas.LabelOracle(y).answer(first.pairs))
    a2, b2 = aas.np3(a, c, X), aas.np3(b, c, X)
    second = s.propose_from(X, a2, b2, D, c, 10**6, rng=0, graph=g)
    assert second.n_candidates < first.n_candidates
    assert not c.is_known(second.pairs).any()


def test_bad_overseg_option():
    with pytest.raises(ValueError, match="'overseg' parameter"):
        AmbiguityAwareSampler(overseg="medoids")


# ---- purity checks (AmbiguityAwareSampler(checks=...)) --------------------------------


def _many_singletons_state():
    X, y = aas.datasets.make_suite_member("many-singletons", n=800, seed=0)[:2]
    return aas.cluster_features(X, n_threads=2), y


def test_checks_zero_is_the_papers_sampler():
    s, _ = _many_singletons_state()
    args = (s.X, s.labels_a, s.labels_b, s.D, aas.PairConstraints(), 64)
    a = AmbiguityAwareSampler().propose_from(*args, rng=3, graph=s.graph)
    b = AmbiguityAwareSampler(checks=0.0).propose_from(*args, rng=3, graph=s.graph)
    np.testing.assert_array_equal(a.pairs, b.pairs)
    assert "check" not in set(a.pool.tolist())


def test_checks_take_their_share_and_are_new_pairs():
    s, y = _many_singletons_state()
    known = aas.PairConstraints(n=len(y))
    first = AmbiguityAwareSampler(checks=0.5).propose_from(
        s.X, s.labels_a, s.labels_b, s.D, known, 40, rng=0, graph=s.graph
    )
    known.add(first.pairs, y[first.pairs[:, 0]] == y[first.pairs[:, 1]])
    p = AmbiguityAwareSampler(checks=0.25).propose_from(
        s.X, s.labels_a, s.labels_b, s.D, known, 80, rng=1, graph=s.graph
    )
    assert len(p) == 80 and (p.pool == "check").sum() >= 20
    assert (p.pairs[:, 0] < p.pairs[:, 1]).all()
    assert len(np.unique(p.pairs[:, 0] * len(y) + p.pairs[:, 1])) == 80
    assert not known.is_known(p.pairs).any()
    chk = p.pairs[p.pool == "check"]
    a = s.labels_a
    assert (a[chk[:, 0]] == a[chk[:, 1]]).all() and (a[chk[:, 0]] >= 0).all()  # inside clusters
    assert set(p.kind[p.pool == "check"].tolist()) == {"purity"}
    assert np.isnan(p.prob[p.pool == "check"]).all()


def test_checks_fill_what_agreement_leaves():
    X, _ = aas.datasets.make_reid_blobs(200, d=32, seed=0)
    s = aas.cluster_features(X, k1=10, n_threads=2)
    same = s.labels_a.copy()  # A == B: no region of uncertainty
    p = AmbiguityAwareSampler(checks=0.1).propose_from(
        s.X, same, same, s.D, aas.PairConstraints(), 12, rng=0, graph=s.graph
    )
    assert len(p) == 12 and (p.pool == "check").all()
    assert AmbiguityAwareSampler().propose_from(
        s.X, same, same, s.D, aas.PairConstraints(), 12, rng=0, graph=s.graph
    ).pairs.shape == (0, 2)


@pytest.mark.parametrize("bad", [-0.1, 1.0, float("nan"), "half"])
def test_checks_must_be_a_share(bad):
    with pytest.raises((ValueError, TypeError), match="checks"):
        AmbiguityAwareSampler(checks=bad)


# ---- merge questions (AmbiguityAwareSampler(merges=...)) ------------------------------


def _flanks_state():
    X, y = aas.datasets.make_suite_member("flanks", n=600, seed=0)[:2]
    return aas.cluster_features(X, n_threads=2), y


def test_merges_zero_is_the_papers_sampler():
    s, _ = _flanks_state()
    args = (s.X, s.labels_a, s.labels_b, s.D, aas.PairConstraints(), 48)
    a = AmbiguityAwareSampler().propose_from(*args, rng=3, graph=s.graph)
    b = AmbiguityAwareSampler(merges=0.0).propose_from(*args, rng=3, graph=s.graph)
    np.testing.assert_array_equal(a.pairs, b.pairs)
    assert "merge" not in set(a.pool.tolist())


def test_merges_ask_the_closest_pair_between_nearest_clusters():
    s, y = _flanks_state()
    known = aas.PairConstraints(n=len(y))
    p = AmbiguityAwareSampler(merges=0.5, checks=0.25).propose_from(
        s.X, s.labels_a, s.labels_b, s.D, known, 60, rng=0, graph=s.graph
    )
    assert len(p) == 60 and (p.pool == "merge").sum() >= 30 and (p.pool == "check").sum() >= 1
    assert len(np.unique(p.pairs[:, 0] * len(y) + p.pairs[:, 1])) == 60
    mrg = p.pairs[p.pool == "merge"]
    a = s.labels_a
    assert (a[mrg[:, 0]] != a[mrg[:, 1]]).all() and (a[mrg] >= 0).all()  # across clusters
    assert set(p.kind[p.pool == "merge"].tolist()) == {"merge"}
    # each is the most similar pair of its two clusters
    for i, j in mrg[:10].tolist():
        ma, mb = np.flatnonzero(a == a[i]), np.flatnonzero(a == a[j])
        best = (s.X[ma] @ s.X[mb].T).max()
        assert float(s.X[i] @ s.X[j]) == pytest.approx(best, abs=1e-6)
    # answered, they are not asked again
    known.add(mrg, y[mrg[:, 0]] == y[mrg[:, 1]])
    q = AmbiguityAwareSampler(merges=0.5).propose_from(
        s.X, s.labels_a, s.labels_b, s.D, known, 60, rng=0, graph=s.graph
    )
    assert not known.is_known(q.pairs).any()


@pytest.mark.parametrize("bad", [-0.1, 1.0, float("nan"), "half"])
def test_merges_must_be_a_share(bad):
    with pytest.raises((ValueError, TypeError), match="merges"):
        AmbiguityAwareSampler(merges=bad)
