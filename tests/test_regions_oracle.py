import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aas_core.oracle import LabelOracle
from aas_core.sampling import uncertainty_regions


def test_hand_worked_regions():
    # A: {0,1} {2,3} {4: outlier} {5,6} {7} ; B: {0,1,2} {3,4} {5,6} {7}
    a = [0, 0, 1, 1, -1, 2, 2, 3]
    b = [0, 0, 0, 1, 1, 2, 2, 3]
    r = uncertainty_regions(a, b)
    # {0,1} ~ {0,1,2} ~ {2,3} ~ {3,4} ~ {4}: one tangled region; {5,6} and {7} agree
    assert r.region.tolist() == [0, 0, 0, 0, 0, -1, -1, -1]
    assert r.n_regions == 1 and r.members(0).tolist() == [0, 1, 2, 3, 4]


def test_two_separate_regions_are_numbered_by_smallest_member():
    a = [0, 0, 1, 1, 2, 2]
    b = [5, 6, 7, 7, 8, 9]
    r = uncertainty_regions(a, b)
    assert r.region.tolist() == [0, 0, -1, -1, 1, 1] and r.n_regions == 2


def test_identical_clusterings_and_all_outliers_have_no_region():
    r = uncertainty_regions([3, 3, 1, -1], [0, 0, 2, 9])
    assert r.n_regions == 0 and (r.region == -1).all()
    r = uncertainty_regions([-1, -1, -1], [-1, -1, -1])
    assert r.n_regions == 0


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_region_properties(data):
    n = data.draw(st.integers(1, 30))
    a = np.array(data.draw(st.lists(st.integers(-1, 5), min_size=n, max_size=n)))
    b = np.array(data.draw(st.lists(st.integers(-1, 5), min_size=n, max_size=n)))
    r = uncertainty_regions(a, b)
    la, lb = r.labels_a, r.labels_b
    for i in range(n):
        same_set = np.array_equal(la == la[i], lb == lb[i])
        assert (r.region[i] == -1) == same_set
    for k in range(r.n_regions):
        m = r.region == k
        assert m.any()
        # a region is a union of whole clusters of A and of B
        assert np.isin(la, la[m]).sum() == m.sum() and np.isin(lb, lb[m]).sum() == m.sum()
    # symmetric in A and B, and the caller's arrays are untouched
    np.testing.assert_array_equal(uncertainty_regions(b, a).region, r.region)
    assert (a >= -1).all()


def test_regions_bad_input():
    with pytest.raises(ValueError, match="'labels_b' must have length 3"):
        uncertainty_regions([0, 0, 1], [0, 1])
    with pytest.raises(ValueError, match="'labels_a' must be a 1-D integer array"):
        uncertainty_regions([0.5, 1.0], [0, 1])


def test_oracle_answers_from_labels_and_counts_the_cost():
    o = LabelOracle(np.array([4, 4, 7, 7, 9]))
    assert o.answer(np.array([[0, 1], [1, 2], [3, 2], [4, 0]])).tolist() == [
        True,
        False,
        True,
        False,
    ]
    assert o.n_asked == 4 and o.answer(np.empty((0, 2), np.int64)).size == 0


def test_oracle_noise_rate_and_repeatability():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 40, 3000)
    pairs = rng.integers(0, 3000, (20000, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    truth = y[pairs[:, 0]] == y[pairs[:, 1]]
    o = LabelOracle(y, noise=0.2, seed=5)
    ans = o.answer(pairs)
    assert abs((ans != truth).mean() - 0.2) < 0.02
    # same pair, any order or orientation, same answer; another seed differs
    again = LabelOracle(y, noise=0.2, seed=5).answer(pairs[::-1, ::-1])[::-1]
    np.testing.assert_array_equal(ans, again)
    assert (LabelOracle(y, noise=0.2, seed=6).answer(pairs) != ans).any()


@pytest.mark.parametrize(
    "args, kwargs, exc, match",
    [
        (([0.5, 1.0],), {}, ValueError, "'y' must be a 1-D integer array"),
        (([0, 1],), {"noise": 0.7}, ValueError, "'noise' parameter"),
        (([0, 1],), {"seed": 1.5}, TypeError, "'seed' must be an int"),
    ],
)
def test_oracle_bad_input(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        LabelOracle(*args, **kwargs)
    o = LabelOracle([0, 1, 1])
    with pytest.raises(ValueError, match=r"indices must be in \[0, 3\)"):
        o.answer([[0, 3]])
