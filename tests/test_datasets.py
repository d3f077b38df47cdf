import numpy as np
import pytest

import aas_core as aas


def test_shapes_norms_and_determinism():
    X, y = aas.datasets.make_reid_blobs(500, d=64, seed=3)
    assert X.shape == (500, 64) and X.dtype == np.float32 and X.flags.c_contiguous
    assert y.shape == (500,) and y.dtype == np.int64
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1, rtol=1e-5)
    assert set(np.unique(y)) == set(range(y.max() + 1))
    assert 50 <= len(np.unique(y)) <= 63  # about n/8 identities, empty ones dropped
    X2, y2 = aas.datasets.make_reid_blobs(500, d=64, seed=3)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    X3, _ = aas.datasets.make_reid_blobs(500, d=64, seed=4)
    assert not np.array_equal(X, X3)


def test_first_neighbour_shares_the_identity_about_as_designed():
    # the generator's design: about 92% at n = 2k (d = 2048)
    X, y = aas.datasets.make_reid_blobs(2000, seed=0)
    g = aas.knn_graph(X, 2)
    rate = (y[g.indices[:, 1]] == y).mean()
    assert 0.88 <= rate <= 0.96


def test_tiny_sizes_work():
    X, y = aas.datasets.make_reid_blobs(1, d=4)
    assert X.shape == (1, 4) and y.tolist() == [0]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n": 0}, "'n'"),
        ({"n": 5, "d": 0}, "'d'"),
        ({"n": 5, "ids_per_group": 0}, "'ids_per_group'"),
    ],
)
def test_bad_arguments(kwargs, match):
    n = kwargs.pop("n")
    with pytest.raises(ValueError, match=match):
        aas.datasets.make_reid_blobs(n, **kwargs)
