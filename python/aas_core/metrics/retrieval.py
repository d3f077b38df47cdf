"""Closed-set retrieval metrics: mAP, mINP and CMC top-k.

Every query ranks the whole gallery by score (cosine similarity of the
features by default). From that ranking:

- **AP** (non-interpolated average precision) of a query with m true matches
  at ranks r_1 < ... < r_m is (1/m) Σ_t t / r_t, the mean of the precision
  at each true match; it equals ``sklearn.metrics.average_precision_score``
  on the query's scores, ties included (see *Ties*). **mAP** is the mean
  over queries.
- **INP** (inverse negative penalty, Ye et al., TPAMI 2021) of a query is
  m / r_m: the share of the ranking up to its hardest (last) true match that
  is correct. **mINP** is the mean over queries.
- **CMC top-k** is the share of queries whose first true match is at rank
  <= k.

Rules, as in fast-reid / torchreid (Market-1501 protocol):

- *Junk.* With camera ids, gallery items of the query's identity taken by the
  query's camera are removed from that query's ranking (they are neither
  matches nor errors). With ``exclude_self=True`` (query and gallery are the
  same set, in the same order) gallery item i is removed from the ranking of
  query i.
- *Queries without a true match* in the gallery (after removals) are
  excluded from every mean and counted (``RetrievalScores.n_without_match``);
  if no query has a match the metrics are undefined and a ValueError is
  raised. An identity of -1 means "unknown": it never matches anything, so a
  query labelled -1 has no match and gallery items labelled -1 are
  distractors.
- *Ties.* AP treats a run of equal scores as one threshold, as sklearn's
  ``average_precision_score`` does: a true match scored v counts the
  precision (true matches scored >= v) / (items scored >= v), so AP does not
  depend on the order of tied items (without ties this is t / r_t). Ranks
  (CMC, INP, ``first_rank``) order equal scores by gallery index (the earlier
  gallery item ranks first), as a stable sort by descending score would.
  Both are deterministic and do not depend on blocking or threads;
  fast-reid's quicksort order is arbitrary there.

Scores come block by block (``block_size`` query rows at a time), so 20k x
20k needs about 0.1 GB beyond the inputs; ranks come from one sort of each
block's rows plus a binary search for every true match (no Python loop over
queries). Inputs are never modified.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._scores import ScoreSource, as_ids, check_ks

__all__ = ["RetrievalScores", "cmc", "evaluate", "mean_ap", "mean_inp"]

_DEFAULT_KS = (1, 3, 5, 10)


@dataclass(frozen=True, eq=False)
class RetrievalScores:
    """All retrieval metrics of one query x gallery evaluation.

    Attributes
    ----------
    mean_ap, mean_inp : float
        Means of ``ap`` and ``inp`` over the queries with a true match.
    cmc : dict[int, float]
        Top-k accuracy for each requested k (queries with a true match only).
    ap, inp : (n_query,) float64
        Per-query AP and INP; NaN for a query without a true match.
    first_rank : (n_query,) int64
        1-based rank of each query's first true match; -1 without one.
    n_matches : (n_query,) int64
        True matches of each query in the gallery (after removals).
    n_queries, n_without_match : int
        Queries given, and queries excluded for lack of a true match.
    """

    mean_ap: float
    mean_inp: float
    cmc: dict
    ap: np.ndarray
    inp: np.ndarray
    first_rank: np.ndarray
    n_matches: np.ndarray
    n_queries: int
    n_without_match: int


def evaluate(
    query,
    gallery,
    query_ids,
    gallery_ids,
    *,
    query_cameras=None,
    gallery_cameras=None,
    exclude_self: bool = False,
    metric: str = "cosine",
    ks=_DEFAULT_KS,
    block_size: int | None = None,
) -> RetrievalScores:
    """mAP, mINP and CMC top-k in one pass over the query x gallery scores.

    Parameters
    ----------
    query : (n_query, d) float array, or (n_query, n_gallery) matrix
        Query features; with ``metric="similarity"`` or ``"distance"`` the
        precomputed score matrix instead (float32 or float64, used as is).
    gallery : (n_gallery, d) float array or None
        Gallery features; must be None with a precomputed matrix.
    query_ids, gallery_ids : 1-D int arrays
        Identities; -1 is unknown and never matches.
    query_cameras, gallery_cameras : 1-D int arrays, optional
        Camera ids, both or neither. Gallery items of the query's identity
        and camera are removed from its ranking.
    exclude_self : bool
        Query and gallery are the same set in the same order (n_query ==
        n_gallery); gallery item i is removed from the ranking of query i.
    metric : {"cosine", "euclidean", "similarity", "distance"}
        "cosine" L2-normalises the features (a copy) and ranks by dot
        product; "euclidean" ranks by squared distance, ascending;
        "similarity" / "distance" take a precomputed matrix, ranked
        descending / ascending.
    ks : int or sequence of int
        The top-k values of the CMC curve (each >= 1).
    block_size : int, optional
        Query rows scored at a time (default: about 4M scores per block).

    Returns
    -------
    RetrievalScores

    Examples
    --------
    >>> S = np.array([[0.9, 0.8, 0.1],     # query 0 (id 0): matches at ranks 1 and 3
    ...               [0.2, 0.7, 0.3]])    # query 1 (id 1): its match at rank 1
    >>> r = evaluate(S, None, [0, 1], [0, 1, 0], metric="similarity", ks=(1, 2))
    >>> float(r.mean_ap), r.ap.tolist(), r.cmc
    (0.9166666666666666, [0.8333333333333333, 1.0], {1: 1.0, 2: 1.0})
    >>> r.inp.tolist()
    [0.6666666666666666, 1.0]
    """
    return _evaluate(
        query,
        gallery,
        query_ids,
        gallery_ids,
        query_cameras=query_cameras,
        gallery_cameras=gallery_cameras,
        exclude_self=exclude_self,
        metric=metric,
        ks=ks,
        block_size=block_size,
        owner="evaluate",
    )


def _evaluate(
    query,
    gallery,
    query_ids,
    gallery_ids,
    *,
    query_cameras=None,
    gallery_cameras=None,
    exclude_self=False,
    metric="cosine",
    ks=_DEFAULT_KS,
    block_size=None,
    owner,
) -> RetrievalScores:
    src = ScoreSource(query, gallery, metric=metric, owner=owner)
    nq, ng = src.n_query, src.n_gallery
    q_ids = as_ids(query_ids, "query_ids", n=nq, owner=owner)
    g_ids = as_ids(gallery_ids, "gallery_ids", n=ng, owner=owner)
    if (query_cameras is None) != (gallery_cameras is None):
        raise ValueError(
            f"{owner}: pass both 'query_cameras' and 'gallery_cameras' or neither; got only "
            f"{'query_cameras' if gallery_cameras is None else 'gallery_cameras'}."
        )
    q_cams = g_cams = None
    if query_cameras is not None:
        q_cams = as_ids(query_cameras, "query_cameras", n=nq, owner=owner)
        g_cams = as_ids(gallery_cameras, "gallery_cameras", n=ng, owner=owner)
    if not isinstance(exclude_self, (bool, np.bool_)):
        raise TypeError(
            f"The 'exclude_self' parameter of {owner} must be a bool; got {exclude_self!r}."
        )
    if exclude_self and nq != ng:
        raise ValueError(
            f"{owner}: exclude_self=True needs the query set to be the gallery (same size and "
            f"order); got {nq} queries and {ng} gallery items."
        )
    ks = check_ks(ks, owner)
    rows_per_block = src.block_rows(block_size)

    ap = np.full(nq, np.nan)
    inp = np.full(nq, np.nan)
    first = np.full(nq, -1, dtype=np.int64)
    n_matches = np.zeros(nq, dtype=np.int64)
    matcher = _Matcher(q_ids, g_ids, q_cams, g_cams, exclude_self)
    for a in range(0, nq, rows_per_block):
        b = min(nq, a + rows_per_block)
        rows, ranks, at_or_above = matcher.ranks(src.block(a, b), a)
        _summarise(rows, ranks, at_or_above, b - a, ap[a:b], inp[a:b], first[a:b], n_matches[a:b])

    valid = n_matches > 0
    n_valid = int(valid.sum())
    if n_valid == 0:
        raise ValueError(
            f"{owner}: no query has a true match in the gallery (after removing same-camera "
            "and self matches), so mAP, mINP and CMC are undefined. Check that query_ids and "
            "gallery_ids use the same identity codes."
        )
    fr = first[valid]
    return RetrievalScores(
        mean_ap=float(np.mean(ap[valid])),
        mean_inp=float(np.mean(inp[valid])),
        cmc={k: float(np.count_nonzero(fr <= k) / n_valid) for k in ks},
        ap=ap,
        inp=inp,
        first_rank=first,
        n_matches=n_matches,
        n_queries=nq,
        n_without_match=nq - n_valid,
    )


def mean_ap(
    query,
    gallery,
    query_ids,
    gallery_ids,
    *,
    query_cameras=None,
    gallery_cameras=None,
    exclude_self: bool = False,
    metric: str = "cosine",
    block_size: int | None = None,
) -> float:
    """Mean average precision (non-interpolated); arguments as :func:`evaluate`.

    Queries without a true match are excluded (``evaluate`` counts them).

    Examples
    --------
    >>> X = np.eye(3, dtype=np.float32)
    >>> mean_ap(X, X, [0, 1, 2], [0, 1, 2])
    1.0
    """
    return _evaluate(
        query,
        gallery,
        query_ids,
        gallery_ids,
        query_cameras=query_cameras,
        gallery_cameras=gallery_cameras,
        exclude_self=exclude_self,
        metric=metric,
        block_size=block_size,
        owner="mean_ap",
    ).mean_ap


def mean_inp(
    query,
    gallery,
    query_ids,
    gallery_ids,
    *,
    query_cameras=None,
    gallery_cameras=None,
    exclude_self: bool = False,
    metric: str = "cosine",
    block_size: int | None = None,
) -> float:
    """Mean inverse negative penalty (m / rank of the last true match); as :func:`evaluate`.

    Examples
    --------
    >>> S = np.array([[0.9, 0.8, 0.1, 0.5]])   # ranking: items 0, 1, 3, 2
    >>> mean_inp(S, None, [0], [0, 0, 1, 0], metric="similarity")  # matches at ranks 1, 2, 3
    1.0
    >>> mean_inp(S, None, [0], [0, 1, 1, 0], metric="similarity")  # matches at ranks 1, 3
    0.6666666666666666
    """
    return _evaluate(
        query,
        gallery,
        query_ids,
        gallery_ids,
        query_cameras=query_cameras,
        gallery_cameras=gallery_cameras,
        exclude_self=exclude_self,
        metric=metric,
        block_size=block_size,
        owner="mean_inp",
    ).mean_inp


def cmc(
    query,
    gallery,
    query_ids,
    gallery_ids,
    *,
    ks=_DEFAULT_KS,
    query_cameras=None,
    gallery_cameras=None,
    exclude_self: bool = False,
    metric: str = "cosine",
    block_size: int | None = None,
) -> dict:
    """CMC top-k accuracy ``{k: share of queries with a true match at rank <= k}``.

    Arguments as :func:`evaluate`.

    Examples
    --------
    >>> S = np.array([[0.9, 0.8, 0.1], [0.2, 0.7, 0.3]])
    >>> cmc(S, None, [1, 1], [0, 1, 1], metric="similarity", ks=(1, 2))
    {1: 0.5, 2: 1.0}
    """
    return _evaluate(
        query,
        gallery,
        query_ids,
        gallery_ids,
        query_cameras=query_cameras,
        gallery_cameras=gallery_cameras,
        exclude_self=exclude_self,
        metric=metric,
        ks=ks,
        block_size=block_size,
        owner="cmc",
    ).cmc


# ---- the ranking kernel -------------------------------------------------------


class _Matcher:
    """Finds each query's true matches through the gallery grouped by identity.

    No (block x n_gallery) comparison of identities is ever formed: the
    gallery is sorted by identity once, and a query's matches are the run of
    its identity in that order.
    """

    def __init__(self, q_ids, g_ids, q_cams, g_cams, exclude_self):
        self.g_order = np.argsort(g_ids, kind="stable")
        g_sorted = g_ids[self.g_order]
        self.start = np.searchsorted(g_sorted, q_ids, side="left")
        count = np.searchsorted(g_sorted, q_ids, side="right") - self.start
        count[q_ids < 0] = 0  # -1 is "unknown": it matches nothing
        self.count = count
        self.q_cams, self.g_cams = q_cams, g_cams
        self.exclude_self = exclude_self

    def ranks(self, S, a):
        """Sorted (row, rank, at_or_above) of every true match of queries a:a+len(S); modifies S."""
        b, ng = S.shape
        cnt = self.count[a : a + b]
        rows = np.repeat(np.arange(b), cnt)
        offsets = np.arange(rows.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        cols = self.g_order[np.repeat(self.start[a : a + b], cnt) + offsets]
        if self.exclude_self:
            S[np.arange(b), np.arange(a, a + b)] = -np.inf
        drop = None
        if self.q_cams is not None:
            drop = self.g_cams[cols] == self.q_cams[a + rows]
        if self.exclude_self:
            own = cols == a + rows
            drop = own if drop is None else drop | own
        if drop is not None:
            # removed items sort after every kept (finite) one, so they are
            # never ahead of a true match
            S[rows[drop], cols[drop]] = -np.inf
            keep = ~drop
            rows, cols = rows[keep], cols[keep]
        return match_ranks(S, rows, cols)


def match_ranks(S, rows, cols):
    """1-based ranks of the items (rows[i], cols[i]) in their rows of S.

    S (b, n) holds scores, higher is better; an item's rank counts the items
    of its row with a larger score, or an equal score and a smaller column,
    plus one. ``rows`` must be non-decreasing. Returns ``(rows, ranks,
    at_or_above)`` sorted by row and then rank, where ``at_or_above`` counts
    the items of the row scored >= the item (its rank when it is tied with
    nothing).
    """
    b, ng = S.shape
    if rows.size == 0:
        return rows, rows.copy(), rows.copy()
    vals = S[rows, cols]
    # One sort per row, then a binary search per item (all items at once)
    # for how many scores of its row are <= its own: the rest are ahead.
    srt = np.sort(S, axis=1).ravel()
    base = rows * ng
    lo = _count_sorted(srt, base, vals, ng, np.less_equal)
    ahead = ng - lo
    at_or_above = ahead + 1
    # An item tied with another score of its row (the sorted neighbour below
    # it is equal): order the tie by column, exactly, with a stable sort, and
    # count the whole tied run as at or above it.
    tied = np.flatnonzero((lo >= 2) & (srt[base + np.maximum(lo - 2, 0)] == vals))
    if tied.size:
        ahead[tied] = _exact_positions(S, rows[tied], cols[tied])
        at_or_above[tied] = ng - _count_sorted(srt, base[tied], vals[tied], ng, np.less)
    key = rows * (ng + 1) + ahead + 1
    order = np.argsort(key, kind="stable")
    key = key[order]
    return key // (ng + 1), key % (ng + 1), at_or_above[order]


def _count_sorted(srt, base, vals, ng, below):
    """Per item, how many scores s of its sorted row (srt[base:base+ng]) have below(s, value).

    A batched binary search over all items at once; ``below`` is np.less_equal
    or np.less.
    """
    lo = np.zeros(vals.size, dtype=np.int64)
    hi = np.full(vals.size, ng, dtype=np.int64)
    for _ in range(int(ng).bit_length()):
        mid = (lo + hi) >> 1
        go_right = below(srt[base + np.minimum(mid, ng - 1)], vals)
        active = lo < hi
        lo = np.where(active & go_right, mid + 1, lo)
        hi = np.where(active & ~go_right, mid, hi)
    return lo


def _exact_positions(S, rows, cols):
    """0-based positions of (row, col) in a stable descending sort of each row."""
    t_rows = np.unique(rows)
    order = np.argsort(-S[t_rows], axis=1, kind="stable")
    pos = np.empty_like(order)
    pos[np.arange(len(t_rows))[:, None], order] = np.arange(S.shape[1])
    return pos[np.searchsorted(t_rows, rows), cols]


def _summarise(rows, ranks, at_or_above, b, ap, inp, first, n_matches):
    """Per-query AP, INP, first rank and match count from sorted (row, rank) matches."""
    counts = np.bincount(rows, minlength=b)
    n_matches[:] = counts
    if rows.size == 0:
        return
    starts = np.cumsum(counts) - counts
    hits = np.arange(rows.size) - np.repeat(starts, counts) + 1  # t for the t-th match
    # AP's precision at a match scored v: matches scored >= v over items scored >= v.
    # Matches tied with each other share at_or_above (which grows with the rank inside a
    # row), so the matches scored >= v end at the last entry of that run.
    level = rows * (int(at_or_above.max()) + 1) + at_or_above  # non-decreasing
    run_end = np.searchsorted(level, level, side="right") - 1
    sums = np.bincount(rows, weights=hits[run_end] / at_or_above, minlength=b)
    has = counts > 0
    ap[has] = sums[has] / counts[has]
    first[has] = ranks[starts[has]]
    inp[has] = counts[has] / ranks[starts[has] + counts[has] - 1]
