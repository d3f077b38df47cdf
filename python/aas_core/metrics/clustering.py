"""Clustering agreement from contingency counts: O(n log n), no pair enumeration.

Predicted labels of -1 (DBSCAN noise) are treated as singletons by default,
which is how the active loop counts outliers: each is its own identity.
"""

from __future__ import annotations

import numpy as np

from .._labels import outliers_to_singletons

__all__ = ["ari", "contingency", "nmi", "pairwise_f1", "pairwise_scores"]


def _labels(x, name, n=None, noise_as_singletons=False):
    try:
        a = np.asarray(x)
    except (ValueError, TypeError, OverflowError):
        raise ValueError(f"{name!r} must be a 1-D array of integer labels.") from None
    if a.ndim != 1:
        raise ValueError(f"{name!r} must be 1-D; got shape {a.shape}.")
    if a.size == 0:  # [] is float64 to numpy; empty is empty whatever the container
        a = a.astype(np.int64)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name!r} must hold integer labels; got dtype {a.dtype}.")
    if n is not None and len(a) != n:
        raise ValueError(f"{name!r} must have length {n} (like labels_true); got {len(a)}.")
    a = a.astype(np.int64)
    if noise_as_singletons:
        a = outliers_to_singletons(a)
    return a


def contingency(labels_true, labels_pred, *, noise_as_singletons=True):
    """Returns (cell counts, true-cluster sizes, predicted-cluster sizes) as int64 arrays."""
    t = _labels(labels_true, "labels_true")
    p = _labels(labels_pred, "labels_pred", len(t), noise_as_singletons)
    _, t = np.unique(t, return_inverse=True)
    _, p = np.unique(p, return_inverse=True)
    _, cells = np.unique(t.astype(np.int64) * (p.max(initial=0) + 1) + p, return_counts=True)
    return cells, np.bincount(t), np.bincount(p)


def _pairs(counts):
    c = counts.astype(np.float64)
    return float(np.sum(c * (c - 1) / 2))


def pairwise_scores(labels_true, labels_pred, *, noise_as_singletons=True):
    """Pairwise precision, recall and F1 over all same-cluster pairs.

    Precision = share of predicted same-cluster pairs that share an identity;
    recall = share of same-identity pairs that are clustered together. Where a
    denominator is 0 the score is 1 (nothing to get wrong).

    >>> pairwise_scores([0, 0, 1, 1], [0, 0, 0, 1])
    (0.3333333333333333, 0.5, 0.4)
    """
    cells, true_sizes, pred_sizes = contingency(
        labels_true, labels_pred, noise_as_singletons=noise_as_singletons
    )
    tp = _pairs(cells)
    pred_pairs, true_pairs = _pairs(pred_sizes), _pairs(true_sizes)
    precision = tp / pred_pairs if pred_pairs else 1.0
    recall = tp / true_pairs if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def pairwise_f1(labels_true, labels_pred, *, noise_as_singletons=True) -> float:
    """Pairwise F1 (see :func:`pairwise_scores`)."""
    return pairwise_scores(labels_true, labels_pred, noise_as_singletons=noise_as_singletons)[2]


def ari(labels_true, labels_pred, *, noise_as_singletons=True) -> float:
    """Adjusted Rand index (Hubert & Arabie), as sklearn's adjusted_rand_score.

    >>> ari([0, 0, 1, 1], [5, 5, 7, 7])
    1.0
    """
    cells, true_sizes, pred_sizes = contingency(
        labels_true, labels_pred, noise_as_singletons=noise_as_singletons
    )
    n = float(true_sizes.sum())
    index = _pairs(cells)
    a, b = _pairs(true_sizes), _pairs(pred_sizes)
    total = n * (n - 1) / 2
    expected = a * b / total if total else 0.0
    maximum = (a + b) / 2
    if maximum == expected:  # both partitions trivial in the same way
        return 1.0
    return float((index - expected) / (maximum - expected))


def nmi(labels_true, labels_pred, *, noise_as_singletons=True) -> float:
    """Normalised mutual information (arithmetic mean of the entropies), as sklearn.

    >>> round(nmi([0, 0, 1, 1], [0, 0, 1, 1]), 6)
    1.0
    """
    t = _labels(labels_true, "labels_true")
    p = _labels(labels_pred, "labels_pred", len(t), noise_as_singletons)
    _, t = np.unique(t, return_inverse=True)
    _, p = np.unique(p, return_inverse=True)
    n = len(t)
    if n == 0:
        return 1.0
    kt, kp = t.max() + 1, p.max() + 1
    if kt == kp == 1:
        return 1.0
    codes, cells = np.unique(t.astype(np.int64) * kp + p, return_counts=True)
    ti, pi = codes // kp, codes % kp
    at, bp = np.bincount(t).astype(np.float64), np.bincount(p).astype(np.float64)
    cells = cells.astype(np.float64)
    mi = float(np.sum(cells / n * (np.log(cells * n) - np.log(at[ti] * bp[pi]))))
    ht = float(-np.sum(at / n * np.log(at / n)))
    hp = float(-np.sum(bp / n * np.log(bp / n)))
    denom = (ht + hp) / 2
    if denom == 0:
        return 1.0
    return max(0.0, min(1.0, mi / denom))
