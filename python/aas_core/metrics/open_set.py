"""Open-set Re-ID evaluation: the paper's protocol, BAKS, BAUS and AUC-ROC.

Protocol (paper §4, "Experimental Protocol"). The test set
is the query set. 20% of the *training* identities, drawn at random with a
seed, are held out as unknown; for each of the other 80% up to five
exemplars become the gallery (:func:`protocol_split`). Test identities that
have no exemplar in the gallery (held out, or never in the training set) are
*unknown* queries; the others are *known* queries.

Every query is matched to its most similar gallery item (:func:`top1`):

- **BAKS**, balanced accuracy on known samples: per known identity, the
  share of its queries whose top-1 gallery item has the right identity;
  averaged over identities, so each individual counts the same however many
  images it has. Without a threshold this is the paper's closed-set BAKS;
  with one, a known query whose top-1 similarity is below the threshold is
  called "unknown" and counts as an error (the wildlife-datasets convention).
- **BAUS**, balanced accuracy on unknown samples: a query is called
  "unknown" when its top-1 similarity is < ``threshold``; per unknown
  identity, the share of its queries called unknown, averaged over
  identities.
- **AUC-ROC** of known (positive) vs unknown from the top-1 similarity:
  the threshold-free summary the paper reports instead of BAUS. Equal to
  ``sklearn.metrics.roc_auc_score(is_known, top1_similarity)`` (ties count
  one half).

Query identities of -1 (unlabelled animals) are unknown by definition, each
its own identity in the per-identity averages. Gallery identities must be
>= 0. These definitions follow the wildlife-datasets package
(``wildlife_datasets/metrics/metrics.py``: ``BAKS``, ``BAUS``,
``auc_roc_new_class``), which the paper cites for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.stats import rankdata

from .._validation import check_float, check_int
from ..neighbors import normalize_rows
from ._scores import ScoreSource, as_ids

__all__ = [
    "OpenSetScores",
    "OpenSetSplit",
    "Top1",
    "auc_roc",
    "baks",
    "baus",
    "choose_threshold",
    "evaluate",
    "protocol_split",
    "top1",
]

_OPEN_SET_METRICS = ("cosine", "similarity")


# ---- the protocol -------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class OpenSetSplit:
    """The gallery of the open-set protocol, built from the training set.

    Attributes
    ----------
    gallery : (n_gallery,) int64
        Rows of the training set chosen as exemplars, grouped by identity
        (identities ascending) in the order they were chosen.
    known : (n_known,) int64
        Training identities with exemplars in the gallery, ascending.
    unknown : (n_unknown,) int64
        Training identities held out as unknown, ascending.
    """

    gallery: np.ndarray
    known: np.ndarray
    unknown: np.ndarray


def protocol_split(
    train_ids, features=None, *, unknown_fraction=0.2, max_exemplars=5, seed=0
) -> OpenSetSplit:
    """Holds out training identities as unknown and picks gallery exemplars.

    ``round(unknown_fraction * n_identities)`` identities (half rounds up)
    are drawn without replacement by a Generator seeded with ``seed``; every
    other identity contributes ``min(max_exemplars, its size)`` exemplars.

    Exemplar rule. The paper selects exemplars with MegaDescriptor
    similarity; its exact rule is in the unpublished supplementary. Given
    ``features`` (any embedding: pass MegaDescriptor's to follow the paper),
    we take the identity's **medoid** first (the image with the largest
    summed cosine similarity to the identity's other images: its most typical
    view), then repeatedly the image **farthest** (cosine) from the exemplars
    chosen so far (farthest-point sampling), until ``max_exemplars``. A
    gallery must let a query from any pose or side find its individual: the
    most central images alone are near-duplicates of one view and random ones
    spend slots on duplicates, while farthest-point exemplars cover the
    identity's appearance modes. (The price: a mislabelled or broken image
    far from its identity is picked early; clean the training labels first.)
    This rule uses no randomness; ties go to the smaller row. Without
    ``features`` the exemplars are a seeded random sample of each identity.

    Parameters
    ----------
    train_ids : (n,) int array
        Identities of the training images; rows labelled -1 are never used.
    features : (n, d) float array, optional
        Embeddings of the training images (cosine similarity).
    unknown_fraction : float in [0, 1)
        Share of training identities held out (paper: 0.2).
    max_exemplars : int >= 1
        Exemplars per known identity (paper: 5).
    seed : int >= 0
        Seed of the hold-out draw (and of the random exemplars).

    Returns
    -------
    OpenSetSplit

    Examples
    --------
    >>> ids = np.repeat(np.arange(5), 3)                  # 5 identities, 3 images each
    >>> s = protocol_split(ids, max_exemplars=2, seed=0)
    >>> len(s.known), len(s.unknown), len(s.gallery)      # 1 of 5 held out
    (4, 1, 8)
    >>> bool(np.isin(ids[s.gallery], s.known).all())
    True
    """
    owner = "protocol_split"
    ids = as_ids(train_ids, "train_ids", n=None, owner=owner)
    if ids.size == 0:
        raise ValueError(f"{owner}: 'train_ids' is empty.")
    unknown_fraction = check_float(
        "unknown_fraction", unknown_fraction, low=0.0, high=1.0, closed="left", owner=owner
    )
    max_exemplars = check_int("max_exemplars", max_exemplars, low=1, owner=owner)
    seed = check_int("seed", seed, low=0, owner=owner)
    X = None
    if features is not None:
        X = normalize_rows(features, name="features", owner=owner)
        if X.shape[0] != ids.size:
            raise ValueError(
                f"{owner}: 'features' must have one row per entry of 'train_ids' "
                f"({ids.size}); got {X.shape[0]}."
            )

    identities = np.unique(ids[ids >= 0])
    if identities.size == 0:
        raise ValueError(f"{owner}: 'train_ids' has no identity >= 0 (all rows are -1).")
    rng = np.random.default_rng(seed)
    n_unknown = int(np.floor(unknown_fraction * identities.size + 0.5))
    drawn = rng.permutation(identities)
    unknown = np.sort(drawn[:n_unknown])
    known = np.sort(drawn[n_unknown:])
    if known.size == 0:
        raise ValueError(
            f"{owner}: holding out {n_unknown} of {identities.size} identities leaves no "
            "known identity for the gallery; lower 'unknown_fraction'."
        )

    rows = np.flatnonzero(np.isin(ids, known))  # ascending
    order = np.argsort(ids[rows], kind="stable")
    rows = rows[order]  # grouped by identity, ascending rows inside
    code = np.searchsorted(known, ids[rows])
    starts = np.searchsorted(code, np.arange(known.size))
    if X is None:
        chosen = _random_exemplars(code, starts, max_exemplars, rng)
    else:
        chosen = _medoid_fps_exemplars(X[rows], code, starts, max_exemplars)
    return OpenSetSplit(gallery=rows[chosen], known=known, unknown=unknown)


def _random_exemplars(code, starts, k, rng):
    key = rng.random(code.size)
    order = np.lexsort((key, code))  # by identity, random inside
    rank = np.arange(code.size) - starts[code[order]]
    return order[rank < k]  # by identity, in random order inside


def _segment_argmax(values, code, starts, n_segments):
    """Position of the largest value of each segment (ties: first), or -1 if all -inf."""
    best = np.full(n_segments, -np.inf)
    np.maximum.at(best, code, values)
    hit = (values == best[code]) & np.isfinite(values)
    pos = np.full(n_segments, values.size, dtype=np.int64)
    np.minimum.at(pos, code[hit], np.flatnonzero(hit))
    pos[pos == values.size] = -1
    return pos


def _row_dots(A, B, b_rows, chunk=8192):
    """float64 dot product of A[i] and B[b_rows[i]] for every i, in chunks (no (n, d) copy)."""
    out = np.empty(len(A))
    for a in range(0, len(A), chunk):
        out[a : a + chunk] = np.einsum(
            "ij,ij->i", A[a : a + chunk], B[b_rows[a : a + chunk]], dtype=np.float64
        )
    return out


def _medoid_fps_exemplars(Xg, code, starts, k):
    """Medoid first, then farthest-point sampling by cosine, within each identity."""
    n_ids = starts.size
    sums = np.add.reduceat(Xg, starts, axis=0, dtype=np.float64)
    # summed similarity to the other members: <x, s - x> = <x, s> - |x|^2
    central = _row_dots(Xg, sums, code) - np.einsum("ij,ij->i", Xg, Xg, dtype=np.float64)
    first = _segment_argmax(central, code, starts, n_ids)
    chosen = [first]
    taken = np.zeros(code.size, dtype=bool)
    taken[first] = True
    # cosine distance of every member to its identity's nearest exemplar so far
    near = 1.0 - _row_dots(Xg, Xg, first[code])
    for _ in range(1, k):
        nxt = _segment_argmax(np.where(taken, -np.inf, near), code, starts, n_ids)
        ok = nxt >= 0
        if not ok.any():
            break
        chosen.append(nxt)
        taken[nxt[ok]] = True
        has_new = np.flatnonzero(ok[code])
        d = 1.0 - _row_dots(Xg[has_new], Xg, nxt[code[has_new]])
        near[has_new] = np.minimum(near[has_new], d)
    picked = np.stack(chosen, axis=1)  # (n_ids, steps), -1 where an identity ran out
    return picked[picked >= 0]  # row-major: by identity, in the order chosen


# ---- top-1 matching -----------------------------------------------------------


class Top1(NamedTuple):
    """Most similar gallery item of each query (ties: the smaller gallery index)."""

    index: np.ndarray  # (n_query,) int64
    score: np.ndarray  # (n_query,) float32 (float64 for a float64 similarity matrix)


def top1(query, gallery=None, *, metric="cosine", block_size=None) -> Top1:
    """Most similar gallery item of each query, computed block by block.

    Parameters
    ----------
    query : (n_query, d) float array, or (n_query, n_gallery) similarity matrix
    gallery : (n_gallery, d) float array, or None with ``metric="similarity"``
    metric : {"cosine", "similarity"}
        Cosine of L2-normalised features (a copy), or a precomputed similarity.
    block_size : int, optional
        Query rows scored at a time.

    Examples
    --------
    >>> top1(np.array([[0.2, 0.9, 0.9], [0.5, 0.1, 0.0]]), metric="similarity")
    Top1(index=array([1, 0]), score=array([0.9, 0.5]))
    """
    src = _open_set_source(query, gallery, metric, "top1")
    return _top1(src, block_size)


def _open_set_source(query, gallery, metric, owner):
    if metric not in _OPEN_SET_METRICS:
        choices = ", ".join(repr(m) for m in _OPEN_SET_METRICS)
        raise ValueError(
            f"The 'metric' parameter of {owner} must be one of {choices} (open-set decisions "
            f"threshold a similarity); got {metric!r}."
        )
    return ScoreSource(query, gallery, metric=metric, owner=owner)


def _top1(src, block_size):
    step = src.block_rows(block_size)
    index = np.empty(src.n_query, dtype=np.int64)
    score = None
    for a in range(0, src.n_query, step):
        S = src.block(a, min(src.n_query, a + step))
        if score is None:
            score = np.empty(src.n_query, dtype=S.dtype)
        best = np.argmax(S, axis=1)
        index[a : a + len(S)] = best
        score[a : a + len(S)] = S[np.arange(len(S)), best]
    return Top1(index, score)


# ---- the metrics --------------------------------------------------------------


def _known(query_ids, gallery_ids, owner):
    g = as_ids(gallery_ids, "gallery_ids", n=None, owner=owner, allow_negative=False)
    if g.size == 0:
        raise ValueError(f"{owner}: 'gallery_ids' is empty; the gallery needs at least one item.")
    q = as_ids(query_ids, "query_ids", n=None, owner=owner)
    if q.size == 0:
        raise ValueError(f"{owner}: 'query_ids' is empty.")
    return q, (q >= 0) & np.isin(q, g)


def _per_query(x, name, n, owner, *, dtype):
    a = np.asarray(x)
    if a.ndim != 1 or len(a) != n:
        raise ValueError(
            f"{owner}: {name!r} must be 1-D with one entry per query ({n}); got shape {a.shape}."
        )
    if dtype == "int":
        if a.dtype.kind not in "iu":
            raise TypeError(f"{owner}: {name!r} must hold integer labels; got dtype {a.dtype}.")
        return a.astype(np.int64, copy=False)
    if a.dtype.kind not in "fiu" or a.dtype.kind == "b":
        raise TypeError(f"{owner}: {name!r} must hold real scores; got dtype {a.dtype}.")
    if not np.isfinite(a).all():
        raise ValueError(f"{owner}: {name!r} contains NaN or inf.")
    return a


def _balanced(ids, correct):
    """Mean over identities of the mean of ``correct``; each -1 is its own identity."""
    ids = np.where(ids < 0, -2 - np.arange(ids.size), ids)
    _, inv, counts = np.unique(ids, return_inverse=True, return_counts=True)
    return float(np.mean(np.bincount(inv, weights=correct.astype(np.float64)) / counts))


def _check_threshold(threshold, owner, metric=None):
    if metric == "cosine":
        return check_float("threshold", threshold, low=-1.0, high=1.0, owner=owner)
    return check_float("threshold", threshold, owner=owner)


def baks(query_ids, predicted_ids, gallery_ids, *, scores=None, threshold=None) -> float:
    """Balanced accuracy on known samples.

    Parameters
    ----------
    query_ids : (n_query,) int array
        True identities of the queries (-1: unknown).
    predicted_ids : (n_query,) int array
        Identity of each query's top-1 gallery item
        (``gallery_ids[top1(...).index]``).
    gallery_ids : (n_gallery,) int array
        Identities of the gallery items (>= 0); they define the known identities.
    scores, threshold : optional
        Top-1 similarities and a threshold, both or neither: a known query
        with score < threshold is called unknown, which is an error here.

    Examples
    --------
    >>> # identity 0: 1 of 2 right; identity 1: 1 of 1; identity 7 is unknown
    >>> baks([0, 0, 1, 7], [0, 1, 1, 0], gallery_ids=[0, 1])
    0.75
    """
    owner = "baks"
    q, known = _known(query_ids, gallery_ids, owner)
    pred = _per_query(predicted_ids, "predicted_ids", q.size, owner, dtype="int")
    if (scores is None) != (threshold is None):
        raise ValueError(f"{owner}: pass both 'scores' and 'threshold' or neither.")
    if not known.any():
        raise ValueError(
            f"{owner}: no query identity appears in 'gallery_ids', so BAKS is undefined."
        )
    correct = pred == q
    if threshold is not None:
        s = _per_query(scores, "scores", q.size, owner, dtype="float")
        correct &= s >= _check_threshold(threshold, owner)
    return _balanced(q[known], correct[known])


def baus(query_ids, scores, gallery_ids, *, threshold) -> float:
    """Balanced accuracy on unknown samples: "unknown" means top-1 score < threshold.

    Parameters
    ----------
    query_ids : (n_query,) int array
        True identities of the queries; those absent from ``gallery_ids``
        (and -1) are the unknown ones.
    scores : (n_query,) float array
        Top-1 similarity of each query.
    gallery_ids : (n_gallery,) int array
        Identities of the gallery items (>= 0).
    threshold : float
        Decision threshold (see :func:`choose_threshold`).

    Examples
    --------
    >>> # unknown identity 5: 1 of 2 called unknown; identity 6: 1 of 1
    >>> baus([5, 5, 6, 0], [0.2, 0.9, 0.1, 0.3], gallery_ids=[0], threshold=0.5)
    0.75
    """
    owner = "baus"
    q, known = _known(query_ids, gallery_ids, owner)
    s = _per_query(scores, "scores", q.size, owner, dtype="float")
    threshold = _check_threshold(threshold, owner)
    if known.all():
        raise ValueError(
            f"{owner}: every query identity appears in 'gallery_ids' (no unknown query), "
            "so BAUS is undefined."
        )
    return _balanced(q[~known], s[~known] < threshold)


def auc_roc(query_ids, scores, gallery_ids) -> float:
    """Area under the ROC curve of known (positive) vs unknown queries by top-1 score.

    The probability that a random known query scores above a random unknown
    one, ties counting one half (Mann-Whitney U with average ranks), which is
    what ``sklearn.metrics.roc_auc_score`` computes.

    Examples
    --------
    >>> auc_roc([0, 1, 8, 9], [0.9, 0.4, 0.5, 0.1], gallery_ids=[0, 1])
    0.75
    """
    owner = "auc_roc"
    q, known = _known(query_ids, gallery_ids, owner)
    s = _per_query(scores, "scores", q.size, owner, dtype="float")
    n_pos = int(known.sum())
    n_neg = q.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"{owner}: AUC-ROC needs both known and unknown queries; got {n_pos} known and "
            f"{n_neg} unknown."
        )
    ranks = rankdata(s)  # average ranks for ties
    u = float(ranks[known].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def choose_threshold(query_ids, predicted_ids, scores, gallery_ids) -> float:
    """Threshold that maximises (BAKS + BAUS) / 2 on a validation split.

    BAKS here counts a known query as right only if its top-1 identity is
    right *and* its score is >= the threshold (otherwise a higher threshold
    would always win). The objective only changes at the validation scores:
    the best interval (s_low, s_high] of equal decisions is found in
    O(n log n), and its midpoint is returned (the lowest such interval if
    several tie). If accepting every query is best, the lowest score is
    returned; if rejecting every query is best, the next float above the
    highest score.

    Parameters
    ----------
    query_ids, predicted_ids, scores, gallery_ids
        As for :func:`baks` / :func:`baus`, on a validation split with both
        known and unknown queries (for example training identities held out
        beside the protocol's own, and training images that are not
        exemplars).

    Examples
    --------
    >>> # known queries score 0.9 and 0.75 (both right), unknown ones 0.25 and 0.5
    >>> choose_threshold([0, 1, 7, 8], [0, 1, 0, 1], [0.9, 0.75, 0.25, 0.5], [0, 1])
    0.625
    """
    owner = "choose_threshold"
    q, known = _known(query_ids, gallery_ids, owner)
    pred = _per_query(predicted_ids, "predicted_ids", q.size, owner, dtype="int")
    s = _per_query(scores, "scores", q.size, owner, dtype="float").astype(np.float64)
    if known.all() or not known.any():
        raise ValueError(
            f"{owner}: the validation queries must hold both known and unknown identities; got "
            f"{int(known.sum())} known and {int((~known).sum())} unknown."
        )
    w = np.zeros(q.size)
    for mask in (known, ~known):
        ids = np.where(q[mask] < 0, -2 - np.arange(int(mask.sum())), q[mask])
        _, inv, counts = np.unique(ids, return_inverse=True, return_counts=True)
        w[mask] = 1.0 / (counts[inv] * counts.size)
    values, inv = np.unique(s, return_inverse=True)
    m = values.size
    right_known = np.bincount(inv, weights=np.where(known & (pred == q), w, 0.0), minlength=m)
    unknown_w = np.bincount(inv, weights=np.where(~known, w, 0.0), minlength=m)
    # candidate j = 0..m: threshold in (values[j-1], values[j]]; j = m: above every score
    below_right = np.concatenate([[0.0], np.cumsum(right_known)])  # known right, rejected
    below_unknown = np.concatenate([[0.0], np.cumsum(unknown_w)])  # unknown, rejected
    objective = (right_known.sum() - below_right + below_unknown) / 2.0
    j = int(np.argmax(objective))
    if j == 0:
        return float(values[0])
    if j == m:
        return float(np.nextafter(values[-1], np.inf))
    return float((values[j - 1] + values[j]) / 2.0)


# ---- everything at once -------------------------------------------------------


@dataclass(frozen=True, eq=False)
class OpenSetScores:
    """Open-set metrics of one evaluation; a metric that is undefined for the
    queries given (no known, or no unknown, query) is NaN, and ``baus`` is
    None without a threshold."""

    baks: float
    baus: float | None
    auc_roc: float
    threshold: float | None
    n_known: int
    n_unknown: int
    top1: Top1


def evaluate(
    query, gallery, query_ids, gallery_ids, *, threshold=None, metric="cosine", block_size=None
) -> OpenSetScores:
    """BAKS (closed-set), BAUS (at ``threshold``) and AUC-ROC from one top-1 search.

    Parameters
    ----------
    query, gallery, metric, block_size
        As :func:`top1`.
    query_ids, gallery_ids : 1-D int arrays
        Identities (gallery >= 0; query -1 means unknown).
    threshold : float, optional
        For BAUS; with ``metric="cosine"`` it must lie in [-1, 1].

    Examples
    --------
    >>> G = np.eye(2, dtype=np.float32)                     # exemplars of identities 0, 1
    >>> Q = np.array([[1, 0.1], [0.2, 1], [0.6, 0.5]], dtype=np.float32)
    >>> r = evaluate(Q, G, [0, 1, 9], [0, 1], threshold=0.9)
    >>> r.baks, r.baus, r.auc_roc, r.n_known, r.n_unknown
    (1.0, 1.0, 1.0, 2, 1)
    """
    owner = "evaluate"
    src = _open_set_source(query, gallery, metric, owner)
    if threshold is not None:
        threshold = _check_threshold(threshold, owner, metric)
    q = as_ids(query_ids, "query_ids", n=src.n_query, owner=owner)
    g = as_ids(gallery_ids, "gallery_ids", n=src.n_gallery, owner=owner, allow_negative=False)
    t1 = _top1(src, block_size)
    known = (q >= 0) & np.isin(q, g)
    n_known = int(known.sum())
    n_unknown = q.size - n_known
    nan = float("nan")
    baus_value = None
    if threshold is not None:
        baus_value = baus(q, t1.score, g, threshold=threshold) if n_unknown else nan
    return OpenSetScores(
        baks=baks(q, g[t1.index], g) if n_known else nan,
        baus=baus_value,
        auc_roc=auc_roc(q, t1.score, g) if n_known and n_unknown else nan,
        threshold=threshold,
        n_known=n_known,
        n_unknown=n_unknown,
        top1=t1,
    )
