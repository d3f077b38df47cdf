import numpy as np
import pytest

from aas_core.metrics import open_set as osm

# ---- the protocol split -------------------------------------------------------


def test_split_holds_out_a_fifth_of_the_identities_and_caps_exemplars():
    sizes = np.arange(1, 11)  # identity k has k + 1 images
    ids = np.repeat(np.arange(10), sizes)
    s = osm.protocol_split(ids, seed=3)
    assert len(s.unknown) == 2 and len(s.known) == 8
    assert np.array_equal(np.sort(np.concatenate([s.known, s.unknown])), np.arange(10))
    per_id = np.bincount(ids[s.gallery], minlength=10)
    assert np.array_equal(per_id[s.known], np.minimum(sizes[s.known], 5))
    assert np.all(per_id[s.unknown] == 0)
    assert len(np.unique(s.gallery)) == len(s.gallery)
    # grouped by identity, identities ascending
    assert np.all(np.diff(ids[s.gallery]) >= 0)


def test_split_is_seeded():
    ids = np.repeat(np.arange(50), 3)
    a, b = osm.protocol_split(ids, seed=1), osm.protocol_split(ids, seed=1)
    np.testing.assert_array_equal(a.unknown, b.unknown)
    np.testing.assert_array_equal(a.gallery, b.gallery)
    assert not np.array_equal(a.unknown, osm.protocol_split(ids, seed=2).unknown)


def test_split_rounding_and_edges():
    assert len(osm.protocol_split(np.arange(5), seed=0).unknown) == 1  # 1.0
    assert len(osm.protocol_split(np.arange(3), seed=0).unknown) == 1  # 0.6 rounds up
    assert len(osm.protocol_split(np.arange(2), seed=0).unknown) == 0  # 0.4 rounds down
    assert len(osm.protocol_split(np.arange(8), unknown_fraction=0).unknown) == 0
    s = osm.protocol_split([-1, -1, 4, 4], seed=0)  # rows labelled -1 never count
    assert s.known.tolist() == [4] and sorted(s.gallery.tolist()) == [2, 3]


def test_exemplars_are_the_medoid_then_the_farthest_points():
    # identity 0 on a half circle: angles 0, 10, 20, ..., 90 degrees
    angles = np.deg2rad([40, 0, 90, 10, 50, 20, 80, 30, 70, 60])
    X = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    ids = np.zeros(10, dtype=np.int64)
    s = osm.protocol_split(ids, X, unknown_fraction=0, max_exemplars=3)
    # medoid: 40 or 50 degrees tie in exact arithmetic; then the ends 0 and 90
    picked = np.rad2deg(angles[s.gallery]).round().tolist()
    assert picked[0] in (40, 50) and sorted(picked[1:]) == [0, 90]
    # the features rule uses no randomness
    s2 = osm.protocol_split(ids, X, unknown_fraction=0, max_exemplars=3, seed=9)
    np.testing.assert_array_equal(s.gallery, s2.gallery)


def _medoid_fps_oracle(X, rows, k):
    Xn = X[rows] / np.linalg.norm(X[rows], axis=1, keepdims=True)
    C = Xn.astype(np.float64) @ Xn.T.astype(np.float64)
    central = C.sum(1) - np.diag(C)
    chosen = [int(np.argmax(central))]
    while len(chosen) < min(k, len(rows)):
        near = (1 - C[:, chosen]).min(1)
        near[chosen] = -np.inf
        chosen.append(int(np.argmax(near)))
    return rows[chosen]


@pytest.mark.parametrize("seed", range(3))
def test_exemplars_match_a_per_identity_oracle(seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(-1, 25, 300)
    X = rng.standard_normal((300, 12))
    s = osm.protocol_split(ids, X, seed=seed)
    expected = np.concatenate([_medoid_fps_oracle(X, np.flatnonzero(ids == k), 5) for k in s.known])
    np.testing.assert_array_equal(s.gallery, expected)


def test_random_exemplars_are_seeded_members():
    ids = np.repeat(np.arange(6), 9)
    s = osm.protocol_split(ids, max_exemplars=4, seed=5)
    assert np.array_equal(np.bincount(ids[s.gallery], minlength=6)[s.known], [4] * 5)
    np.testing.assert_array_equal(
        s.gallery, osm.protocol_split(ids, max_exemplars=4, seed=5).gallery
    )


@pytest.mark.parametrize(
    "args, kwargs, exc, match",
    [
        (([0, 1],), {"unknown_fraction": 1.0}, ValueError, "'unknown_fraction'"),
        (([0, 1],), {"unknown_fraction": -0.1}, ValueError, "'unknown_fraction'"),
        (([0, 1],), {"max_exemplars": 0}, ValueError, "'max_exemplars'"),
        (([0, 1],), {"seed": -1}, ValueError, "'seed'"),
        (([0, 1], np.ones((3, 2))), {}, ValueError, "one row per entry"),
        (([-1, -1],), {}, ValueError, "no identity"),
        (([],), {}, ValueError, "empty"),
        (([0.5, 1.0],), {}, TypeError, "integer"),
        (([0],), {"unknown_fraction": 0.9}, ValueError, "no known identity"),
    ],
)
def test_split_bad_input(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        osm.protocol_split(*args, **kwargs)


# ---- metrics: hand-worked ------------------------------------------------------


def test_baks_averages_per_identity():
    # identity 0: 3 queries, 1 right; identity 1: 1 query, right; 9 is unknown
    q = [0, 0, 0, 1, 9]
    pred = [0, 1, 1, 1, 0]
    assert osm.baks(q, pred, [0, 1, 1]) == pytest.approx((1 / 3 + 1) / 2)
    # with a threshold a known query called "unknown" is an error
    scores = [0.9, 0.9, 0.9, 0.2, 0.9]
    got = osm.baks(q, pred, [0, 1], scores=scores, threshold=0.5)
    assert got == pytest.approx((1 / 3 + 0) / 2)


def test_baus_and_unknown_minus_one_queries():
    # unknown identity 7 (2 queries, 1 rejected), two unlabelled queries (-1, each its own)
    q = [7, 7, -1, -1, 0]
    scores = [0.1, 0.8, 0.2, 0.9, 0.95]
    assert osm.baus(q, scores, [0], threshold=0.5) == pytest.approx((0.5 + 1 + 0) / 3)
    # decision is "score < threshold": equality means known
    assert osm.baus([7], [0.5], [0], threshold=0.5) == 0.0


def test_auc_roc_hand_worked_with_a_tie():
    # known 0.8, 0.4; unknown 0.4, 0.1: pairs (k > u): 0.8>0.4, 0.8>0.1, 0.4=0.4 (half), 0.4>0.1
    assert osm.auc_roc([0, 1, 5, 6], [0.8, 0.4, 0.4, 0.1], [0, 1]) == pytest.approx(3.5 / 4)


@pytest.mark.parametrize("seed", range(5))
def test_auc_roc_equals_sklearn(seed):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    q = rng.integers(-1, 30, 400)
    g = np.arange(0, 30, 2)
    scores = rng.random(400).round(2 if seed % 2 else 8)  # ties when rounded
    known = np.isin(q, g)
    assert osm.auc_roc(q, scores, g) == pytest.approx(
        sklearn_metrics.roc_auc_score(known, scores), abs=1e-12
    )


@pytest.mark.parametrize("seed", range(3))
def test_baks_and_baus_match_a_per_identity_loop(seed):
    rng = np.random.default_rng(seed)
    q = rng.integers(0, 20, 300)
    g = rng.choice(20, 12, replace=False)
    pred = np.where(rng.random(300) < 0.6, q, rng.choice(g, 300))
    scores = rng.random(300)
    known = np.isin(q, g)
    exp_k = np.mean([np.mean(pred[q == k] == k) for k in np.unique(q[known])])
    exp_u = np.mean([np.mean(scores[q == k] < 0.4) for k in np.unique(q[~known])])
    assert osm.baks(q, pred, g) == pytest.approx(exp_k)
    assert osm.baus(q, scores, g, threshold=0.4) == pytest.approx(exp_u)


def test_choose_threshold_maximises_the_mean_on_a_brute_force_grid():
    rng = np.random.default_rng(0)
    q = rng.integers(0, 15, 200)
    g = np.arange(0, 15, 3)
    known = np.isin(q, g)
    pred = np.where(rng.random(200) < 0.7, q, g[0])
    scores = np.where(known, rng.normal(0.7, 0.15, 200), rng.normal(0.45, 0.15, 200))

    def objective(t):
        return (
            osm.baks(q, pred, g, scores=scores, threshold=t) + osm.baus(q, scores, g, threshold=t)
        ) / 2

    t = osm.choose_threshold(q, pred, scores, g)
    grid = np.concatenate([np.unique(scores), [scores.max() + 1]])
    best = max(objective(x) for x in grid)
    assert objective(t) == pytest.approx(best)
    assert objective(t) > objective(grid[0]) and objective(t) > objective(grid[-1])


def test_choose_threshold_edges():
    # the known query is wrong and the unknown one scores highest: reject everything
    t = osm.choose_threshold([0, 5], [1, 0], [0.5, 0.9], [0, 1])
    assert t == np.nextafter(0.9, 1)
    # a tie between (0.2, 0.9] and above 0.9: the lower interval's midpoint
    assert osm.choose_threshold([0, 5], [1, 0], [0.9, 0.2], [0, 1]) == pytest.approx(0.55)
    # unknown queries all score above the known ones: accepting everything ties with
    # rejecting everything and the lowest threshold wins
    assert osm.choose_threshold([0, 5], [0, 0], [0.2, 0.9], [0]) == 0.2


# ---- top-1 and evaluate -------------------------------------------------------


def test_top1_ties_go_to_the_smaller_index_and_blocks_do_not_matter():
    S = np.array([[0.5, 0.7, 0.7], [0.1, 0.1, 0.1]], dtype=np.float32)
    t = osm.top1(S, metric="similarity")
    assert t.index.tolist() == [1, 0] and t.score.dtype == np.float32
    rng = np.random.default_rng(1)
    Q, G = rng.standard_normal((37, 8)), rng.standard_normal((50, 8))
    a, b = osm.top1(Q, G), osm.top1(Q, G, block_size=4)
    np.testing.assert_array_equal(a.index, b.index)
    Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    Gn = G / np.linalg.norm(G, axis=1, keepdims=True)
    np.testing.assert_array_equal(a.index, np.argmax(Qn @ Gn.T, axis=1))
    np.testing.assert_allclose(a.score, np.max(Qn @ Gn.T, axis=1), atol=1e-6)


def test_evaluate_agrees_with_the_parts_and_the_protocol_runs_end_to_end():
    from aas_core.datasets import make_reid_blobs

    X, y = make_reid_blobs(600, d=32, seed=0)
    train = y % 2 == 0
    s = osm.protocol_split(y[train], X[train], seed=0)
    Xg, yg = X[train][s.gallery], y[train][s.gallery]
    Q, yq = X[~train], y[~train]
    # test identities: odd ones (never in training) are all unknown
    yq = np.where(np.arange(len(yq)) % 2 == 0, yq, yg[np.arange(len(yq)) % len(yg)])
    Q = np.where((np.arange(len(yq)) % 2 == 0)[:, None], Q, Xg[np.arange(len(yq)) % len(yg)])
    r = osm.evaluate(Q, Xg, yq, yg, threshold=0.5)
    t = osm.top1(Q, Xg)
    np.testing.assert_array_equal(r.top1.index, t.index)
    assert r.baks == osm.baks(yq, yg[t.index], yg)
    assert r.baus == osm.baus(yq, t.score, yg, threshold=0.5)
    assert r.auc_roc == osm.auc_roc(yq, t.score, yg)
    assert r.n_known + r.n_unknown == len(yq) and r.n_known > 0 and r.n_unknown > 0
    assert r.baks == 1.0 and r.auc_roc > 0.9  # known queries are exemplars themselves
    assert osm.evaluate(Q, Xg, yq, yg).baus is None


def test_evaluate_reports_undefined_metrics_as_nan():
    G = np.eye(2, dtype=np.float32)
    r = osm.evaluate(G, G, [0, 1], [0, 1], threshold=0.5)  # no unknown query
    assert r.baks == 1.0 and np.isnan(r.baus) and np.isnan(r.auc_roc)
    r = osm.evaluate(G, G, [5, 6], [0, 1])  # no known query
    assert np.isnan(r.baks) and np.isnan(r.auc_roc)


def test_inputs_are_not_modified():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 10, 80)
    X = rng.standard_normal((80, 6))
    ids0, X0 = ids.copy(), X.copy()
    osm.protocol_split(ids, X)
    osm.evaluate(X, X[:20], ids, ids[:20], threshold=0.1)
    np.testing.assert_array_equal(ids, ids0)
    np.testing.assert_array_equal(X, X0)


# ---- bad input ----------------------------------------------------------------


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: osm.baks([0, 1], [0], [0]), ValueError, "'predicted_ids'"),
        (lambda: osm.baks([0, 1], [0, 1], []), ValueError, "'gallery_ids' is empty"),
        (lambda: osm.baks([0, 1], [0, 1], [-1, 0]), ValueError, "'gallery_ids'.*>= 0"),
        (lambda: osm.baks([5], [0], [0]), ValueError, "BAKS is undefined"),
        (lambda: osm.baks([0], [0], [0], threshold=0.5), ValueError, "both 'scores'"),
        (lambda: osm.baks([0.0], [0], [0]), TypeError, "'query_ids'"),
        (lambda: osm.baus([0], [0.5], [0], threshold=0.5), ValueError, "BAUS is undefined"),
        (lambda: osm.baus([3], [np.nan], [0], threshold=0.5), ValueError, "NaN"),
        (lambda: osm.baus([3], [0.5], [0], threshold=np.inf), ValueError, "'threshold'"),
        (lambda: osm.baus([3], [0.5, 0.1], [0], threshold=0.1), ValueError, "'scores'"),
        (lambda: osm.auc_roc([0, 1], [0.5, 0.2], [0, 1]), ValueError, "both known and unknown"),
        (lambda: osm.choose_threshold([0], [0], [0.5], [0]), ValueError, "both known"),
        (
            lambda: osm.evaluate(np.eye(2), np.eye(2), [0, 1], [0, 1], threshold=1.5),
            ValueError,
            r"'threshold'.*\[-1, 1\]",
        ),
        (
            lambda: osm.evaluate(np.eye(2), np.eye(2), [0, 1], [0, 1], metric="euclidean"),
            ValueError,
            "'metric'",
        ),
        (lambda: osm.evaluate(np.eye(2), np.eye(2), [0], [0, 1]), ValueError, "'query_ids'"),
        (lambda: osm.evaluate(np.eye(2), np.eye(3), [0, 1], [0, 1]), ValueError, "feature"),
        (lambda: osm.top1(np.eye(2), np.eye(2), metric="similarity"), ValueError, "None"),
    ],
)
def test_bad_input_names_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
