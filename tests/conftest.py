import numpy as np
import pytest


def assert_same_partition(a, b):
    """Two label vectors describe the same partition (labels may differ by renaming)."""
    a = np.asarray(a)
    b = np.asarray(b)
    assert a.shape == b.shape
    pairs = np.unique(np.stack([a, b], axis=1), axis=0)
    assert len(pairs) == len(np.unique(a)) == len(np.unique(b)), "partitions differ"


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
