import numpy as np
import pytest

from aas_core.metrics import retrieval as rt


def brute_force(S, q_ids, g_ids, q_cams=None, g_cams=None, exclude_self=False):
    """Per query: keep the gallery items the protocol keeps, rank them by a stable
    descending sort, and read INP and the first rank off the hit vector; AP is the
    mean over true matches of (matches scored >= its score) / (items scored >= it)."""
    out = []
    for i in range(S.shape[0]):
        keep = np.ones(S.shape[1], dtype=bool)
        if q_cams is not None:
            keep &= ~((g_ids == q_ids[i]) & (g_cams == q_cams[i]))
        if exclude_self:
            keep[i] = False
        order = np.flatnonzero(keep)[np.argsort(-S[i, keep], kind="stable")]
        hits = (g_ids[order] == q_ids[i]) & (q_ids[i] >= 0)
        ranks = np.flatnonzero(hits) + 1
        if ranks.size == 0:
            out.append(None)
            continue
        scores = S[i, order]
        ap = float(
            np.mean([np.sum(hits & (scores >= v)) / np.sum(scores >= v) for v in scores[hits]])
        )
        out.append((ap, ranks.size / ranks[-1], int(ranks[0]), keep, hits.any()))
    return out


def random_case(seed, nq=40, ng=70, n_ids=8, cams=False, dtype=np.float64):
    rng = np.random.default_rng(seed)
    S = rng.standard_normal((nq, ng)).astype(dtype)
    q = rng.integers(-1, n_ids, nq)
    g = rng.integers(-1, n_ids, ng)
    qc = rng.integers(0, 3, nq) if cams else None
    gc = rng.integers(0, 3, ng) if cams else None
    return S, q, g, qc, gc


# ---- hand-worked cases --------------------------------------------------------


def test_hand_worked_single_query():
    # ranking by score: g2 (match), g0, g3 (match), g1 (match)
    S = np.array([[0.5, 0.1, 0.9, 0.3]])
    r = rt.evaluate(S, None, [4], [0, 4, 4, 4], metric="similarity", ks=(1, 2, 3))
    assert r.ap[0] == pytest.approx((1 / 1 + 2 / 3 + 3 / 4) / 3)
    assert r.inp[0] == pytest.approx(3 / 4)
    assert r.first_rank.tolist() == [1]
    assert r.n_matches.tolist() == [3]
    assert r.cmc == {1: 1.0, 2: 1.0, 3: 1.0}


def test_cmc_counts_the_first_true_match():
    S = np.array([[0.9, 0.8, 0.7], [0.9, 0.8, 0.7], [0.9, 0.8, 0.7]])
    # first matches at ranks 1, 2 and 3
    got = rt.cmc(S, None, [0, 1, 2], [0, 1, 2], metric="similarity", ks=(1, 2, 3, 10))
    assert got == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 3: 1.0, 10: 1.0}
    assert rt.cmc(S, None, [0, 1, 2], [0, 1, 2], metric="similarity", ks=2) == {
        2: pytest.approx(2 / 3)
    }


def test_same_identity_same_camera_items_are_removed():
    # g0 is the query's identity from its own camera: junk, not a match
    S = np.array([[0.9, 0.8, 0.7, 0.6]])
    ids = [3, 5, 3, 3]
    cams = [1, 1, 2, 1]  # g3 too: same identity, same camera
    r = rt.evaluate(S, None, [3], ids, query_cameras=[1], gallery_cameras=cams, metric="similarity")
    # kept: g1 (not a match, rank 1), g2 (match, rank 2)
    assert r.ap.tolist() == [0.5] and r.first_rank.tolist() == [2] and r.n_matches.tolist() == [1]
    # another identity's same-camera item stays in the ranking
    r = rt.evaluate(S, None, [3], ids, metric="similarity")
    assert r.n_matches.tolist() == [3]


def test_exclude_self_removes_the_query_from_its_own_ranking():
    X = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    y = np.array([0, 0, 1, 1])
    r = rt.evaluate(X, X, y, y, exclude_self=True)
    assert r.ap.tolist() == [1.0, 1.0, 1.0, 1.0] and r.n_matches.tolist() == [1, 1, 1, 1]
    # without the exclusion each query finds itself first
    assert rt.evaluate(X, X, y, y).n_matches.tolist() == [2, 2, 2, 2]


def test_queries_without_a_match_are_excluded_and_counted():
    S = np.array([[0.9, 0.1], [0.1, 0.9], [0.5, 0.5]])
    r = rt.evaluate(S, None, [0, 0, 7], [0, 1], metric="similarity")
    assert r.n_queries == 3 and r.n_without_match == 1
    assert np.isnan(r.ap[2]) and np.isnan(r.inp[2]) and r.first_rank[2] == -1
    assert r.mean_ap == pytest.approx((1 + 0.5) / 2)
    assert r.cmc[1] == pytest.approx(0.5)


def test_unknown_identity_never_matches():
    S = np.array([[0.9, 0.8], [0.9, 0.8]])
    r = rt.evaluate(S, None, [-1, 0], [-1, 0], metric="similarity")
    assert r.n_without_match == 1 and r.ap[1] == 0.5


def test_no_query_with_a_match_raises():
    with pytest.raises(ValueError, match="no query has a true match"):
        rt.mean_ap(np.ones((2, 2)), None, [0, 1], [2, 3], metric="similarity")


def test_ties_count_as_one_threshold_in_ap_and_by_gallery_index_in_ranks():
    """AP treats a tie as one threshold, as sklearn does (0.5 for either order);
    ranks (CMC, INP, first_rank) put the earlier gallery item first."""
    S = np.array([[0.5, 0.5]])
    for g in ([1, 0], [0, 1]):
        r = rt.evaluate(S, None, [1], g, metric="similarity", ks=1)
        assert r.ap.tolist() == [0.5]
        assert r.first_rank.tolist() == [1 if g[0] == 1 else 2]
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    assert sklearn_metrics.average_precision_score([1, 0], [0.5, 0.5]) == 0.5
    # a match tied with two non-matches below a first-ranked match:
    # precisions 1/1 and 2/4 (the whole tied run counts)
    S = np.array([[0.9, 0.2, 0.5, 0.5, 0.5]])
    r = rt.evaluate(S, None, [3], [3, 0, 1, 3, 2], metric="similarity")
    assert r.ap[0] == pytest.approx((1 + 2 / 4) / 2)
    assert r.ap[0] == pytest.approx(
        sklearn_metrics.average_precision_score([1, 0, 0, 1, 0], S[0]), abs=1e-12
    )
    assert r.inp.tolist() == [2 / 3]  # stable order: the tied match ranks 3rd


@pytest.mark.parametrize("seed", range(4))
def test_ap_equals_sklearn_per_query_with_ties_and_cameras(seed):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    dtype = np.float32 if seed % 2 else np.float64
    S = (rng.integers(0, 4, size=(40, 70)) / 3).astype(dtype)  # many ties
    q, g = rng.integers(-1, 6, 40), rng.integers(-1, 6, 70)
    qc, gc = rng.integers(0, 3, 40), rng.integers(0, 3, 70)
    r = rt.evaluate(
        S, None, q, g, query_cameras=qc, gallery_cameras=gc, metric="similarity", block_size=7
    )
    checked = 0
    for i in range(len(q)):
        keep = ~((g == q[i]) & (gc == qc[i]))
        y = (g[keep] == q[i]) & (q[i] >= 0)
        if not y.any():
            assert np.isnan(r.ap[i])
            continue
        want = sklearn_metrics.average_precision_score(y, S[i, keep])
        assert r.ap[i] == pytest.approx(want, abs=1e-6)
        checked += 1
    assert checked > 20
    # AP does not depend on the order of the gallery (ranks of tied items do)
    perm = rng.permutation(70)
    r2 = rt.evaluate(
        S[:, perm],
        None,
        q,
        g[perm],
        query_cameras=qc,
        gallery_cameras=gc[perm],
        metric="similarity",
    )
    np.testing.assert_allclose(r2.ap, r.ap, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ties_are_exact_and_match_a_stable_sort(dtype):
    rng = np.random.default_rng(3)
    S = rng.integers(0, 4, size=(30, 50)).astype(dtype)  # many ties
    S[0, :10] = -0.0
    S[0, 10:20] = 0.0  # -0.0 and +0.0 are one value
    q, g = rng.integers(0, 5, 30), rng.integers(0, 5, 50)
    r = rt.evaluate(S, None, q, g, metric="similarity", block_size=7)
    for i, ref in enumerate(brute_force(S, q, g)):
        assert (ref is None and np.isnan(r.ap[i])) or (
            r.ap[i] == pytest.approx(ref[0], abs=1e-12)
            and r.inp[i] == pytest.approx(ref[1], abs=1e-12)
            and r.first_rank[i] == ref[2]
        )


def test_float64_scores_keep_their_precision():
    # 1 + 1e-12 and 1 are one float32 value; in float64 the non-match ranks first
    S = np.array([[1.0, 1.0 + 1e-12, 0.0]])
    got = rt.mean_ap(S, None, [0], [0, 1, 0], metric="similarity")
    assert got == pytest.approx((1 / 2 + 2 / 3) / 2)


# ---- parity with references ---------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_ap_equals_sklearn_per_query_on_continuous_scores(seed):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    S, q, g, _, _ = random_case(seed, dtype=np.float64 if seed % 2 else np.float32)
    for row in S:
        assert len(np.unique(row)) == row.size  # no ties: the parity is exact
    r = rt.evaluate(S, None, q, g, metric="similarity", block_size=1 + seed)
    for i in range(len(q)):
        y = (g == q[i]) & (q[i] >= 0)
        if y.any():
            assert r.ap[i] == pytest.approx(
                sklearn_metrics.average_precision_score(y, S[i]), abs=1e-6
            )
        else:
            assert np.isnan(r.ap[i])
    valid = ~np.isnan(r.ap)
    assert r.mean_ap == pytest.approx(np.mean(r.ap[valid]))
    assert r.n_without_match == int((~valid).sum()) > 0


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("exclude_self", [False, True])
def test_all_metrics_match_the_brute_force_protocol(seed, exclude_self):
    S, q, g, qc, gc = random_case(seed, nq=50, ng=50, cams=True)
    r = rt.evaluate(
        S,
        None,
        q,
        g,
        query_cameras=qc,
        gallery_cameras=gc,
        exclude_self=exclude_self,
        metric="similarity",
        ks=(1, 3, 5, 10),
        block_size=9,
    )
    ref = brute_force(S, q, g, qc, gc, exclude_self)
    valid = [x for x in ref if x is not None and x[4]]
    assert r.n_without_match == len(ref) - len(valid)
    assert r.mean_ap == pytest.approx(np.mean([x[0] for x in valid]), abs=1e-12)
    assert r.mean_inp == pytest.approx(np.mean([x[1] for x in valid]), abs=1e-12)
    for k in (1, 3, 5, 10):
        assert r.cmc[k] == pytest.approx(np.mean([x[2] <= k for x in valid]))
    # the three functions agree with evaluate
    kw = dict(query_cameras=qc, gallery_cameras=gc, exclude_self=exclude_self, metric="similarity")
    assert rt.mean_ap(S, None, q, g, **kw) == r.mean_ap
    assert rt.mean_inp(S, None, q, g, **kw) == r.mean_inp
    assert rt.cmc(S, None, q, g, **kw) == r.cmc


def test_features_distances_and_similarities_rank_alike():
    rng = np.random.default_rng(0)
    Q = rng.standard_normal((30, 16)).astype(np.float32)
    G = rng.standard_normal((60, 16)).astype(np.float32)
    q, g = rng.integers(0, 6, 30), rng.integers(0, 6, 60)
    Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    Gn = G / np.linalg.norm(G, axis=1, keepdims=True)
    S = Qn.astype(np.float64) @ Gn.T.astype(np.float64)
    ref = rt.evaluate(S, None, q, g, metric="similarity")
    for got in (
        rt.evaluate(Q, G, q, g),
        rt.evaluate(Q.astype(np.float64), G, q, g, block_size=4),
        rt.evaluate(1 - S, None, q, g, metric="distance"),
        rt.evaluate(Qn, Gn, q, g, metric="euclidean"),  # unit rows: same order as cosine
    ):
        np.testing.assert_allclose(got.ap, ref.ap, atol=1e-12)
        assert got.cmc == ref.cmc
    D = ((Q[:, None, :] - G[None, :, :]) ** 2).sum(-1).astype(np.float64)
    eu = rt.evaluate(Q, G, q, g, metric="euclidean")
    np.testing.assert_allclose(eu.ap, rt.evaluate(D, None, q, g, metric="distance").ap)


def test_result_does_not_depend_on_block_size():
    S, q, g, qc, gc = random_case(11, nq=33, ng=40, cams=True, dtype=np.float32)
    kw = dict(query_cameras=qc, gallery_cameras=gc, metric="similarity")
    ref = rt.evaluate(S, None, q, g, **kw)
    for b in (1, 2, 5, 33, 1000):
        got = rt.evaluate(S, None, q, g, block_size=b, **kw)
        np.testing.assert_array_equal(got.ap, ref.ap)
        np.testing.assert_array_equal(got.first_rank, ref.first_rank)


def test_inputs_are_not_modified_and_layouts_are_accepted():
    S, q, g, qc, gc = random_case(5, nq=20, ng=30, cams=True)
    copies = [a.copy() for a in (S, q, g, qc, gc)]
    rt.evaluate(S, None, q, g, query_cameras=qc, gallery_cameras=gc, metric="similarity")
    rt.evaluate(S, None, q, g, metric="distance")
    for a, b in zip((S, q, g, qc, gc), copies):
        np.testing.assert_array_equal(a, b)
    X = np.asfortranarray(np.random.default_rng(0).standard_normal((20, 8)))
    Xc = X.copy()
    ref = rt.evaluate(np.ascontiguousarray(X), X[::-1][::-1], q, q[:20], exclude_self=True)
    got = rt.evaluate(X, X, q, q, exclude_self=True)
    np.testing.assert_array_equal(X, Xc)
    np.testing.assert_array_equal(got.ap, ref.ap)
    # lists and int32 labels work
    assert rt.mean_ap([[0.2, 0.9]], None, [1], np.array([0, 1], np.int32), metric="similarity")


def test_a_gallery_of_one_and_a_query_of_one():
    assert rt.mean_ap(np.ones((1, 3), np.float32), np.ones((1, 3), np.float32), [2], [2]) == 1.0


# ---- bad input ----------------------------------------------------------------

S3 = np.zeros((2, 3))
F = np.ones((2, 4), np.float32)


@pytest.mark.parametrize(
    "args, kwargs, exc, match",
    [
        ((S3, None, [0, 1], [0, 1]), {"metric": "similarity"}, ValueError, "'gallery_ids'.*3"),
        ((S3, None, [0], [0, 1, 2]), {"metric": "similarity"}, ValueError, "'query_ids'.*2"),
        ((S3, None, [0.0, 1.0], [0, 1, 2]), {"metric": "similarity"}, TypeError, "integer"),
        ((S3, None, [[0, 1]], [0, 1, 2]), {"metric": "similarity"}, ValueError, "1-D"),
        ((S3, F, [0, 1], [0, 1]), {"metric": "similarity"}, ValueError, "'gallery' must be None"),
        ((F, None, [0, 1], [0, 1]), {}, ValueError, "'gallery' features are required"),
        ((F, np.ones((2, 3)), [0, 1], [0, 1]), {}, ValueError, "same number of feature"),
        ((F, F, [0, 1], [0, 1]), {"metric": "hamming"}, ValueError, "'metric'"),
        ((F, F, [0, 1], [0, 1]), {"query_cameras": [0, 1]}, ValueError, "both"),
        (
            (F, F, [0, 1], [0, 1]),
            {"query_cameras": [0], "gallery_cameras": [0, 1]},
            ValueError,
            "'query_cameras'",
        ),
        ((F, F[:1], [0, 1], [0]), {"exclude_self": True}, ValueError, "exclude_self"),
        ((F, F, [0, 1], [0, 1]), {"exclude_self": 1}, TypeError, "'exclude_self'"),
        ((F, F, [0, 1], [0, 1]), {"ks": (0, 1)}, ValueError, "'ks'"),
        ((F, F, [0, 1], [0, 1]), {"ks": ()}, ValueError, "'ks'"),
        ((F, F, [0, 1], [0, 1]), {"block_size": 0}, ValueError, "'block_size'"),
        ((np.zeros((2, 4), np.float32), F, [0, 1], [0, 1]), {}, ValueError, "all zeros"),
        ((np.zeros((0, 4), np.float32), F, [], [0, 1]), {}, ValueError, "at least 1 rows"),
        ((F.astype(int), F, [0, 1], [0, 1]), {}, TypeError, "floating-point"),
        (
            (np.full((2, 2), np.nan), None, [0, 1], [0, 1]),
            {"metric": "similarity"},
            ValueError,
            "NaN",
        ),
        ((np.zeros((2, 0)), None, [0, 1], []), {"metric": "distance"}, ValueError, "at least one"),
        ((np.zeros((2, 2), int), None, [0, 1], [0, 1]), {"metric": "distance"}, TypeError, "float"),
    ],
)
def test_bad_input_names_the_argument(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        rt.evaluate(*args, **kwargs)


def test_mean_ap_does_not_take_ks():
    with pytest.raises(TypeError, match="ks"):
        rt.mean_ap(F, F, [0, 1], [0, 1], ks=(1,))
