import numpy as np
import pytest

import aas_core as aas
from aas_core.loop import ActiveLoop, cluster_features
from aas_core.sampling import GBAS, LBAS, AmbiguityAwareSampler, NISSampler, RandomPairSampler


@pytest.fixture(scope="module")
def blobs():
    return aas.datasets.make_reid_blobs(600, d=1024, seed=1)


@pytest.mark.parametrize(
    "sampler", [AmbiguityAwareSampler(), RandomPairSampler(), NISSampler(), LBAS(), GBAS()]
)
def test_loop_records_every_cycle_and_keeps_every_answer(blobs, sampler):
    X, y = blobs
    loop = ActiveLoop(X, sampler, aas.LabelOracle(y), budget_per_cycle=30, cycles=3, seed=0)
    recs = loop.run()
    assert [r["cycle"] for r in recs] == [0, 1, 2, 3]
    assert recs[0]["pairs_total"] == 0
    assert sum(r["pairs_asked"] for r in recs) == recs[-1]["pairs_total"] == len(loop.constraints)
    assert all(r["pairs_asked"] <= 30 for r in recs)
    for r in recs:
        assert 0.0 <= r["pairwise_f1"] <= 1.0 and -1.0 <= r["ari"] <= 1.0
    # the refined labels satisfy every answer (NP3)
    final = aas.np3(cluster_features(X).labels_a, loop.constraints, X)
    ml, cl = loop.constraints.must_link, loop.constraints.cannot_link
    assert (final[ml[:, 0]] == final[ml[:, 1]]).all()
    assert (final[cl[:, 0]] != final[cl[:, 1]]).all()


def test_answers_improve_the_clustering(blobs):
    X, y = blobs
    recs = ActiveLoop(
        X, AmbiguityAwareSampler(), aas.LabelOracle(y), budget_per_cycle=0.002, cycles=3, seed=0
    ).run()
    assert recs[-1]["pairwise_f1"] > recs[0]["pairwise_f1"]
    assert recs[-1]["budget_used_pct"] <= 3 * 0.2 + 1e-9


def test_seeded_runs_are_reproducible(blobs):
    X, y = blobs
    runs = [
        ActiveLoop(
            X, RandomPairSampler(), aas.LabelOracle(y), budget_per_cycle=20, cycles=2, seed=3
        ).run()
        for _ in range(2)
    ]
    strip = [[{k: v for k, v in r.items() if k != "seconds"} for r in run] for run in runs]
    assert strip[0] == strip[1]


def test_degenerate_inputs_run(blobs):
    X, y = blobs
    two = ActiveLoop(
        X[:2], AmbiguityAwareSampler(), aas.LabelOracle(y[:2]), budget_per_cycle=5, cycles=2, seed=0
    ).run()
    assert len(two) == 3
    one_id = ActiveLoop(
        X[:40],
        RandomPairSampler(),
        aas.LabelOracle(np.zeros(40, np.int64)),
        budget_per_cycle=10,
        cycles=2,
        seed=0,
    ).run()
    assert one_id[-1]["pairs_total"] == 20
    zero = ActiveLoop(
        X, AmbiguityAwareSampler(), aas.LabelOracle(y), budget_per_cycle=0, cycles=2, seed=0
    ).run()
    assert zero[-1]["pairs_total"] == 0


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"budget_per_cycle": -1, "cycles": 1}, ValueError, "'budget_per_cycle' parameter"),
        ({"budget_per_cycle": 1.5, "cycles": 1}, ValueError, "'budget_per_cycle' parameter"),
        ({"budget_per_cycle": 5, "cycles": -1}, ValueError, "'cycles' parameter"),
    ],
)
def test_bad_loop_parameters(blobs, kwargs, exc, match):
    X, y = blobs
    with pytest.raises(exc, match=match):
        ActiveLoop(X, RandomPairSampler(), aas.LabelOracle(y), **kwargs)
    with pytest.raises(TypeError, match="'sampler' must have a propose_from"):
        ActiveLoop(X, object(), aas.LabelOracle(y), budget_per_cycle=1, cycles=1)


def test_all_outliers_and_noisy_answers_still_run(blobs):
    X, y = blobs
    # min_samples above n: DBSCAN calls every image an outlier
    recs = ActiveLoop(
        X[:200],
        AmbiguityAwareSampler(),
        aas.LabelOracle(y[:200]),
        budget_per_cycle=30,
        cycles=2,
        seed=0,
        min_samples=500,
    ).run()
    assert recs[0]["clusters"] == 200 and recs[0]["pairwise_precision"] == 1.0
    assert recs[-1]["pairs_total"] > 0 and recs[-1]["pairwise_f1"] >= recs[0]["pairwise_f1"]
    # an annotator who flips 30% of the answers contradicts themselves; the loop
    # keeps every answer and NP3 ignores the oldest of each contradiction
    loop = ActiveLoop(
        X,
        RandomPairSampler(),
        aas.LabelOracle(y, noise=0.3, seed=1),
        budget_per_cycle=400,
        cycles=2,
        seed=0,
    )
    recs = loop.run()
    assert len(loop.constraints) == recs[-1]["pairs_total"] == 800
    assert not loop.constraints.is_consistent and recs[-1]["dropped"] > 0
    with pytest.raises(ValueError, match="inconsistent"):
        ActiveLoop(
            X,
            RandomPairSampler(),
            aas.LabelOracle(y, noise=0.3, seed=1),
            budget_per_cycle=400,
            cycles=2,
            seed=0,
            on_conflict="raise",
        ).run()


def test_shared_clusters_give_the_same_run(blobs):
    X, y = blobs
    state = cluster_features(X)
    kw = dict(budget_per_cycle=25, cycles=2, seed=4)
    a = ActiveLoop(X, AmbiguityAwareSampler(), aas.LabelOracle(y), **kw).run()
    b = ActiveLoop(X, AmbiguityAwareSampler(), aas.LabelOracle(y), clusters=state, **kw).run()
    strip = [[{k: v for k, v in r.items() if k != "seconds"} for r in run] for run in (a, b)]
    assert strip[0] == strip[1]
    with pytest.raises(ValueError, match="'clusters' was computed for"):
        ActiveLoop(X[:50], RandomPairSampler(), aas.LabelOracle(y[:50]), clusters=state, **kw)
    with pytest.raises(ValueError, match="the oracle knows"):
        ActiveLoop(X[:50], RandomPairSampler(), aas.LabelOracle(y), **kw)


def test_sampler_propose_from_features_matches_the_loop_state(blobs):
    X, y = blobs
    c = aas.PairConstraints(n=len(X))
    p = AmbiguityAwareSampler().propose(X, c, 20, rng=0)
    state = cluster_features(X)
    q = AmbiguityAwareSampler().propose_from(
        state.X, state.labels_a, state.labels_b, state.D, c, 20, rng=0, graph=state.graph
    )
    np.testing.assert_array_equal(p.pairs, q.pairs)
    with pytest.raises(TypeError, match="'rng' parameter"):
        AmbiguityAwareSampler().propose(X, c, 20, rng="seed")


class _InsideAsker(aas.sampling.PairSampler):
    """Asks about pairs inside A's largest cluster (and 2 inside each of 5 others);
    records the clusterings it is given."""

    def __init__(self):
        self.seen = []

    def propose_from(self, X, labels_a, labels_b, D, constraints, budget, *, rng, graph=None):
        self.seen.append((labels_a.copy(), labels_b.copy()))
        # 8 images together in A's largest cluster and in one cluster of B
        sizes = np.bincount(labels_a[labels_a >= 0])
        big = sizes.argmax()
        inside = labels_a == big
        members = np.flatnonzero(inside & (labels_b == np.bincount(labels_b[inside]).argmax()))[:8]
        pairs = [(i, j) for i in members for j in members if i < j][:28]
        for c in np.argsort(-sizes)[1:6]:
            first = np.flatnonzero(labels_a == c)[:3]
            pairs += [(first[0], first[1]), (first[0], first[2])]
        pairs = np.array(pairs, np.int64)
        pairs = pairs[~constraints.is_known(pairs)]
        m = len(pairs)
        return aas.sampling.PairProposal(
            pairs, np.ones(m), np.full(m, "x"), np.full(m, ""), np.full(m, -1), m, "inside"
        )


def test_the_loop_dissolves_mixed_clusters_in_a_but_not_in_b(blobs):
    X, _ = blobs
    state = cluster_features(X)
    a = state.labels_a
    big = np.bincount(a[a >= 0]).argmax()
    # an oracle for whom A's largest cluster is a mix (every image another animal) and
    # every other cluster one animal
    truth = np.where(a == big, len(X) + np.arange(len(X)), a)
    sampler = _InsideAsker()
    loop = ActiveLoop(
        X, sampler, aas.LabelOracle(truth), budget_per_cycle=38, cycles=1, seed=0, clusters=state
    )
    loop.run()
    a0, b0 = sampler.seen[0]
    asked = np.unique(loop.constraints.pairs)
    gone = (a0 == big) & ~np.isin(np.arange(len(X)), asked)
    assert gone.any() and (loop.labels_[gone] == -1).all()  # dissolved: outliers
    assert [r["mixed_clusters"] for r in loop.records_] == [0, 1]
    assert loop.constraints.is_must_link.sum() == 10
    # the same through sampler.propose, which refines A and B as the loop does
    got = _InsideAsker()
    got.propose(X, loop.constraints, 5, rng=0, clusters=state)
    a2, b2 = got.seen[0]
    assert (a2[gone] == -1).all()
    # B keeps grouping them (NP3 still splits B along the "different" answers)
    b_big = b0[loop.constraints.pairs[0, 0]]
    kept = (b0 == b_big) & ~np.isin(np.arange(len(X)), asked)
    assert kept.any() and (b2[kept] >= 0).all() and max(np.bincount(b2[kept])) > 1
