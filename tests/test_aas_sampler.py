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
