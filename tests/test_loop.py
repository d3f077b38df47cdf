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
