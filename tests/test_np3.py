import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aas_core as aas
from aas_core import _core
from aas_core.refine import ConstrainedClustering, np3
from conftest import assert_same_partition


def _angles(deg):
    a = np.deg2rad(np.asarray(deg, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)


def _pc(ml=None, cl=None):
    return aas.PairConstraints(must_link=ml, cannot_link=cl)


def _assert_satisfied(out, c):
    for i, j in c.must_link:
        assert out[i] == out[j] and out[i] >= 0, f"must-link ({i}, {j}) broken: {out}"
    for i, j in c.cannot_link:
        assert out[i] != out[j] and min(out[i], out[j]) >= 0, f"cannot-link ({i}, {j}): {out}"


def _assert_holds_and_untouched_stay(labels, c, out):
    """Every answer holds, clusters and outliers no answer touches are unchanged; returns
    the touched mask."""
    _assert_satisfied(out, c)
    touched = np.zeros(len(labels), bool)
    touched[c.pairs.ravel()] = True
    for lab in np.unique(labels[labels >= 0]):
        members = labels == lab
        if not touched[members].any():
            assert np.all(out[members] == lab) and np.sum(out == lab) == members.sum()
    assert np.all(out[(labels == -1) & ~touched] == -1)
    return touched


# ---------------------------------------------------------------- hand-worked toys


def test_fig2_must_link_merge_then_split_of_the_impure_cluster():
    # Two clusters A = {0, 1, 2} near 0° and B = {3, 4, 5} near 90°. The
    # must-link 2~3 merges them; the cannot-link 0/5 makes the merge impure.
    # ML groups {2, 3}, {0}, {5}; one CL group {0}-{5}: two sub-clusters.
    # {2, 3} (mean at 40°) moves as one unit to {0}; 1 joins {0}, 4 joins {5}.
    X = _angles([0, 5, 20, 60, 85, 90])
    labels = np.array([0, 0, 0, 1, 1, 1])
    c = _pc(ml=[[2, 3]], cl=[[0, 5]])
    out = np3(labels, c, X)
    assert out.tolist() == [2, 2, 2, 2, 3, 3]  # fresh labels after max(labels) = 1
    assert out.dtype == np.int64
    _assert_satisfied(out, c)


def test_ml_merge_without_cannot_link_gets_a_fresh_label_and_others_keep_theirs():
    X = _angles([0, 5, 40, 45, 90, 95])
    labels = np.array([4, 4, 7, 7, 9, 9])
    out = np3(labels, _pc(ml=[[1, 2]]), X)
    assert out.tolist() == [10, 10, 10, 10, 9, 9]


def test_constraints_that_confirm_a_cluster_keep_its_label():
    X = _angles([0, 5, 40, 45, 90])
    labels = np.array([3, 3, 5, 5, -1])
    out = np3(labels, _pc(ml=[[0, 1]], cl=[[1, 2]]), X)
    assert out.tolist() == [3, 3, 5, 5, -1]


def test_odd_cycle_of_cannot_links_needs_three_colours():
    X = _angles([0, 72, 144, 216, 288, 10])
    labels = np.zeros(6, np.int64)
    cycle = [[0, 1], [1, 2], [2, 3], [3, 4], [4, 0]]
    c = _pc(cl=cycle)
    out = np3(labels, c, X)
    _assert_satisfied(out, c)
    assert len(np.unique(out[:5])) == 3
    assert out[5] == out[0]  # 10° joins the sub-cluster of 0°, its only member near


def test_unconstrained_points_join_the_nearest_sub_cluster():
    X = _angles([0, 10, 80, 90, 200])
    labels = np.array([0, 0, 0, 0, 1])
    out = np3(labels, _pc(cl=[[0, 3]]), X)
    assert out.tolist() == [2, 2, 3, 3, 1]


def test_ml_group_without_cannot_link_moves_as_one_unit():
    # 2 is nearest 0 on its own, but its must-link partner 3 pulls the pair
    # (mean at 62.5°) to the sub-cluster of 5.
    X = _angles([0, 10, 35, 90, 95, 100])
    labels = np.zeros(6, np.int64)
    out = np3(labels, _pc(ml=[[2, 3]], cl=[[0, 5]]), X)
    assert out[2] == out[3] == out[5] != out[0]
    assert out.tolist() == [1, 1, 2, 2, 2, 2]


def test_colour_classes_of_a_second_group_are_matched_to_the_nearest_sub_clusters():
    # CL group 1: three mutually exclusive points at 0°, 120°, 240° (3 colours,
    # defines the sub-clusters). CL group 2: 125° / 5° (2 colours), given in
    # the "wrong" order; Hungarian matching puts 125° with 120° and 5° with 0°.
    X = _angles([0, 120, 240, 125, 5])
    labels = np.zeros(5, np.int64)
    c = _pc(cl=[[0, 1], [1, 2], [2, 0], [3, 4]])
    out = np3(labels, c, X)
    assert out[3] == out[1] and out[4] == out[0]
    assert len(np.unique(out)) == 3


def test_outliers_join_by_must_link_and_untouched_outliers_stay():
    X = _angles([0, 5, 10, 50, 90, 95, 180])
    labels = np.array([0, 0, -1, -1, -1, -1, -1])
    c = _pc(ml=[[2, 0], [4, 5]], cl=[[3, 1]])
    out = np3(labels, c, X)
    # 2 joins cluster 0 and takes its label; 4~5 is a new cluster; 3 has only
    # a cannot-link: its own new cluster; 6 is untouched and stays -1.
    assert out.tolist() == [0, 0, 0, 1, 2, 2, -1]


def test_all_outliers():
    X = _angles([0, 10, 20, 30])
    labels = np.full(4, -1)
    np.testing.assert_array_equal(np3(labels, _pc(), X), labels)
    out = np3(labels, _pc(ml=[[0, 1], [1, 2]], cl=[[2, 3]]), X)
    assert out.tolist() == [0, 0, 0, 1]


def test_split_cluster_parts_get_fresh_labels_numbered_by_smallest_row():
    X = _angles([90, 0, 92, 2])
    labels = np.array([5, 5, 5, 5])
    out = np3(labels, _pc(cl=[[3, 2]]), X)
    assert out.tolist() == [6, 7, 6, 7]


def test_no_constraints_returns_a_copy_of_the_labels():
    X = _angles([0, 10, 20])
    labels = np.array([2, -1, 2], dtype=np.int32)
    out = np3(labels, _pc(), X)
    assert out.dtype == np.int64 and out.tolist() == [2, -1, 2]
    out[0] = 99
    assert labels[0] == 2


@pytest.mark.parametrize(
    "labels, ml, cl, expected",
    [
        ([0], None, None, [0]),
        ([-1], None, None, [-1]),
        ([0, 0], None, [[0, 1]], [1, 2]),
        ([-1, -1], [[0, 1]], None, [0, 0]),
        ([-1, -1], None, [[1, 0]], [0, 1]),
        ([3, 8], [[0, 1]], None, [9, 9]),
    ],
)
def test_one_and_two_points(labels, ml, cl, expected):
    X = _angles([0, 30][: len(labels)])
    c = _pc(ml=ml, cl=cl)
    assert np3(np.array(labels), c, X).tolist() == expected


def test_identical_points_and_non_unit_rows():
    X = np.ones((4, 3), np.float32)
    out = np3(np.zeros(4, np.int64), _pc(cl=[[0, 1], [2, 3]]), X)
    _assert_satisfied(out, _pc(cl=[[0, 1], [2, 3]]))
    Y = _angles([0, 5, 20, 60, 85, 90]) * np.array([[3], [0.5], [2], [7], [1], [4]], np.float32)
    out = np3(np.array([0, 0, 0, 1, 1, 1]), _pc(ml=[[2, 3]], cl=[[0, 5]]), Y)
    assert out.tolist() == [2, 2, 2, 2, 3, 3]  # as the unit-row Fig. 2 toy


# ---------------------------------------------------------------- the two solvers


def test_linear_assignment_matches_scipy():
    lsa = pytest.importorskip("scipy.optimize").linear_sum_assignment
    rng = np.random.default_rng(0)
    for t in range(300):
        r = int(rng.integers(0, 7))
        c = int(rng.integers(r, 9))
        cost = rng.random((r, c)) if t % 2 else rng.integers(0, 3, (r, c)).astype(np.float64)
        cols, total = _core.linear_assignment(cost)
        rows, ref_cols = lsa(cost)
        assert total == pytest.approx(cost[rows, ref_cols].sum(), abs=1e-12)
        assert len(set(cols.tolist())) == r
        assert total == pytest.approx(cost[np.arange(r), cols].sum(), abs=1e-12)
    with pytest.raises(ValueError, match="rows <= cols"):
        _core.linear_assignment(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="not finite"):
        _core.linear_assignment(np.array([[np.nan]]))


def _chromatic_number(n, edges):
    for k in range(1, n + 1):
        for col in itertools.product(range(k), repeat=n):
            if all(col[a] != col[b] for a, b in edges):
                return k
    return 0


def test_colouring_is_proper_and_exact_on_small_graphs():
    rng = np.random.default_rng(1)
    for _ in range(150):
        n = int(rng.integers(1, 8))
        p = rng.random()
        edges = [(a, b) for a in range(n) for b in range(a + 1, n) if rng.random() < p]
        e = np.array(edges, np.int64).reshape(-1, 2)
        colours, k = _core.colour_graph(n, e, 20000)
        assert all(colours[a] != colours[b] for a, b in edges)
        assert sorted(set(colours.tolist())) == list(range(k))
        assert k == _chromatic_number(n, edges)


def test_exact_search_beats_greedy_dsatur_where_it_can():
    # The smallest graph we found where greedy DSatur needs 4 colours; 3 suffice.
    e = np.array(
        [[0, 1], [0, 2], [0, 4], [1, 4], [1, 6], [2, 3], [2, 5], [3, 5], [3, 6], [5, 6]], np.int64
    )
    assert _core.colour_graph(7, e, 0)[1] == 4
    colours, k = _core.colour_graph(7, e, 20000)
    assert k == 3 and all(colours[a] != colours[b] for a, b in e)


def test_colouring_ignores_edge_order_orientation_and_repeats():
    rng = np.random.default_rng(2)
    for _ in range(50):
        n = 12
        e = np.array([(a, b) for a in range(n) for b in range(a + 1, n) if rng.random() < 0.4])
        e = e.reshape(-1, 2).astype(np.int64)
        ref = _core.colour_graph(n, e, 20000)[0]
        shuffled = np.concatenate([e, e[: len(e) // 2]])[rng.permutation(len(e) + len(e) // 2)]
        flip = rng.random(len(shuffled)) < 0.5
        shuffled[flip] = shuffled[flip][:, ::-1]
        np.testing.assert_array_equal(
            _core.colour_graph(n, np.ascontiguousarray(shuffled), 20000)[0], ref
        )


def test_colouring_rejects_self_loops_and_bad_ids():
    with pytest.raises(ValueError, match="self-loop"):
        _core.colour_graph(3, np.array([[1, 1]], np.int64), 10)
    with pytest.raises(ValueError, match="outside"):
        _core.colour_graph(3, np.array([[0, 3]], np.int64), 10)


# ---------------------------------------------------------------- properties


def _random_case(seed, n, d=4):
    """Random features, a random labelling with outliers, and answers drawn
    from an independent random ground truth (so they are consistent)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    k = int(rng.integers(1, max(2, n // 2)))
    labels = rng.integers(-1, k, n)
    truth = rng.integers(0, int(rng.integers(1, max(2, n // 2)) + 1), n)
    m = int(rng.integers(0, 2 * n))
    pairs = rng.integers(0, n, (m, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    key = np.minimum(pairs[:, 0], pairs[:, 1]) * n + np.maximum(pairs[:, 0], pairs[:, 1])
    _, first = np.unique(key, return_index=True)
    pairs = pairs[np.sort(first)]
    c = aas.PairConstraints()
    c.add(pairs, truth[pairs[:, 0]] == truth[pairs[:, 1]])
    return X, labels, c


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 40))
def test_constraints_hold_and_untouched_clusters_are_unchanged(seed, n):
    X, labels, c = _random_case(seed, n)
    out = np3(labels, c, X)
    touched = _assert_holds_and_untouched_stay(labels, c, out)
    assert np.all(out[touched] >= 0)
    assert np.all(out[labels >= 0] >= 0)
    # idempotent, labels included
    np.testing.assert_array_equal(np3(out, c, X), out)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 40), data=st.data())
def test_partition_does_not_depend_on_row_order(seed, n, data):
    X, labels, c = _random_case(seed, n)
    perm = np.asarray(data.draw(st.permutations(range(n))))
    inv = np.argsort(perm)  # row perm[k] of the original is row k of the permuted input
    cp = aas.PairConstraints()
    cp.add(inv[c.pairs], c.is_must_link)
    a = np3(labels, c, X)
    b = np3(labels[perm], cp, X[perm])
    assert_same_partition(a[perm], b)
    np.testing.assert_array_equal(a[perm] == -1, b == -1)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 40))
def test_labels_do_not_depend_on_the_order_of_the_answers(seed, n):
    X, labels, c = _random_case(seed, n)
    rng = np.random.default_rng(seed + 1)
    order = rng.permutation(len(c))
    pairs = c.pairs[order]
    flip = rng.random(len(pairs)) < 0.5
    pairs[flip] = pairs[flip][:, ::-1]
    shuffled = aas.PairConstraints()
    shuffled.add(pairs, c.is_must_link[order])
    np.testing.assert_array_equal(np3(labels, shuffled, X), np3(labels, c, X))


def test_many_impure_clusters_same_result_for_any_thread_count():
    X, y = aas.datasets.make_reid_blobs(3000, d=32, seed=1)
    rng = np.random.default_rng(0)
    labels = (y // 3).astype(np.int64)  # three identities per cluster: impure after CLs
    labels[rng.random(len(y)) < 0.1] = -1
    pairs = rng.integers(0, len(y), (1500, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    c = aas.PairConstraints()
    key = np.minimum(pairs[:, 0], pairs[:, 1]) * len(y) + np.maximum(pairs[:, 0], pairs[:, 1])
    pairs = pairs[np.sort(np.unique(key, return_index=True)[1])]
    c.add(pairs, y[pairs[:, 0]] == y[pairs[:, 1]])
    within = rng.integers(0, len(y), 3000)
    partner = np.array([rng.choice(np.flatnonzero(labels == labels[i])) for i in within])
    more = np.stack([within, partner], 1)[(labels[within] >= 0) & (within != partner)]
    key = np.minimum(more[:, 0], more[:, 1]) * len(y) + np.maximum(more[:, 0], more[:, 1])
    more = more[np.sort(np.unique(key, return_index=True)[1])]
    more = more[~c.is_known(more)]
    c.add(more, y[more[:, 0]] == y[more[:, 1]])
    one = np3(labels, c, X, n_threads=1)
    two = np3(labels, c, X, n_threads=2)
    np.testing.assert_array_equal(one, two)
    _assert_satisfied(one, c)
    from aas_core.metrics.clustering import pairwise_f1 as f1

    assert f1(y, one) > f1(y, labels)  # the answers help


# ---------------------------------------------------------------- conflicts


def _cycle_store():
    c = aas.PairConstraints(must_link=[[0, 1], [1, 2]])
    c.add_cannot_link([[2, 0]])
    return c


def test_conflict_raises_naming_the_cannot_link_and_its_must_link_path():
    X = _angles([0, 10, 20, 30])
    with pytest.raises(
        ValueError,
        match=r"np3: the constraints are inconsistent \(1 conflict\(s\)\)\. The cannot-link "
        r"\(2, 0\) \(answer 2\) joins two images that the must-links \(1, 2\) - \(0, 1\) "
        r"\(answers \[1, 0\]\)",
    ):
        np3(np.zeros(4, np.int64), _cycle_store(), X)


def test_drop_oldest_ignores_the_oldest_answer_of_the_cycle():
    X = _angles([0, 10, 20, 30])
    c = _cycle_store()
    before = c.pairs.copy(), c.is_must_link.copy()
    out, dropped = np3(np.zeros(4, np.int64), c, X, on_conflict="drop_oldest", return_dropped=True)
    assert dropped.tolist() == [0]  # ML (0, 1) is the oldest of the cycle
    assert out[1] == out[2] != out[0]
    np.testing.assert_array_equal(c.pairs, before[0])
    np.testing.assert_array_equal(c.is_must_link, before[1])
    assert len(c) == 3 and not c.is_consistent
    # the cannot-link given first is the one dropped when it is the oldest
    c2 = aas.PairConstraints(cannot_link=[[2, 0]])
    c2.add_must_link([[0, 1], [1, 2]])
    out, dropped = np3(np.zeros(4, np.int64), c2, X, on_conflict="drop_oldest", return_dropped=True)
    assert dropped.tolist() == [0] and out[0] == out[1] == out[2]


def test_drop_oldest_resolves_opposite_answers_for_one_pair():
    X = _angles([0, 10, 20])
    c = aas.PairConstraints(cannot_link=[[0, 1]])
    c.add_must_link([[1, 0]])
    est = ConstrainedClustering(on_conflict="drop_oldest").fit(X, labels=[0, 0, -1], constraints=c)
    assert est.dropped_.tolist() == [0] and est.labels_.tolist() == [0, 0, -1]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(3, 30))
def test_drop_oldest_leaves_consistent_answers_that_all_hold(seed, n):
    rng = np.random.default_rng(seed)
    X, labels, c = _random_case(seed, n)
    noisy = aas.PairConstraints()
    same = c.is_must_link
    noisy.add(c.pairs, np.where(rng.random(len(same)) < 0.3, ~same, same))
    out, dropped = np3(labels, noisy, X, on_conflict="drop_oldest", return_dropped=True)
    keep = np.ones(len(noisy), bool)
    keep[dropped] = False
    rest = aas.PairConstraints()
    rest.add(noisy.pairs[keep], noisy.is_must_link[keep])
    assert rest.is_consistent
    assert len(set(dropped.tolist())) == len(dropped)
    assert (len(dropped) == 0) == noisy.is_consistent
    _assert_satisfied(out, rest)
    if noisy.is_consistent:
        np.testing.assert_array_equal(out, np3(labels, noisy, X))


# ---------------------------------------------------------------- input handling

_X = _angles([0, 10, 20, 30])
_L = np.array([0, 0, 1, 1])
_C = _pc(ml=[[0, 2]], cl=[[1, 3]])


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"labels": _L.astype(float)}, TypeError, "'labels' must hold integer labels"),
        ({"labels": _L.reshape(2, 2)}, ValueError, "'labels' must be 1-D"),
        ({"labels": _L[:3]}, ValueError, r"'labels' must have one entry per row of X \(4\)"),
        ({"labels": np.array([0, -2, 1, 1])}, ValueError, r"must be >= -1 .* got -2 in row 1"),
        ({"constraints": {"must_link": [[0, 1]]}}, TypeError, "'constraints' must be a Pair"),
        ({"constraints": ([[0, 1]], None)}, TypeError, "'constraints' must be a PairConstraints"),
        ({"constraints": _pc(ml=[[0, 5]])}, ValueError, r"answer 0 pairs \(0, 5\).*only 4 rows"),
        ({"constraints": aas.PairConstraints(n=5)}, ValueError, "made for n=5 images"),
        ({"X": _X[:, 0]}, ValueError, "'X' must be 2-D"),
        ({"X": _X[:3]}, ValueError, r"'labels' must have one entry per row of X \(3\)"),
        ({"X": _X.astype(int)}, TypeError, "'X' must be a floating-point array"),
        ({"X": np.where(np.eye(4, 2) > 0, np.nan, _X)}, ValueError, "NaN or inf .first in row 0"),
        ({"X": np.where(np.arange(4)[:, None] == 2, 0, _X)}, ValueError, "row 2 of 'X' is all"),
        (
            {"on_conflict": "x"},
            ValueError,
            "The 'on_conflict' parameter of np3 must be one of 'raise', 'drop_oldest'; got 'x'.",
        ),
        ({"on_conflict": None}, ValueError, "'on_conflict' parameter of np3"),
        ({"n_threads": 0}, ValueError, "'n_threads' parameter of np3"),
        ({"graph": np.zeros((4, 2), np.int64)}, TypeError, "'graph' must be a KNNGraph or None"),
        ({"graph": aas.knn_graph(_X[:3], 2)}, ValueError, "'graph' has 3 rows but X has 4"),
        ({"keep_together": 1}, TypeError, "'keep_together' parameter of np3 must be True"),
        (
            {"keep_together": True, "graph": aas.knn_graph(_X, 2)},
            ValueError,
            "give 'graph' or 'keep_together', not both",
        ),
    ],
)
def test_bad_input_is_named_in_the_error(kwargs, exc, match):
    args = {"labels": _L, "constraints": _C, "X": _X, **kwargs}
    labels, constraints, X = args.pop("labels"), args.pop("constraints"), args.pop("X")
    with pytest.raises(exc, match=match):
        np3(labels, constraints, X, **args)


def test_inputs_are_not_modified_and_float64_is_accepted():
    X64 = _angles([0, 5, 20, 60, 85, 90]).astype(np.float64) * 2.0
    labels = np.array([0, 0, 0, 1, 1, 1], dtype=np.int32)
    c = _pc(ml=[[2, 3]], cl=[[0, 5]])
    copies = X64.copy(), labels.copy(), c.pairs, c.is_must_link
    out = np3(labels, c, X64)
    assert out.tolist() == [2, 2, 2, 2, 3, 3]
    np.testing.assert_array_equal(X64, copies[0])
    np.testing.assert_array_equal(labels, copies[1])
    np.testing.assert_array_equal(c.pairs, copies[2])
    np.testing.assert_array_equal(c.is_must_link, copies[3])
    Xf = np.asfortranarray(X64.astype(np.float32))
    np.testing.assert_array_equal(np3(labels, c, Xf), out)


def test_core_rechecks_its_input():
    X = _angles([0, 10, 20])
    e = np.empty((0, 2), np.int64)
    with pytest.raises(ValueError, match="inconsistent"):
        _core.np3(
            np.zeros(3, np.int64), X, np.array([[0, 1]], np.int64), np.array([[1, 0]], np.int64), 1
        )
    with pytest.raises(ValueError, match="outside"):
        _core.np3(np.zeros(3, np.int64), X, np.array([[0, 3]], np.int64), e, 1)
    with pytest.raises(ValueError, match="itself"):
        _core.np3(np.zeros(3, np.int64), X, e, np.array([[2, 2]], np.int64), 1)
    with pytest.raises(ValueError, match=">= -1"):
        _core.np3(np.array([0, -5, 0]), X, e, e, 1)
    with pytest.raises(ValueError, match="one entry per row"):
        _core.np3(np.zeros(2, np.int64), X, e, e, 1)
    with pytest.raises(ValueError, match="no room"):
        _core.np3(np.array([0, 2**63 - 2, 1]), X, e, e, 1)
    with pytest.raises(TypeError):
        _core.np3(np.zeros(3, np.int32), X, e, e, 1)  # noconvert: no hidden copies
    with pytest.raises(TypeError):
        _core.np3(np.zeros(3, np.int64), X.astype(np.float64), e, e, 1)


def test_large_label_values():
    X = _angles([0, 10, 90, 100])
    big = 2**62
    out = np3(np.array([big, big, 5, 5]), _pc(cl=[[0, 1]]), X)
    assert out.tolist() == [big + 1, big + 2, 5, 5]


# ---------------------------------------------------------------- estimator


def test_estimator_api():
    X = _angles([0, 5, 20, 60, 85, 90])
    labels = np.array([0, 0, 0, 1, 1, 1])
    c = _pc(ml=[[2, 3]], cl=[[0, 5]])
    est = ConstrainedClustering()
    assert (
        repr(est) == "ConstrainedClustering(dissolve=None, merge='clusters', n_threads=None, "
        "on_conflict='raise')"
    )
    assert est.fit(X, labels=labels, constraints=c) is est
    np.testing.assert_array_equal(est.labels_, np3(labels, c, X))
    assert est.dropped_.tolist() == [] and est.dropped_.dtype == np.int64
    assert est.n_clusters_ == 2
    np.testing.assert_array_equal(
        ConstrainedClustering().fit_predict(X, labels=labels, constraints=c), est.labels_
    )
    with pytest.raises(ValueError, match="'on_conflict' parameter of ConstrainedClustering"):
        ConstrainedClustering(on_conflict="keep").fit(X, labels=labels, constraints=c)
    with pytest.raises(TypeError):
        ConstrainedClustering("raise", 1)  # n_threads is keyword-only
    with pytest.raises(TypeError):
        est.fit(X, labels)  # labels and constraints are keyword-only


def test_sklearn_clone_works():
    base = pytest.importorskip("sklearn.base")
    est = base.clone(ConstrainedClustering(on_conflict="drop_oldest", merge="nearest", n_threads=1))
    assert est.get_params() == {
        "on_conflict": "drop_oldest",
        "merge": "nearest",
        "dissolve": None,
        "n_threads": 1,
    }


def test_public_names():
    assert aas.np3 is np3 and aas.ConstrainedClustering is ConstrainedClustering
    assert {"np3", "ConstrainedClustering"} <= set(aas.__all__)


# ---- merge="nearest": must-links merge whole clusters only between nearest clusters ----------


def _four_clusters():
    """Clusters 0 (A-like), 1 (B-like), 2 (near 0), 3 (far from all): two points each."""
    X = np.array(
        [
            [1, 0, 0, 0],
            [0.95, 0.05, 0, 0],  # cluster 0
            [0, 1, 0, 0],
            [0.05, 0.95, 0, 0],  # cluster 1
            [0.9, 0.1, 0.05, 0],
            [0.92, 0, 0.1, 0],  # cluster 2, nearest to 0 (and 0 to it)
            [0, 0, 0, 1],
            [0, 0.05, 0, 0.95],
        ],  # cluster 3
        dtype=np.float32,
    )
    return X, np.array([0, 0, 1, 1, 2, 2, 3, 3])


def test_nearest_merges_mutual_nearest_clusters_whole():
    X, labels = _four_clusters()
    c = aas.PairConstraints(must_link=[[1, 4]])  # clusters 0 and 2: mutual nearest
    got = np3(labels, c, X, merge="nearest")
    assert got.tolist() == np3(labels, c, X).tolist()
    assert len(set(got[[0, 1, 4, 5]])) == 1


def test_nearest_moves_only_the_answered_images_between_far_clusters():
    X, labels = _four_clusters()
    c = aas.PairConstraints(must_link=[[0, 6]])  # clusters 0 and 3 are not each other's nearest
    got = np3(labels, c, X, merge="nearest")
    assert got[0] == got[6]  # the answer holds
    assert got[1] not in (got[0],) and got[7] != got[0]  # the rest stays where it was
    assert got[1] == labels[1] and got[7] == labels[7]
    assert got[[2, 3, 4, 5]].tolist() == labels[[2, 3, 4, 5]].tolist()  # untouched clusters
    # "clusters" (the paper's) merges both clusters whole
    full = np3(labels, c, X)
    assert len(set(full[[0, 1, 6, 7]])) == 1


def test_nearest_moves_the_whole_must_link_closure_and_keeps_cannot_links():
    X, labels = _four_clusters()
    c = aas.PairConstraints(must_link=[[0, 6], [6, 2]], cannot_link=[[1, 7]])
    got = np3(labels, c, X, merge="nearest")
    assert got[0] == got[6] == got[2]
    assert got[1] != got[7]
    with pytest.raises(ValueError, match="'merge' parameter of np3"):
        np3(labels, c, X, merge="all")


def _true_answers(pairs, truth):
    """Distinct pairs i < j (self-pairs dropped), their true answers, and the constraints."""
    pairs = np.unique(np.sort(pairs[pairs[:, 0] != pairs[:, 1]], axis=1), axis=0)
    same = truth[pairs[:, 0]] == truth[pairs[:, 1]]
    c = aas.PairConstraints(must_link=pairs[same], cannot_link=pairs[~same], n=len(truth))
    return pairs, same, c


def _assert_every_answer_holds(got, pairs, same):
    assert (got[pairs[same, 0]] == got[pairs[same, 1]]).all()
    together = (got[pairs[~same, 0]] == got[pairs[~same, 1]]) & (got[pairs[~same, 0]] >= 0)
    assert not together.any()


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_nearest_satisfies_every_answer(data):
    n = data.draw(st.integers(4, 40))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    X = rng.normal(size=(n, 5)).astype(np.float32)
    truth = rng.integers(0, 5, n)
    labels = rng.integers(-1, 6, n)
    pairs = rng.integers(0, n, size=(data.draw(st.integers(0, 30)), 2))
    pairs, same, c = _true_answers(pairs, truth)
    got = np3(labels, c, X, merge="nearest")
    _assert_every_answer_holds(got, pairs, same)
    # clusters that hold no answered image are unchanged
    touched = np.zeros(n, bool)
    touched[pairs.ravel()] = True
    for k in np.unique(labels[labels >= 0]):
        members = labels == k
        if not touched[members].any():
            assert len(np.unique(got[members])) == 1 and (got[members] == k).all()


# ---- merge="auto": the answers inside clusters choose -----------------------------------


def _answers(pairs, same):
    c = aas.PairConstraints()
    c.add(pairs, same)
    return c


def test_choose_merge_reads_the_answers_inside_clusters():
    from aas_core.refine import choose_merge

    labels = np.repeat(np.arange(10), 10)  # 10 clusters of 10
    inside = [(10 * c, 10 * c + t) for c in range(10) for t in (1, 2, 3)]  # 30 pairs
    across = [(0, 10 * c) for c in range(1, 10)]
    # 29 of 30 inside answers "same" (97%): pure clusters, merge whole clusters
    same = [True] * 29 + [False]
    assert choose_merge(labels, _answers(inside, same)) == "clusters"
    # 27 of 30 (90%): mixed clusters, merge only the answered images
    assert choose_merge(labels, _answers(inside, [True] * 27 + [False] * 3)) == "nearest"
    # answers across clusters say nothing about purity
    assert choose_merge(labels, _answers(across + inside, [False] * 9 + same)) == "clusters"
    # too few inside answers to show the clusters are pure (19 < 20): only the answered move
    assert choose_merge(labels, _answers(inside[:19], [True] * 19)) == "nearest"
    assert choose_merge(labels, _answers(inside[:20], [True] * 20)) == "clusters"
    # outliers are no cluster
    out = labels.copy()
    out[:10] = -1
    assert choose_merge(out, _answers(inside, [False] * 3 + [True] * 27)) == "clusters"
    assert choose_merge(labels, aas.PairConstraints()) == "nearest"


def test_choose_merge_sets_mixed_clusters_aside():
    from aas_core.refine import choose_merge

    labels = np.repeat(np.arange(3), 10)  # 3 clusters of 10
    mixed = [(i, j) for i in range(10) for j in range(i + 1, 10)][:25]  # 25 in cluster 0
    pure = [(10 + i, 10 + j) for i in range(10) for j in range(i + 1, 10)][:25]  # in cluster 1
    c = _answers(mixed + pure, [False] * 25 + [True] * 25)
    # with cluster 0 the share is 50%; cluster 0 is dissolved, and cluster 1's answers say pure
    assert choose_merge(labels, c) == "clusters"


def test_mixed_clusters_needs_20_answers_and_fewer_than_a_tenth_same():
    from aas_core.refine import mixed_clusters

    labels = np.repeat(np.arange(4), 10)  # 4 clusters of 10
    within = [
        [(10 * c + i, 10 * c + j) for i in range(10) for j in range(i + 1, 10)] for c in range(4)
    ]
    pairs = within[0][:19] + within[1][:20] + within[2][:20] + within[3][:40]
    same = (
        [False] * 19  # cluster 0: 19 answers, too few
        + [True]
        + [False] * 19  # cluster 1: 1 of 20 same (5%): mixed
        + [True] * 2
        + [False] * 18  # cluster 2: 2 of 20 (10%, not below): kept
        + [True] * 3
        + [False] * 37  # cluster 3: 3 of 40 (7.5%): mixed
    )
    got = mixed_clusters(labels, _answers(pairs, same))
    assert got.dtype == np.int64 and got.tolist() == [1, 3]
    # answers across clusters and with outliers do not count
    out = labels.copy()
    out[10:20] = -1
    assert mixed_clusters(out, _answers(pairs, same)).tolist() == [3]
    across = [(i, 10 + j) for i in range(5) for j in range(5)]
    assert mixed_clusters(labels, _answers(across, [False] * 25)).size == 0
    assert mixed_clusters(labels, aas.PairConstraints()).size == 0
    with pytest.raises(TypeError, match="mixed_clusters: 'constraints' must be a PairConstraints"):
        mixed_clusters(labels, pairs)
    with pytest.raises(ValueError, match="mixed_clusters: 'constraints' hold an image index 40"):
        mixed_clusters(labels, _answers([(0, 40)], [True]))
    with pytest.raises(TypeError, match="mixed_clusters: 'labels' must hold integer labels"):
        mixed_clusters(labels.astype(float), aas.PairConstraints())


def test_mixed_clusters_keeps_a_mixed_cluster_that_holds_most_true_pairs():
    from aas_core.refine import mixed_clusters

    def answers(labels, big_size):
        inside = [(i, j) for i in range(big_size) for j in range(i + 1, big_size)][:20]
        pure = [(10 * c + big_size, 10 * c + big_size + t) for c in range(10) for t in (1, 2)]
        pure = [p for p in pure if p[1] < len(labels)]
        return _answers(inside + pure, [True] + [False] * 19 + [True] * len(pure))

    # cluster 0 (10 images, 1 of 20 answers "same") beside 10 clusters of 10 that the
    # answers show pure: dissolving it raises the estimated pairwise F1
    labels = np.concatenate([np.zeros(10, int), np.repeat(np.arange(1, 11), 10)])
    assert mixed_clusters(labels, answers(labels, 10)).tolist() == [0]
    # a giant cluster (100 images) as mixed, beside two small ones: its 4,950 pairs hold most
    # of the true pairs the answers let us estimate, and F1 would fall without it: kept
    labels = np.concatenate([np.zeros(100, int), [1, 1, 1, 2, 2, 2]])
    assert mixed_clusters(labels, answers(labels, 100)).size == 0
    # alone, too
    assert mixed_clusters(np.zeros(100, int), answers(np.zeros(100, int), 100)).size == 0


def test_np3_auto_dissolves_a_mixed_cluster_and_keeps_what_the_answers_tie():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(31, 8)).astype(np.float32)
    labels = np.repeat([0, 1, 2, 0], [10, 10, 10, 1])  # cluster 0 is a mix; 1 and 2 are pure
    ids = np.array([0, 5, 2, 3, 4, 9, 6, 7, 0, 8] + [5] * 10 + [1] * 10 + [7])
    within = [(i, j) for i in range(10) for j in range(i + 1, 10)]  # 45, one "same": (0, 8)
    pairs = np.array(within + [(1, 10)])  # image 1 is the animal of cluster 1
    same = ids[pairs[:, 0]] == ids[pairs[:, 1]]
    c = _answers(pairs, same)
    got = aas.np3(labels, c, X, merge="auto")
    assert (got[pairs[same, 0]] == got[pairs[same, 1]]).all()  # every answer holds
    assert (got[pairs[~same, 0]] != got[pairs[~same, 1]]).all()
    assert got[0] == got[8] >= 0 and got[0] not in (0, 1, 2)  # tied by an answer: a new cluster
    assert got[1] == 1 and (got[10:20] == 1).all()  # must-linked to cluster 1: joins it
    assert (got[20:30] == 2).all()  # untouched clusters keep their labels
    for k in (2, 3, 4, 5, 6, 7, 9):  # only "different" answers: each alone
        assert (got == got[k]).sum() == 1
    assert got[30] == -1  # an unanswered image of the mixed cluster becomes an outlier
    # without the dissolution it stays with a part of its mixed cluster
    kept = aas.np3(labels, c, X, merge="auto", dissolve=False)
    assert (kept == kept[30]).sum() > 1
    assert np.array_equal(kept, aas.np3(labels, c, X, merge="nearest"))  # auto's choice here
    # dissolve=True works with any merge; the estimator passes it on
    assert aas.np3(labels, c, X, merge="nearest", dissolve=True)[30] == -1
    est = aas.ConstrainedClustering(merge="clusters", dissolve=True)
    assert est.fit(X, labels=labels, constraints=c).labels_[30] == -1
    with pytest.raises(TypeError, match="'dissolve' parameter of np3 must be True, False or None"):
        aas.np3(labels, c, X, merge="auto", dissolve="yes")


def test_np3_auto_is_the_chosen_mode():
    from aas_core.refine import choose_merge, mixed_clusters

    X, y = aas.datasets.make_reid_blobs(600, d=32, seed=5)
    rng = np.random.default_rng(0)
    for labels, want in ((y, "clusters"), (y // 6, "nearest")):  # pure; 6 identities mixed
        # answers about pairs inside the clusters: the true ones say how pure they are
        i = rng.integers(0, 600, 300)
        j = np.array([rng.choice(np.flatnonzero(labels == labels[t])) for t in i])
        pairs = np.unique(np.sort(np.stack([i, j], 1)[i != j], axis=1), axis=0)
        c = _answers(pairs, y[pairs[:, 0]] == y[pairs[:, 1]])
        assert choose_merge(labels, c, X) == want
        auto = aas.np3(labels, c, X, merge="auto")
        kept = np.where(np.isin(labels, mixed_clusters(labels, c, X)), -1, labels)
        assert np.array_equal(auto, aas.np3(kept, c, X, merge=want))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_auto_satisfies_every_answer(data):
    n = data.draw(st.integers(4, 60))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    X = rng.normal(size=(n, 5)).astype(np.float32)
    truth = rng.integers(0, data.draw(st.sampled_from([1, 3, 12, 60])), n)  # 12, 60: mixed clusters
    labels = rng.integers(-1, data.draw(st.integers(1, 4)), n)  # few clusters: many inside answers
    pairs = rng.integers(0, n, size=(data.draw(st.integers(0, 250)), 2))
    pairs, same, c = _true_answers(pairs, truth)
    got = np3(labels, c, X, merge="auto")
    _assert_every_answer_holds(got, pairs, same)
    assert np.array_equal(got, np3(labels, c, X, merge="auto"))  # deterministic


def test_choose_merge_refuses_bad_input():
    from aas_core.refine import choose_merge

    with pytest.raises(TypeError, match="choose_merge: 'constraints' must be a PairConstraints"):
        choose_merge(np.zeros(3, int), [(0, 1)])
    with pytest.raises(ValueError, match="choose_merge: 'constraints' hold an image index 5"):
        choose_merge(np.zeros(3, int), _answers([(0, 5)], [True]))
    with pytest.raises(ValueError, match="'merge'.*'clusters', 'nearest', 'auto'"):
        aas.np3(np.zeros(3, int), aas.PairConstraints(), np.eye(3, dtype=np.float32), merge="x")


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_auto_with_a_mixed_cluster_satisfies_every_answer(data):
    # pure clusters (one animal each) plus one cluster mixing many animals, asked about
    # mostly inside the mix: the case the dissolving is for
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    ids = data.draw(st.integers(12, 30))
    truth = np.repeat(np.arange(ids), data.draw(st.integers(2, 5)))
    n = len(truth)
    X = rng.normal(size=(n, 6)).astype(np.float32)
    mixed_ids = rng.choice(ids, data.draw(st.integers(8, ids - 2)), replace=False)
    labels = np.where(np.isin(truth, mixed_ids), ids, truth)
    mix = np.flatnonzero(labels == ids)
    inside = rng.choice(mix, size=(data.draw(st.integers(20, 80)), 2))
    other = rng.integers(0, n, size=(data.draw(st.integers(0, 40)), 2))
    pairs = np.concatenate([inside, other])
    pairs, same, c = _true_answers(pairs, truth)
    got = np3(labels, c, X, merge="auto")
    _assert_every_answer_holds(got, pairs, same)
    if ids in aas.refine.mixed_clusters(labels, c, X):  # what np3 decides, with X
        loose = np.setdiff1d(mix, pairs.ravel())  # unanswered images of the dissolved mix
        assert (got[loose] == -1).all()


# ---------------------------------------------------------------- graph=: split along the graph


def test_with_a_graph_a_split_cluster_parts_where_the_chain_of_neighbours_is_thinnest():
    # One cluster along an arc: 0..4 at 0°..60° in steps of 15°, then 5, 6, 7 at 75°,
    # 88° and 100° (steps of 13° and 12°). The answer 0 / 7 splits it. Between the two
    # ends' centroids the boundary is 50°, so 4 (60°) goes with 7. Along the graph, the
    # closest links go first: 5-6-7 join 7, then the 15° links tie 1..4 to 0, and 4-5
    # would join the two seeds: 4 stays with 0.
    X = _angles([0, 15, 30, 45, 60, 75, 88, 100])
    labels = np.zeros(8, np.int64)
    c = _pc(cl=[[0, 7]])
    by_centroid = np3(labels, c, X)
    by_graph = np3(labels, c, X, graph=aas.knn_graph(X, 3))
    assert_same_partition(by_centroid, [0, 0, 0, 0, 1, 1, 1, 1])
    assert_same_partition(by_graph, [0, 0, 0, 0, 0, 1, 1, 1])
    _assert_satisfied(by_graph, c)


def test_keep_together_moves_only_the_answered_points():
    # the arc of the graph test: the answer 0 / 7 takes 7 out alone (a tie between the
    # two answered parts goes to the smaller label, 0's); with the must-link 6 ~ 7 that
    # part holds more answered points, so the rest stays with it and 0 leaves alone
    X = _angles([0, 15, 30, 45, 60, 75, 88, 100])
    labels = np.zeros(8, np.int64)
    out = np3(labels, _pc(cl=[[0, 7]]), X, keep_together=True)
    assert_same_partition(out, [0, 0, 0, 0, 0, 0, 0, 1])
    c = _pc(ml=[[6, 7]], cl=[[0, 7]])
    out = np3(labels, c, X, keep_together=True)
    assert_same_partition(out, [0, 1, 1, 1, 1, 1, 1, 1])
    _assert_satisfied(out, c)


def test_with_a_graph_a_part_no_edge_ties_to_an_answer_becomes_its_own_cluster():
    # Two tight groups far apart in one cluster, plus a third tight group; the answer
    # splits the first two, the third has no edge (k=2) to either: a cluster of its own.
    X = _angles([0, 1, 2, 60, 61, 62, 120, 121, 122])
    labels = np.zeros(9, np.int64)
    c = _pc(cl=[[0, 3]])
    out = np3(labels, c, X, graph=aas.knn_graph(X, 3))
    assert_same_partition(out, [0, 0, 0, 1, 1, 1, 2, 2, 2])


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(3, 40))
def test_with_a_graph_constraints_hold_and_untouched_clusters_are_unchanged(seed, n):
    X, labels, c = _random_case(seed, n)
    g = aas.knn_graph(X, min(n - 1, 4))
    out = np3(labels, c, X, graph=g)
    _assert_holds_and_untouched_stay(labels, c, out)
    # the same clusters as without the graph, apart from where the free points go
    plain = np3(labels, c, X)
    assert np.array_equal(out < 0, plain < 0)


def _giant_mix(per_id=10, n_ids=40, seed=0):
    """40 tight identities (10 images each) in 40 directions, all in one cluster (0),
    beside 10 pure small clusters; answers inside the mix: 60 near pairs (same
    identity, "same") and 140 far ones ("different") -- 30% "same", while only 2.3%
    of the mix's pairs are one identity."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_ids + 10, 64))
    y = np.repeat(np.arange(n_ids + 10), per_id)
    X = (centres[y] + 0.15 * rng.normal(size=(len(y), 64))).astype(np.float32)
    labels = np.where(y < n_ids, 0, y - n_ids + 1)
    near = [(per_id * t, per_id * t + 1 + k) for t in range(n_ids) for k in range(2)][:60]
    far = [(per_id * t, per_id * ((t + 1 + k) % n_ids)) for t in range(n_ids) for k in range(4)]
    pure = [(per_id * (n_ids + c), per_id * (n_ids + c) + 1) for c in range(10)]
    pairs = near + far[:140] + pure
    c = _answers(pairs, [True] * 60 + [False] * 140 + [True] * 10)
    return X, y, labels, c


def test_a_mix_asked_about_its_near_pairs_is_judged_by_its_typical_pairs():
    from aas_core.refine import _share_by_similarity, mixed_clusters

    X, y, labels, c = _giant_mix()
    # the answers alone: 30% "same" inside, no mix
    assert mixed_clusters(labels, c).size == 0
    # P(same | cosine) from the answers, over the mix's pairs: near its true 2.3%
    codes, sizes = np.unique(labels, return_counts=True)
    share = _share_by_similarity(labels, c.pairs, c.is_must_link, X, codes, sizes)
    assert share[0] < 0.05 and (share[1:] > 0.9).all()
    # so with the features the mix is dissolved; its answered links stay
    assert mixed_clusters(labels, c, X).tolist() == [0]
    got = aas.np3(labels, c, X, merge="auto")
    _assert_every_answer_holds(got, c.pairs, c.is_must_link)
    answered = np.unique(c.pairs)
    loose = (labels == 0) & ~np.isin(np.arange(len(labels)), answered)
    assert (got[loose] == -1).all()
    # answers from an unbiased sample (random pairs of the mix, beside the pure clusters'):
    # dissolved either way
    rng = np.random.default_rng(1)
    rand = rng.choice(np.flatnonzero(labels == 0), size=(200, 2))
    rand = rand[rand[:, 0] != rand[:, 1]]
    pure = c.pairs[-10:]
    both = np.concatenate([rand, pure])
    r = _answers(both, y[both[:, 0]] == y[both[:, 1]])
    assert mixed_clusters(labels, r).tolist() == mixed_clusters(labels, r, X).tolist() == [0]


def test_the_share_by_similarity_waits_for_a_cosine_that_tells_the_answers_apart():
    from aas_core.refine import _auc, _share_by_similarity, mixed_clusters

    X, y, labels, c = _giant_mix()
    codes, sizes = np.unique(labels, return_counts=True)
    # features that say nothing of the animals: the cosine ranks the answers at chance
    noise = np.random.default_rng(2).normal(size=X.shape).astype(np.float32)
    cos = np.einsum("ij,ij->i", noise[c.pairs[:, 0]], noise[c.pairs[:, 1]])
    assert _auc(cos, c.is_must_link) < 0.9
    assert _share_by_similarity(labels, c.pairs, c.is_must_link, noise, codes, sizes) is None
    assert mixed_clusters(labels, c, noise).tolist() == mixed_clusters(labels, c).tolist() == []
    # the rank statistic itself: ties count half, one class alone gives 0.5
    assert _auc(np.array([0.1, 0.2, 0.2, 0.9]), np.array([False, False, True, True])) == 0.875
    assert _auc(np.array([0.1, 0.2]), np.array([True, True])) == 0.5


def test_the_share_by_similarity_is_exact_on_small_clusters_and_seeded_on_large():
    from aas_core.refine import _cluster_pairs

    labels = np.array([0, 1, 0, 2, 1, 0, -1] + [3] * 20)
    codes, sizes = np.unique(labels[labels >= 0], return_counts=True)
    i, j, which = _cluster_pairs(labels, codes, sizes)
    got = {(int(a), int(b)) for a, b, w in zip(i, j, which) if codes[w] in (0, 1, 2)}
    assert got == {(0, 2), (0, 5), (2, 5), (1, 4)}  # every pair of the small ones, once
    big = which == 3
    assert big.sum() == 64 and (labels[i[big]] == 3).all() and (i[big] != j[big]).all()
    again = _cluster_pairs(labels, codes, sizes)
    assert all(np.array_equal(a, b) for a, b in zip((i, j, which), again))


def test_mixed_clusters_and_choose_merge_check_x():
    from aas_core.refine import choose_merge, mixed_clusters

    X, _, labels, c = _giant_mix()
    with pytest.raises(ValueError, match="mixed_clusters: 'X' has 10 rows, but 'labels' has 500"):
        mixed_clusters(labels, c, X[:10])
    with pytest.raises(TypeError, match="choose_merge"):
        choose_merge(labels, c, X.astype(np.int64))
