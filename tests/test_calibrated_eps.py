"""eps from answers to near pairs drawn uniformly: calibrated_eps, ActiveLoop(calibrate)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.isotonic import IsotonicRegression

import aas_core as aas
from aas_core.cluster import calibrated_eps, calibration_pairs
from aas_core.cluster.eps import _decreasing_fit, _distances
from aas_core.datasets import make_suite_member
from aas_core.metrics.clustering import pairwise_f1


@pytest.fixture(scope="module")
def bursts():
    """A member whose data-only eps is far off (0.2 against a best of ~0.6)."""
    X, y = make_suite_member("bursts", n=600, seed=0)[:2]
    return X, y, aas.cluster_features(X, n_threads=2)


def test_decreasing_fit_by_hand():
    ux, fitted = _decreasing_fit([0.1, 0.2, 0.3, 0.3], [1, 0, 1, 0])
    assert ux.tolist() == [0.1, 0.2, 0.3]
    # 0.2's mean 0 rises to 0.3's 0.5: pooled by answers, (0 + 1 + 0) / 3
    np.testing.assert_allclose(fitted, [1.0, 1 / 3, 1 / 3])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 200).map(lambda k: k / 200), st.booleans()),
        min_size=1,
        max_size=60,
    )
)
def test_decreasing_fit_matches_sklearn(data):
    # distances on a grid: sklearn merges x values closer than its tolerance, we do not
    x = np.array([a for a, _ in data])
    y = np.array([float(b) for _, b in data])
    ux, fitted = _decreasing_fit(x, y)
    assert (np.diff(fitted) <= 1e-12).all()
    ref = IsotonicRegression(increasing=False).fit(x, y).predict(ux)
    np.testing.assert_allclose(fitted, ref, atol=1e-9)


def test_distances_read_stored_entries_and_one_elsewhere(bursts):
    _, _, s = bursts
    D = s.D.tocsr()
    rng = np.random.default_rng(0)
    pairs = np.vstack(
        [rng.integers(0, D.shape[0], (500, 2)), np.repeat(np.arange(5), 2).reshape(5, 2)]
    )
    mask = D.copy()
    mask.data[:] = 1
    stored = np.asarray(mask[pairs[:, 0], pairs[:, 1]]).ravel() > 0
    ref = np.where(stored, np.asarray(D[pairs[:, 0], pairs[:, 1]]).ravel(), 1.0)
    np.testing.assert_array_equal(_distances(D, pairs), ref)
    assert stored.any() and (~stored).any()


def test_calibration_pairs_are_unanswered_knn_edges(bursts):
    _, y, s = bursts
    pairs = calibration_pairs(s.graph, 100, 0)
    assert pairs.shape == (100, 2) and (pairs[:, 0] < pairs[:, 1]).all()
    nb = s.graph.indices
    assert all(j in nb[i] or i in nb[j] for i, j in pairs)
    np.testing.assert_array_equal(pairs, calibration_pairs(s.graph, 100, 0))  # seeded
    known = aas.PairConstraints(n=len(y))
    known.add(pairs[:50], y[pairs[:50, 0]] == y[pairs[:50, 1]])
    again = calibration_pairs(s.graph, 10**6, 1, known)
    assert not known.is_known(again).any()
    assert len(np.unique(again[:, 0] * len(y) + again[:, 1])) == len(again)


def test_calibrated_eps_finds_what_the_data_eps_misses(bursts):
    X, y, s = bursts
    wide = aas.cluster_features(X, eps=0.9, n_threads=2)
    grid = np.round(np.arange(0.10, 0.841, 0.02), 2)
    f1 = [pairwise_f1(y, aas.dbscan(wide.D, eps=float(e), min_samples=4)) for e in grid]
    data_regret = max(f1) - pairwise_f1(y, s.labels_a)
    assert data_regret > 0.3  # what the calibration is for
    pairs = calibration_pairs(s.graph, 100, 0)
    choice = calibrated_eps(s.D, s.graph, pairs, y[pairs[:, 0]] == y[pairs[:, 1]], fallback=s.eps)
    assert choice.source == "calibrated" and choice.data_eps == s.eps.eps
    labels = aas.dbscan(s.D, eps=choice.eps, min_samples=4)
    assert max(f1) - pairwise_f1(y, labels) <= 0.03
    assert "100 answers to near pairs" in choice.message


def _some_answers(y, s, n_same, n_different):
    """The first n_same "same" and n_different "different" of 400 calibration pairs."""
    pairs = calibration_pairs(s.graph, 400, 0)
    same = y[pairs[:, 0]] == y[pairs[:, 1]]
    few = np.concatenate([pairs[same][:n_same], pairs[~same][:n_different]])
    answers = np.concatenate([np.ones(n_same, bool), np.zeros(n_different, bool)])
    return pairs, few, answers


def test_too_few_same_answers_keep_the_fallback(bursts):
    _, y, s = bursts
    pairs, few, answers = _some_answers(y, s, 2, 20)
    choice = calibrated_eps(s.D, s.graph, few, answers, fallback=s.eps)
    assert choice.eps == s.eps.eps and choice.source == "data"
    assert "2 of 22 near pairs were the same animal" in choice.message
    with pytest.raises(ValueError, match="3 pairs but 2 answers"):
        calibrated_eps(s.D, s.graph, pairs[:3], answers[:2])


def _regret(member, eps):
    X, y = make_suite_member(member, n=600, seed=0)[:2]
    wide = aas.cluster_features(X, eps=0.9, n_threads=2)
    grid = np.round(np.arange(0.10, 0.841, 0.02), 2)
    f1 = [pairwise_f1(y, aas.dbscan(wide.D, eps=float(e), min_samples=4)) for e in grid]
    return max(f1) - pairwise_f1(y, aas.dbscan(wide.D, eps=eps, min_samples=4))


def test_all_same_answers_large_identities():
    """Identities larger than the neighbourhoods: every near pair is the same animal."""
    X, y = make_suite_member("large-ids", n=600, seed=0)[:2]
    s = aas.cluster_features(X, n_threads=2)
    pairs = calibration_pairs(s.graph, 100, 0)
    same = y[pairs[:, 0]] == y[pairs[:, 1]]
    assert same.all()
    choice = calibrated_eps(s.D, s.graph, pairs, same, fallback=s.eps)
    assert choice.source == "calibrated" and "(100 same, 0 different)" in choice.message
    assert _regret("large-ids", s.eps.eps) > 0.2 and _regret("large-ids", choice.eps) <= 0.03


def test_answers_that_agree_with_the_data_keep_its_eps():
    X, y = make_suite_member("mid-10-d256", n=600, seed=0)[:2]
    s = aas.cluster_features(X, n_threads=2)
    pairs = calibration_pairs(s.graph, 100, 0)
    choice = calibrated_eps(s.D, s.graph, pairs, y[pairs[:, 0]] == y[pairs[:, 1]], fallback=s.eps)
    assert choice.eps == s.eps.eps and choice.source == "data"
    assert "agree with it" in choice.message


def test_active_loop_calibrates_out_of_the_budget(bursts):
    X, y, s = bursts
    budget = 50
    loop = aas.ActiveLoop(
        X,
        aas.sampling.RandomPairSampler(),
        aas.LabelOracle(y),
        budget_per_cycle=budget,
        cycles=3,
        seed=0,
        clusters=s,
        calibrate=80,  # more than one cycle's budget: cycle 2 pays the rest
        n_threads=2,
    )
    records = loop.run()
    assert [r["pairs_asked"] for r in records] == [0, 80, 20, 50]
    assert [r["pairs_total"] for r in records] == [0, 80, 100, 150]
    assert [r["eps_source"] for r in records] == ["data", "calibrated", "calibrated", "calibrated"]
    pairs, same = loop.calibration_
    assert len(pairs) == 80 and loop.constraints.is_known(pairs).all()
    np.testing.assert_array_equal(same, y[pairs[:, 0]] == y[pairs[:, 1]])
    assert records[1]["message"].startswith("calibration: eps ")
    assert records[1]["pairwise_f1"] > records[0]["pairwise_f1"] + 0.3
    assert s.eps.source == "data"  # the shared state is not changed


def test_the_first_proposal_reads_the_clustering_at_the_calibrated_eps(bursts):
    # the sampler of cycle 1 is asked after the calibration: it must see the clusters at
    # the eps the answers chose (with those answers folded in), not the data eps' ones
    X, y, s = bursts
    seen = []

    class Spy(aas.sampling.RandomPairSampler):
        def propose_from(self, X, labels_a, labels_b, D, constraints, budget, **kw):
            seen.append((labels_a.copy(), len(constraints)))
            return super().propose_from(X, labels_a, labels_b, D, constraints, budget, **kw)

    loop = aas.ActiveLoop(
        X, Spy(), aas.LabelOracle(y), budget_per_cycle=60, cycles=1, seed=0, clusters=s,
        calibrate=40, n_threads=2,
    )  # fmt: skip
    loop.run()
    pairs, same = loop.calibration_
    want = s._calibrated(pairs, same, n_threads=2)[0]
    assert want.eps.source == "calibrated"
    labels, known = seen[0]
    assert known == 40
    answered = aas.PairConstraints()
    answered.add(pairs, same)
    expect = aas.np3(want.labels_a, answered, X)
    assert pairwise_f1(labels, expect) > 0.99  # the same partition
    assert pairwise_f1(labels, s.labels_a) < 0.9  # not the data eps' one


def test_calibrate_needs_auto_eps(bursts):
    X, y, s = bursts
    sampler, oracle = aas.sampling.RandomPairSampler(), aas.LabelOracle(y)
    kw = dict(budget_per_cycle=10, cycles=1)
    with pytest.raises(ValueError, match="'calibrate' chooses eps"):
        aas.ActiveLoop(X, sampler, oracle, eps=0.6, calibrate=10, **kw)
    with pytest.raises(ValueError, match="'calibrate' chooses eps"):
        aas.ActiveLoop(X, sampler, oracle, eps_from_answers=True, calibrate=10, **kw)
    given = aas.cluster_features(X, eps=0.6, n_threads=2)
    with pytest.raises(ValueError, match="'calibrate' chooses eps"):
        aas.ActiveLoop(X, sampler, oracle, clusters=given, calibrate=10, **kw)
    with pytest.raises(ValueError, match="calibrate"):
        aas.ActiveLoop(X, sampler, oracle, calibrate=-1, **kw)


def _expected_f1_reference(X, D, pairs, same, grid):
    """The estimate written out densely: sklearn's isotonic P(same | cosine) over every
    pair (0 below the least similar "same" answer), each grid eps's expected pairwise F1."""
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    cos = np.einsum("ij,ij->i", X[pairs[:, 0]].astype(np.float64), X[pairs[:, 1]])
    iso = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(cos, same)
    iu = np.triu_indices(len(X), 1)
    c_all = (X @ X.T)[iu].astype(np.float64)
    p = np.where(c_all >= cos[same].min(), iso.predict(c_all), 0.0)
    scores = []
    for e in grid:
        lab = aas.dbscan(D, eps=float(e), min_samples=4)
        inside = (lab[iu[0]] == lab[iu[1]]) & (lab[iu[0]] >= 0)
        scores.append(2 * p[inside].sum() / (inside.sum() + p.sum()))
    return np.array(scores)


@pytest.mark.parametrize("member", ["flanks", "zipf1-4-d64"])
def test_expected_f1_matches_a_dense_reference_and_counts_every_pair_inside(member):
    X, y = make_suite_member(member, n=400, seed=1)[:2]
    s = aas.cluster_features(X, n_threads=2)
    pairs = calibration_pairs(s.graph, 150, 3)
    same = y[pairs[:, 0]] == y[pairs[:, 1]]
    grid = np.round(np.arange(0.10, 0.841, 0.02), 2)
    ref = _expected_f1_reference(X, s.D, pairs, same, grid)
    choice = calibrated_eps(s.D, s.graph, pairs, same, fallback=s.eps)
    best = int(np.argmax(ref))
    if choice.source == "calibrated":
        assert choice.eps == pytest.approx(grid[best])
        assert f"expected pairwise F1 {ref[best]:.3f}" in choice.message
    else:  # the data's eps was within CALIBRATION_GAIN of the best
        assert f"at best {ref[best]:.3f} with eps {grid[best]:.2f}" in choice.message


def test_too_many_near_pairs_keep_the_fallback(bursts, monkeypatch):
    from aas_core.cluster import eps as eps_module

    _, y, s = bursts
    pairs = calibration_pairs(s.graph, 100, 0)
    monkeypatch.setattr(eps_module, "NEAR_PAIRS_LIMIT", 50)
    choice = calibrated_eps(s.D, s.graph, pairs, y[pairs[:, 0]] == y[pairs[:, 1]], fallback=s.eps)
    assert choice.eps == s.eps.eps and "too many to weigh, so eps stays" in choice.message


def test_three_same_answers_are_enough_to_calibrate(bursts):
    _, y, s = bursts
    _, few, answers = _some_answers(y, s, 3, 40)
    choice = calibrated_eps(s.D, s.graph, few, answers, fallback=s.eps)
    assert "a calibration needs" not in choice.message
    assert "(3 same, 40 different)" in choice.message
