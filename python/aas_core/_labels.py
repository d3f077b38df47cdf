"""Partition labels shared across the library."""

from __future__ import annotations

import numpy as np

__all__ = ["outliers_to_singletons"]


def outliers_to_singletons(labels) -> np.ndarray:
    """A copy of ``labels`` in which every outlier (a negative label) is a cluster of its own.

    The outliers get new labels ``max(labels) + 1``, ``max(labels) + 2``, ... (from 0
    when there is no other label) in the order they appear; every other label is kept.
    The result has the dtype of ``labels`` (an array-like is converted as by
    ``np.array``), and ``labels`` itself is never modified.

    Examples
    --------
    >>> outliers_to_singletons(np.array([2, -1, 0, -1])).tolist()
    [2, 3, 0, 4]
    """
    out = np.array(labels, copy=True)
    noise = np.flatnonzero(out < 0)
    out[noise] = out.max(initial=-1) + 1 + np.arange(len(noise))
    return out
