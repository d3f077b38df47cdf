"""make_reid_family and its named suite: shapes, determinism, and each knob doing its job."""

import numpy as np
import pytest

import aas_core as aas
from aas_core.datasets import GENERATOR_SUITE, make_reid_family, make_suite_member


def _sizes(y):
    return np.bincount(y)


def _first_neighbour(X):
    return aas.knn_graph(X, 2).indices[:, 1]


def test_shapes_dtypes_norms_and_determinism():
    X, y = make_reid_family(400, d=48, per_identity=(2, 9), zipf=0.5, bursts=0.3, seed=5)
    assert X.shape == (400, 48) and X.dtype == np.float32 and X.flags.c_contiguous
    assert y.shape == (400,) and y.dtype == np.int64
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1, rtol=1e-5)
    assert set(np.unique(y)) == set(range(y.max() + 1))
    X2, y2 = make_reid_family(400, d=48, per_identity=(2, 9), zipf=0.5, bursts=0.3, seed=5)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    X3, _ = make_reid_family(400, d=48, per_identity=(2, 9), zipf=0.5, bursts=0.3, seed=6)
    assert not np.array_equal(X, X3)


def test_rows_are_shuffled():
    _, y = make_reid_family(300, d=16, per_identity=10, seed=0)
    assert np.mean(y[1:] == y[:-1]) < 0.5


@pytest.mark.parametrize("n", [1, 2, 7])
def test_tiny_sizes_work(n):
    X, y = make_reid_family(n, d=4, per_identity=(2, 5), zipf=1.0, singletons=0.5, submodes=2)
    assert X.shape == (n, 4) and len(y) == n


def test_fixed_count_and_range():
    assert set(_sizes(make_reid_family(600, d=16, per_identity=6, seed=0)[1])) == {6}
    sizes = _sizes(make_reid_family(2000, d=16, per_identity=(3, 9), seed=0)[1])
    assert sizes.sum() == 2000 and sizes[:-1].min() >= 1 and sizes.max() <= 9
    assert np.sum((sizes >= 3) & (sizes <= 9)) >= len(sizes) - 1  # one takes what is left
    assert len(np.unique(sizes)) >= 5  # the range is used, not one value


def test_zipf_makes_sizes_unequal_with_the_same_mean():
    even = _sizes(make_reid_family(2000, d=16, per_identity=10, seed=0)[1])
    skew = _sizes(make_reid_family(2000, d=16, per_identity=10, zipf=1.0, seed=0)[1])
    assert len(even) == len(skew) == 200
    assert skew.max() >= 5 * even.max() and np.median(skew) < 10
    ranged = _sizes(make_reid_family(2000, d=16, per_identity=(2, 50), zipf=1.2, seed=0)[1])
    assert ranged.max() == 50 and np.median(ranged) == 2


def test_singletons_share():
    _, y = make_reid_family(1000, d=16, per_identity=8, singletons=0.3, seed=0)
    assert np.sum(_sizes(y) == 1) == 300


def test_dimension_and_spread_set_the_difficulty():
    def nn_rate(**kw):
        X, y = make_reid_family(1500, per_identity=6, seed=0, **kw)
        return np.mean(y[_first_neighbour(X)] == y)

    assert nn_rate(d=256, spread=0.0) == 1.0
    assert nn_rate(d=128, spread=1.5) > nn_rate(d=128, spread=2.5) + 0.2
    assert nn_rate(d=512, spread=1.6) > nn_rate(d=32, spread=1.6) + 0.1


def test_bursts_make_near_duplicates():
    def closest(bursts):
        X, y = make_reid_family(1000, d=128, spread=1.5, per_identity=10, bursts=bursts, seed=0)
        sims = np.sum(X * X[_first_neighbour(X)], axis=1)
        return np.mean(sims > 0.99)

    assert closest(0.0) == 0.0
    assert closest(0.6) > 0.4


def test_submodes_give_two_centres_per_identity():
    X, y = make_reid_family(
        800, d=256, spread=0.3, per_identity=20, submodes=2, submode_distance=0.6, seed=0
    )
    # within an identity the cosines fall in two bands: the same flank (~0.95) and the
    # other flank (~0.4); with one mode only the first band exists
    same = y[:, None] == y[None, :]
    np.fill_diagonal(same, False)
    sims = (X @ X.T)[same]
    assert np.mean(sims > 0.8) > 0.3 and np.mean(sims < 0.6) > 0.3
    X1, y1 = make_reid_family(800, d=256, spread=0.3, per_identity=20, seed=0)
    same1 = y1[:, None] == y1[None, :]
    np.fill_diagonal(same1, False)
    assert np.mean((X1 @ X1.T)[same1] < 0.6) == 0.0


def test_anisotropy_concentrates_the_noise():
    def top_share(anisotropy):
        X, y = make_reid_family(
            1200, d=128, spread=1.5, per_identity=12, anisotropy=anisotropy, seed=0
        )
        means = np.zeros((y.max() + 1, X.shape[1]))
        np.add.at(means, y, X)
        resid = X - (means / np.bincount(y)[:, None])[y]
        s = np.linalg.svd(resid, compute_uv=False) ** 2
        return s[:8].sum() / s.sum()  # 8 = d / 16 shared directions

    assert top_share(0.0) < 0.15
    assert top_share(0.7) > 0.5


def test_inputs_are_not_modified():
    per = [3, 7]
    make_reid_family(50, d=8, per_identity=per)
    assert per == [3, 7]


def test_suite_members():
    assert len(GENERATOR_SUITE) >= 12
    for name in GENERATOR_SUITE:
        X, y = make_suite_member(name, n=120, seed=1)
        assert X.shape[0] == 120 and X.dtype == np.float32 and y.dtype == np.int64
        assert X.shape[1] == GENERATOR_SUITE[name]["d"]
    X, y = make_suite_member("wide-6-d128", n=300, seed=2)
    X2, y2 = make_reid_family(300, seed=2, spread=2.0, per_identity=6, d=128)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)


def test_make_reid_blobs_is_unchanged():
    # its output feeds many tests and benchmarks: a fingerprint of one draw
    X, y = aas.datasets.make_reid_blobs(50, d=8, seed=0)
    assert len(np.unique(y)) == 6 and y[:8].tolist() == [2, 0, 5, 0, 0, 4, 1, 0]
    assert float(X.sum()) == pytest.approx(-4.713822, abs=1e-4)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"n": 0}, ValueError, "'n'"),
        ({"d": 1}, ValueError, "'d'"),
        ({"spread": -0.1}, ValueError, "'spread'"),
        ({"spread": float("nan")}, ValueError, "'spread'"),
        ({"per_identity": 0}, ValueError, "'per_identity'"),
        ({"per_identity": (5, 2)}, ValueError, "'per_identity'"),
        ({"per_identity": (2, 3, 4)}, TypeError, "'per_identity'"),
        ({"per_identity": 2.5}, TypeError, "'per_identity'"),
        ({"zipf": -1}, ValueError, "'zipf'"),
        ({"singletons": 1.5}, ValueError, "'singletons'"),
        ({"bursts": 1.0}, ValueError, "'bursts'"),
        ({"burst_jitter": -1}, ValueError, "'burst_jitter'"),
        ({"submodes": 0}, ValueError, "'submodes'"),
        ({"submode_distance": 2}, ValueError, "'submode_distance'"),
        ({"anisotropy": 1.1}, ValueError, "'anisotropy'"),
        ({"ids_per_group": 0}, ValueError, "'ids_per_group'"),
        ({"seed": -1}, ValueError, "'seed'"),
        ({"d": "64"}, TypeError, "'d'"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    n = kwargs.pop("n", 10)
    with pytest.raises(exc, match=match):
        make_reid_family(n, **kwargs)


def test_suite_member_bad_arguments():
    with pytest.raises(ValueError, match="'name'"):
        make_suite_member("nope")
    with pytest.raises(ValueError, match="'n'"):
        make_suite_member("tiny-ids", n=0)
