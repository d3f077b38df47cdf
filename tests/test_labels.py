"""outliers_to_singletons: the one rule for "an outlier is an identity of its own"."""

import numpy as np
import pytest

from aas_core._labels import outliers_to_singletons


def test_outliers_count_up_from_the_largest_label_in_order():
    labels = np.array([3, -1, 0, -1, 3, -1])
    out = outliers_to_singletons(labels)
    assert out.tolist() == [3, 4, 0, 5, 3, 6]
    assert labels.tolist() == [3, -1, 0, -1, 3, -1]  # the input is never written


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_keeps_the_dtype_and_always_copies(dtype):
    labels = np.array([1, 0, 1], dtype)
    out = outliers_to_singletons(labels)
    assert out.dtype == dtype and out.tolist() == [1, 0, 1]
    assert out is not labels and not np.shares_memory(out, labels)


def test_all_outliers_empty_and_lists():
    assert outliers_to_singletons(np.full(3, -1)).tolist() == [0, 1, 2]
    assert outliers_to_singletons(np.empty(0, np.int64)).tolist() == []
    assert outliers_to_singletons([-1, 5, -2]).tolist() == [6, 5, 7]  # any negative label
