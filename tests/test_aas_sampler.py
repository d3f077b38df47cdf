import numpy as np
import pytest

import aas_core as aas
from aas_core.cluster import closest_partition
from aas_core.sampling import AmbiguityAwareSampler


def _pool(**kw):
    """The AAS pool alone (U_us and U_os at the paper's fixed split), as the paper samples."""
    return AmbiguityAwareSampler(checks=0.0, merges=0.0, split="fixed", **kw)


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
    s = _pool()
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
    s = _pool()
    c = aas.PairConstraints()
    full = s.propose_from(X, a, b, D, c, 10**6, rng=np.random.default_rng(0))
    assert len(full) == full.n_candidates and "fits the budget" in full.message
    assert full.prob.sum() == pytest.approx(1.0)
    assert len(s.propose_from(X, a, b, D, c, 0, rng=np.random.default_rng(0))) == 0


def test_agreement_proposes_nothing_and_says_why(state):
    X, y, D, a, b = state
    p = _pool().propose_from(X, b, b, D, aas.PairConstraints(), 10, rng=np.random.default_rng(0))
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
    s = _pool()
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
    cells_mode = _pool().propose_from(X, a, b, D, c, whole, rng=0, graph=g)
    regions_mode = _pool(overseg="regions").propose_from(X, a, b, D, c, whole, rng=0, graph=g)
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
        p = _pool(eps=eps).propose_from(X, a, b, D, c, 10**6, rng=0)
        assert p.prob.sum() == pytest.approx(1.0)
        assert p.prob[p.pool == "os"].sum() <= eps + 1e-9
        assert p.prob[p.pool == "os"].sum() > 0 or eps == 0
        if eps == 0:
            assert (p.prob[p.pool == "os"] == 0).all()
    only_us = _pool(eps=0.0).propose_from(X, a, b, D, c, 10**6, rng=0)
    only_os = _pool(eps=1.0).propose_from(X, a, b, D, c, 10**6, rng=0)
    # eps = 0: probability only on U_us pairs; eps = 1: only on U_os pairs
    us_pairs = {tuple(q) for q in only_us.pairs[only_us.prob > 0].tolist()}
    os_pairs = {tuple(q) for q in only_os.pairs[only_os.prob > 0].tolist()}
    assert us_pairs and os_pairs and us_pairs != os_pairs


def test_answers_shrink_the_pool_and_refinement_closes_regions(state):
    X, y, D, a, b = state
    g = aas.knn_graph(X, 20)
    c = aas.PairConstraints(n=len(X))
    s = _pool()
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
    a = _pool().propose_from(*args, rng=3, graph=s.graph)
    b = AmbiguityAwareSampler.paper(overseg="cells").propose_from(*args, rng=3, graph=s.graph)
    np.testing.assert_array_equal(a.pairs, b.pairs)
    assert "check" not in set(a.pool.tolist())


def test_checks_take_their_share_and_are_new_pairs():
    s, y = _many_singletons_state()
    known = aas.PairConstraints(n=len(y))
    first = AmbiguityAwareSampler(checks=0.5, merges=0.0, split="fixed").propose_from(
        s.X, s.labels_a, s.labels_b, s.D, known, 40, rng=0, graph=s.graph
    )
    known.add(first.pairs, y[first.pairs[:, 0]] == y[first.pairs[:, 1]])
    p = AmbiguityAwareSampler(checks=0.25, merges=0.0, split="fixed").propose_from(
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
    p = AmbiguityAwareSampler(checks=0.1, merges=0.0, split="fixed").propose_from(
        s.X, same, same, s.D, aas.PairConstraints(), 12, rng=0, graph=s.graph
    )
    assert len(p) == 12 and (p.pool == "check").all()
    assert _pool().propose_from(
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
    a = _pool().propose_from(*args, rng=3, graph=s.graph)
    b = AmbiguityAwareSampler.paper(overseg="cells").propose_from(*args, rng=3, graph=s.graph)
    np.testing.assert_array_equal(a.pairs, b.pairs)
    assert "merge" not in set(a.pool.tolist())


def test_merges_ask_the_closest_pair_between_nearest_clusters():
    s, y = _flanks_state()
    known = aas.PairConstraints(n=len(y))
    p = AmbiguityAwareSampler(merges=0.5, checks=0.25, split="fixed").propose_from(
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
    q = AmbiguityAwareSampler(merges=0.5, checks=0.0, split="fixed").propose_from(
        s.X, s.labels_a, s.labels_b, s.D, known, 60, rng=0, graph=s.graph
    )
    assert not known.is_known(q.pairs).any()


@pytest.mark.parametrize("bad", [-0.1, 1.0, float("nan"), "half"])
def test_merges_must_be_a_share(bad):
    with pytest.raises((ValueError, TypeError), match="merges"):
        AmbiguityAwareSampler(merges=bad)


# ---- the budget split by yield (AmbiguityAwareSampler(split="yield")) -----------------


def test_yield_shares_by_hand():
    from aas_core.sampling.aas import _yield_shares

    np.testing.assert_allclose(_yield_shares([0.5, 0.5, 0.5, 0.5], 0.05), [0.25] * 4)
    # proportional above the floor: 0.05 + 0.8 * y / sum(y)
    got = _yield_shares([0.0, 0.0, 0.9, 0.1], 0.05)
    np.testing.assert_allclose(got, [0.05, 0.05, 0.05 + 0.8 * 0.9, 0.05 + 0.8 * 0.1])
    assert got.sum() == pytest.approx(1.0)


def test_yields_count_answers_that_contradict_dbscan_by_hand():
    from aas_core.sampling.aas import _yields

    pairs = np.array([[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [1, 2]])
    last = {
        "key": None,
        "pairs": pairs,
        "arm": np.array([0, 0, 1, 2, 3, -1]),  # us, us, os, check, merge, another pool
        "together": np.array([True, False, False, True, False, False]),
    }
    c = aas.PairConstraints()
    assert _yields(last, c) is None  # nothing answered yet
    # us: (0, 1) together, "same": no change; (2, 3) apart, "same": a merge DBSCAN missed
    # os: (4, 5) never answered ("can't tell"); check: (6, 7) together, "different";
    # merge: (8, 9) apart, "different"; (1, 2) of another pool is not counted
    c.add(np.array([[0, 1], [3, 2], [6, 7], [8, 9], [1, 2]]), [True, True, False, False, True])
    np.testing.assert_allclose(_yields(last, c), [(1 + 0.5) / 3, 0.5 / 1, (1 + 0.5) / 2, 0.5 / 2])


def test_yield_split_moves_the_budget_to_what_corrects_the_clustering():
    # many singletons: DBSCAN and FINCH agree on the images they misplace, so the AAS
    # pool's answers change little and the purity checks' change much
    s, y = _many_singletons_state()
    oracle = aas.LabelOracle(y)
    sampler = AmbiguityAwareSampler(split="yield", checks=0.1, merges=0.1)
    loop = aas.ActiveLoop(
        s.X, sampler, oracle, budget_per_cycle=60, cycles=2, seed=0, clusters=s, n_threads=2
    )
    records = loop.run()
    assert "split by yield" not in records[1]["message"]
    assert "split by yield" in records[2]["message"]
    first = AmbiguityAwareSampler(checks=0.1, merges=0.1)._first_shares()
    assert sampler.shares_[2] > 2 * first[2]  # the checks' share grew
    assert sampler.shares_.min() >= sampler.floor - 1e-12
    assert sampler.shares_.sum() == pytest.approx(1.0)
    assert records[2]["pairs_asked"] == 60


def test_yield_split_forgets_another_number_of_images_but_not_a_new_embedding():
    s, y = _many_singletons_state()
    c = aas.PairConstraints()
    sampler = AmbiguityAwareSampler()
    p = sampler.propose_from(s.X, s.labels_a, s.labels_b, s.D, c, 40, rng=0, graph=s.graph)
    c.add(p.pairs, y[p.pairs[:, 0]] == y[p.pairs[:, 1]])
    # the same images embedded anew: what their answers said still holds
    X2 = s.X + np.float32(0.01) * np.random.default_rng(0).standard_normal(s.X.shape, np.float32)
    X2 /= np.linalg.norm(X2, axis=1, keepdims=True)
    q = sampler.propose_from(X2, s.labels_a, s.labels_b, s.D, c, 40, rng=1, graph=s.graph)
    assert "split by yield" in q.message
    # other images (another number of them): the answers are about other rows
    m = 500
    inside = (p.pairs < m).all(axis=1)
    assert inside.any()
    c2 = aas.PairConstraints()
    c2.add(p.pairs[inside], y[p.pairs[inside, 0]] == y[p.pairs[inside, 1]])
    sub = aas.cluster_features(s.X[:m], n_threads=2)
    args = (sub.X, sub.labels_a, sub.labels_b, sub.D, c2, 30)
    fresh = AmbiguityAwareSampler()
    first = (s.X, s.labels_a, s.labels_b, s.D, aas.PairConstraints(), 40)
    fresh.propose_from(*first, rng=0, graph=s.graph)
    assert np.array_equal(fresh._last["pairs"], p.pairs)
    r = fresh.propose_from(*args, rng=0)
    assert "split by yield" not in r.message
    np.testing.assert_allclose(fresh.shares_, fresh._first_shares())
    # (what would have happened had it kept them: the shares by those answers)
    fresh.propose_from(*first, rng=0, graph=s.graph)
    fresh._last["key"] = m
    assert "split by yield" in fresh.propose_from(*args, rng=0).message


def test_the_default_asks_checks_and_merges_where_a_and_b_agree():
    s, y = _many_singletons_state()
    same = s.labels_a.copy()  # no region of uncertainty: the pool is empty
    p = AmbiguityAwareSampler().propose_from(
        s.X, same, same, s.D, aas.PairConstraints(), 30, rng=0, graph=s.graph
    )
    assert len(p) == 30 and set(p.pool.tolist()) == {"check", "merge"}
    assert len(_pool().propose_from(s.X, same, same, s.D, aas.PairConstraints(), 30, rng=0)) == 0


def test_defaults_and_the_papers_sampler():
    d = AmbiguityAwareSampler()
    assert (d.split, d.checks, d.merges, d.floor, d.overseg) == ("yield", 0.2, 0.1, 0.05, "cells")
    p = AmbiguityAwareSampler.paper()
    assert (p.eps, p.k_max, p.s_min, p.overseg) == (0.6, 5, 0.3, "regions")
    assert (p.split, p.checks, p.merges) == ("fixed", 0.0, 0.0)
    assert "split='fixed'" in repr(p) and "floor" not in repr(p)


def test_fixed_split_is_unchanged_by_answers():
    s, y = _many_singletons_state()
    sampler = AmbiguityAwareSampler(checks=0.1, merges=0.1, split="fixed")
    c = aas.PairConstraints()
    p = sampler.propose_from(s.X, s.labels_a, s.labels_b, s.D, c, 40, rng=0, graph=s.graph)
    c.add(p.pairs, y[p.pairs[:, 0]] == y[p.pairs[:, 1]])
    sampler.propose_from(s.X, s.labels_a, s.labels_b, s.D, c, 40, rng=1, graph=s.graph)
    np.testing.assert_allclose(sampler.shares_, [0.32, 0.48, 0.1, 0.1])


@pytest.mark.parametrize(
    "kw, name",
    [
        ({"split": "bandit"}, "split"),
        ({"split": "yield", "floor": 0.3}, "floor"),
        ({"floor": -0.01}, "floor"),
        ({"checks": 0.5, "merges": 0.5}, "checks"),
    ],
)
def test_split_options_are_checked(kw, name):
    with pytest.raises((ValueError, TypeError), match=name):
        AmbiguityAwareSampler(**kw)


def test_state_round_trip_proposes_what_the_sampler_would_have():
    # a resumed run (a checkpoint holds get_state) asks the pairs the uninterrupted one asks
    s, y = _many_singletons_state()
    args = (s.X, s.labels_a, s.labels_b, s.D)
    c = aas.PairConstraints()
    whole = AmbiguityAwareSampler()
    p = whole.propose_from(*args, c, 40, rng=0, graph=s.graph)
    c.add(p.pairs, y[p.pairs[:, 0]] == y[p.pairs[:, 1]])
    import json

    state = json.loads(json.dumps(whole.get_state()))  # plain Python values
    resumed = AmbiguityAwareSampler()
    resumed.set_state(state)
    a = whole.propose_from(*args, c, 40, rng=1, graph=s.graph)
    b = resumed.propose_from(*args, c, 40, rng=1, graph=s.graph)
    np.testing.assert_array_equal(a.pairs, b.pairs)
    np.testing.assert_allclose(whole.shares_, resumed.shares_)
    forgot = AmbiguityAwareSampler()
    forgot.propose_from(*args, c, 40, rng=1, graph=s.graph)
    assert not np.allclose(forgot.shares_, whole.shares_)  # the state is what made the split
    assert AmbiguityAwareSampler().get_state() is None
    assert aas.sampling.LBAS().get_state() is None


@pytest.mark.parametrize(
    "state",
    [
        {"images": 5, "pairs": [[0, 1]], "arm": [0, 1], "together": [True]},
        {"images": 5, "pairs": [[0, 1]], "arm": [7], "together": [True]},
        {"pairs": [[0, 1]]},
        "nonsense",
    ],
)
def test_a_bad_state_is_refused(state):
    with pytest.raises(ValueError, match="set_state"):
        AmbiguityAwareSampler().set_state(state)
    with pytest.raises(ValueError, match="LBAS.set_state: this sampler keeps no state"):
        aas.sampling.LBAS().set_state(state)
