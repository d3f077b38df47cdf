"""DBSCAN's eps fitted to the data ("auto", the default), optionally to the answers.

A fixed eps (SpCL's 0.6) suits one kind of embedding: on generated data at
10k points 0.6 leaves a third of the true pairs apart (pairwise F1 0.66
against 0.81 at 0.7), and on embeddings that separate identities poorly it
merges everything into a few giant clusters.

**From the data** (``eps="auto"``). A point is a DBSCAN core point when its
(``min_samples`` - 1)-th nearest other point lies within eps. We take the eps
at which a share ``core_share`` (0.65) of the points are core points: the
0.65-quantile of every point's distance to its (``min_samples`` - 1)-th
nearest neighbour in the k-reciprocal Jaccard distance (absent = 1), clipped
to [0.2, 0.8]. On ``make_reid_blobs`` this lands within 0.03 of the best
eps at 2k, 4k and 10k points. ``min_samples`` stays 4 (SpCL's).

**From the answers** (``eps_from_answers=True``, off by default). Once at
least 5 "same" and 5 "different" answers exist, each eps of a grid (0.2 to
0.8, step 0.025) clusters the data and is scored by the share of answers its
clustering already agrees with -- a "same" pair in one cluster, a
"different" pair in two -- balanced between the two kinds; the best wins,
among equal scores the one nearest the data's eps. With fewer answers of
either kind (say all "different", which more and more clusters would always
satisfy) the data's eps is kept and the choice says so.

Why it is off by default: the pairs a sampler asks about are not a sample of
all pairs. AAS and NIS ask where clusters may belong together, so their
answers hold more "same" than the data does, and fitting eps to them moves
it up (0.62 -> 0.675 on ``make_reid_blobs(4000)``), which costs precision
everywhere else: AAS's pairwise F1 after cycles 1-5 fell from
0.903/0.958/0.978/0.992/0.998 (data eps) to 0.874/0.930/0.959/0.987/0.993,
Random's to 0.24 (eps 0.775 from a handful of "same" answers), and scoring
the NP3-refined clustering on held-out answers (5-fold) chose the same
larger eps. NP3 uses every answer anyway; eps is best left to the data.

**From a calibration sample** (``calibrated_eps``; ``ActiveLoop(calibrate=C)``).
The answers a sampler asks for are biased, but answers to near pairs drawn
*uniformly* are not: C pairs drawn at random among the kNN edges (each image
with its k - 1 nearest) and answered give P(same | cosine) by an isotonic
(increasing) fit, 0 below the least similar "same" answer. With it, every
grid eps gets the pairwise F1 its DBSCAN clustering would have over all
pairs in expectation: the expected same pairs inside its clusters over every
pair inside them. (A first version scored the kNN edges only; a merge of two
animals adds few kNN edges but many pairs, so it looked cheap: with 200
answers, over the generator family at two data seeds and both development
sets, its worst regret was 0.570 and 19 of 32 sets were within 0.03; now
0.160 and 27 of 32; see ``benchmarks/README.md``, ``bench_defaults.py
--calibrate``.) The best replaces the data's eps when it promises at least
0.02 more. The answers show which similarities "same" pairs have, which the
data alone cannot: we tried a dozen data-only rules
(``benchmarks/eps_rules.py``) and none held on every member of the generator
suite (the best one's worst regret against the best fixed eps was 0.387, the
data's eps 0.605).

A given number always wins over "auto".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

__all__ = [
    "AUTO_MAX_DISTANCE",
    "CORE_SHARE",
    "EPS_RANGE",
    "EpsChoice",
    "calibrated_eps",
    "calibration_pairs",
    "data_eps",
    "fit_eps",
]

CORE_SHARE = 0.65
EPS_RANGE = (0.2, 0.8)
GRID_STEP = 0.025
MIN_ANSWERS = 5  # of each kind, before the answers choose eps
# The Jaccard graph must hold distances up to the largest eps tried, plus SpCL's gap.
AUTO_MAX_DISTANCE = 0.85


@dataclass(frozen=True)
class EpsChoice:
    """The eps a clustering used and why.

    Attributes
    ----------
    eps : float
    source : {"given", "data", "answers", "calibrated"}
    data_eps : float or None
        The data-fitted value (None when eps was given).
    agreement : float or None
        With ``source="answers"``: the balanced share of answers the chosen
        clustering agrees with (before NP3); at the data eps otherwise, when
        there are answers of both kinds.
    message : str
        One line for people.
    """

    eps: float
    source: str
    data_eps: float | None = None
    agreement: float | None = None
    message: str = ""

    def to_json(self) -> dict:
        return {
            "eps": round(self.eps, 4),
            "source": self.source,
            "data_eps": None if self.data_eps is None else round(self.data_eps, 4),
            "agreement": None if self.agreement is None else round(self.agreement, 4),
        }


def kth_neighbour_distance(D, k: int) -> np.ndarray:
    """Each row's k-th smallest stored distance to another point (1 where it has fewer).

    ``D`` is the sparse Jaccard distance (CSR, absent = 1; the diagonal is
    ignored). Vectorised: one sort of the stored entries by (row, distance).
    """
    D = D.tocsr() if hasattr(D, "tocsr") else D
    n = D.shape[0]
    out = np.ones(n, np.float64)
    if k < 1 or D.nnz == 0:
        return out if k >= 1 else np.zeros(n)
    rows = np.repeat(np.arange(n), np.diff(D.indptr))
    keep = D.indices != rows
    rows, vals = rows[keep], D.data[keep].astype(np.float64)
    order = np.lexsort((vals, rows))
    rows, vals = rows[order], vals[order]
    start = np.searchsorted(rows, np.arange(n))
    rank = np.arange(len(rows)) - start[rows]
    hit = rank == k - 1
    out[rows[hit]] = vals[hit]
    return out


def data_eps(D, *, min_samples: int = 4, core_share: float = CORE_SHARE) -> float:
    """The eps at which ``core_share`` of the points are DBSCAN core points, in [0.2, 0.8]."""
    n = D.shape[0]
    if n < 2 or min_samples <= 1:
        return float(np.clip(0.6, *EPS_RANGE))
    kd = kth_neighbour_distance(D, min(min_samples - 1, n - 1))
    return float(np.clip(np.quantile(kd, core_share), *EPS_RANGE))


def _agreement(labels, pairs, same) -> float:
    la, lb = labels[pairs[:, 0]], labels[pairs[:, 1]]
    together = (la == lb) & (la >= 0)
    return 0.5 * (together[same].mean() + (~together[~same]).mean())


def fit_eps(
    D,
    constraints=None,
    *,
    min_samples: int = 4,
    core_share: float = CORE_SHARE,
    n_threads=None,
) -> EpsChoice:
    """eps for DBSCAN on ``D``: the data's (see the module notes), re-chosen from the answers.

    Parameters
    ----------
    D : (n, n) scipy.sparse CSR, Jaccard distances up to at least 0.8 (absent = 1)
    constraints : PairConstraints or None
        The answers so far.
    min_samples : int >= 1
    core_share : float in (0, 1)
    n_threads : int or None

    Returns
    -------
    EpsChoice

    Examples
    --------
    >>> import aas_core as aas
    >>> X, y = aas.datasets.make_reid_blobs(600, d=64, seed=0)
    >>> D = aas.k_reciprocal_jaccard(X, k1=20, max_distance=0.85)
    >>> c = fit_eps(D)
    >>> c.source, 0.2 <= c.eps <= 0.8
    ('data', True)
    """
    from .dbscan import dbscan

    base = data_eps(D, min_samples=min_samples, core_share=core_share)
    if constraints is None or len(constraints) == 0:
        return EpsChoice(base, "data", base, None, f"eps {base:.3f} fitted to the data")
    pairs = np.asarray(constraints.pairs, np.int64)
    same = np.asarray(constraints.is_must_link, bool)
    n_same, n_diff = int(same.sum()), int((~same).sum())
    if n_same < MIN_ANSWERS or n_diff < MIN_ANSWERS:
        agreement = None
        if n_same and n_diff:
            agreement = float(_agreement(dbscan(D, eps=base, min_samples=min_samples), pairs, same))
        return EpsChoice(
            base,
            "data",
            base,
            agreement,
            f"eps {base:.3f} fitted to the data (the answers choose eps from {MIN_ANSWERS} "
            f"'same' and {MIN_ANSWERS} 'different' on; there are {n_same} and {n_diff})",
        )
    lo, hi = EPS_RANGE
    grid = np.round(np.arange(lo, hi + GRID_STEP / 2, GRID_STEP), 4)
    scores = np.array(
        [
            _agreement(
                dbscan(D, eps=float(e), min_samples=min_samples, n_threads=n_threads), pairs, same
            )
            for e in grid
        ]
    )
    best = scores.max()
    ties = grid[np.isclose(scores, best, rtol=0, atol=1e-12)]
    eps = float(ties[np.argmin(np.abs(ties - base))])
    return EpsChoice(
        eps,
        "answers",
        base,
        float(best),
        f"eps {eps:.3f} agrees best with the {len(pairs)} answers ({100 * best:.1f}% balanced; "
        f"the data alone gave {base:.3f})",
    )


# ---- eps from a calibration sample of near pairs ------------------------------------

CALIBRATION_GRID = (0.10, 0.84, 0.02)  # D holds distances up to AUTO_MAX_DISTANCE
CALIBRATION_GAIN = 0.02  # expected F1 a calibrated eps must add to replace the data's
# "same" answers a calibration needs: with fewer, P(same | cosine) has no shape. 3, not 5:
# on the generator family's rarest near "same" pairs (4% of the kNN edges) 200 answers
# held 3, and the data's eps they left in place was 0.57 pairwise F1 off the best
CALIBRATION_MIN_SAME = 3


def _knn_edges(graph, n):
    """Unique unordered pairs (i < j) of each image with its k - 1 nearest others."""
    nb = np.asarray(graph.indices)[:, 1:]
    rows = np.repeat(np.arange(n, dtype=np.int64), nb.shape[1])
    cols = nb.ravel().astype(np.int64)
    ok = (cols >= 0) & (cols != rows)
    lo, hi = np.minimum(rows[ok], cols[ok]), np.maximum(rows[ok], cols[ok])
    keys = np.unique(lo * n + hi)
    return np.stack([keys // n, keys % n], axis=1)


def calibration_pairs(graph, count: int, rng, constraints=None) -> np.ndarray:
    """``count`` pairs drawn uniformly among the kNN edges not yet answered, (m, 2) i < j.

    Uniform, so that their answers estimate P(same | distance) without the bias
    of a sampler's choice (see the module notes).
    """
    n = len(graph.indices)
    edges = _knn_edges(graph, n)
    if constraints is not None and len(constraints) and len(edges):
        edges = edges[~constraints.is_known(edges)]
    rng = np.random.default_rng(rng)
    pick = rng.choice(len(edges), size=min(int(count), len(edges)), replace=False)
    return edges[np.sort(pick)]


def _distances(D, pairs) -> np.ndarray:
    """D at ``pairs``; 1 where the pair is not stored (a stored 0 stays 0)."""
    D = D.tocsr() if hasattr(D, "tocsr") else D
    if not D.has_sorted_indices:  # row-major keys must be sorted; never sort the caller's D
        D = D.copy()
        D.sort_indices()
    n = D.shape[0]
    keys = np.repeat(np.arange(n, dtype=np.int64), np.diff(D.indptr)) * n + D.indices
    q = np.asarray(pairs, np.int64).reshape(-1, 2)
    q = q[:, 0] * n + q[:, 1]
    at = np.minimum(np.searchsorted(keys, q), max(len(keys) - 1, 0))
    hit = (keys[at] == q) if len(keys) else np.zeros(len(q), bool)
    return np.where(hit, D.data[at] if len(keys) else 1.0, 1.0).astype(np.float64)


def _decreasing_fit(x, y):
    """Isotonic (non-increasing) least-squares fit of y on x: (sorted unique x, fitted y)."""
    order = np.argsort(x, kind="stable")
    x, y = np.asarray(x, np.float64)[order], np.asarray(y, np.float64)[order]
    ux, start = np.unique(x, return_index=True)
    sums = np.add.reduceat(y, start)
    counts = np.diff(np.append(start, len(x))).astype(np.float64)
    # pool adjacent violators: blocks of (sum, count), merged while a mean rises
    bs, bc, bn = [], [], []
    for sm, ct in zip(sums, counts):
        bs.append(sm)
        bc.append(ct)
        bn.append(1)
        while len(bs) > 1 and bs[-2] / bc[-2] < bs[-1] / bc[-1]:
            sm2, ct2, n2 = bs.pop(), bc.pop(), bn.pop()
            bs[-1] += sm2
            bc[-1] += ct2
            bn[-1] += n2
    fitted = np.repeat(np.array(bs) / np.array(bc), bn)
    return ux, fitted


# near pairs (cos >= the least similar "same" answer) the estimate may hold: 12 bytes each
NEAR_PAIRS_LIMIT = 20_000_000


def _near_pairs(X, floor):
    """Every pair i < j of unit rows with cosine >= floor: (i, j) int32, cos float32 -- in
    row blocks of at most 2**24 similarities; None past NEAR_PAIRS_LIMIT pairs."""
    n = len(X)
    block = max(1, min(n, (1 << 24) // max(n, 1)))
    rows, cols, sims, count = [], [], [], 0
    for i0 in range(0, n, block):
        S = X[i0 : i0 + block] @ X[i0:].T  # columns from i0: the upper triangle and a bit
        r, c = np.nonzero(S >= floor)
        keep = c > r  # column c is row i0 + c: only j > i
        r, c = r[keep], c[keep]
        count += len(r)
        if count > NEAR_PAIRS_LIMIT:
            return None
        rows.append((i0 + r).astype(np.int32))
        cols.append((i0 + c).astype(np.int32))
        sims.append(S[r, c])
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(sims)


def calibrated_eps(
    D, graph, pairs, same, *, min_samples: int = 4, fallback=None, n_threads=None
) -> EpsChoice:
    """eps from answers to near pairs drawn uniformly (:func:`calibration_pairs`).

    P(same | cosine) is fitted to the answers (isotonic, increasing) and taken as
    0 below the least similar "same" answer. Each eps of the grid 0.10-0.84 (step
    0.02) is scored by the pairwise F1 its DBSCAN clustering has in expectation
    over *all* pairs: expected true pairs inside its clusters over the pairs
    inside them (every one, near or not, so that a merge of two animals costs
    what it costs) and the expected number of same pairs. The best replaces
    ``fallback`` (default: the data's eps) only when it promises at least
    ``CALIBRATION_GAIN`` (0.02) more; with fewer than 3 "same" answers (the
    answers cannot say where same pairs lie) ``fallback`` is kept too, and so it
    is when more than ``NEAR_PAIRS_LIMIT`` pairs are at least as similar as the
    least similar "same" answer (the message says so). Few or no "different"
    answers are fine: the identities are larger than the neighbourhoods.

    Parameters
    ----------
    D : (n, n) sparse Jaccard distances up to at least 0.84 (absent = 1)
    graph : the kNN graph D was computed from (its ``features``: the unit rows)
    pairs : (m, 2) int, the calibration pairs; same : (m,) bool, their answers
    min_samples : int, DBSCAN's
    fallback : EpsChoice or None

    Returns
    -------
    EpsChoice, source "calibrated" when the answers moved eps (else the fallback's)
    """
    from .dbscan import dbscan

    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    same = np.asarray(same, bool).ravel()
    if len(same) != len(pairs):
        raise ValueError(f"calibrated_eps: {len(pairs)} pairs but {len(same)} answers.")
    if fallback is None:
        fallback = fit_eps(D, min_samples=min_samples)
    n_same, n_diff = int(same.sum()), int((~same).sum())
    if n_same < CALIBRATION_MIN_SAME:
        return dataclasses.replace(
            fallback,
            message=f"{fallback.message} (a calibration needs {CALIBRATION_MIN_SAME} 'same' "
            f"answers; {n_same} of {len(same)} near pairs were the same animal)",
        )
    if graph.features is None:
        raise ValueError("calibrated_eps: 'graph' needs its features (knn_graph keeps them).")
    X = np.asarray(graph.features, np.float32)
    cos = np.einsum("ij,ij->i", X[pairs[:, 0]].astype(np.float64), X[pairs[:, 1]])
    ux, fitted = _decreasing_fit(-cos, same)  # decreasing in -cos: increasing in cos
    ux, fitted = -ux[::-1], fitted[::-1]
    floor = float(cos[same].min())
    answers = (
        f"{len(pairs)} answers to near pairs drawn at random ({n_same} same, {n_diff} different)"
    )
    near = _near_pairs(X, np.float32(floor))
    if near is None:
        return dataclasses.replace(
            fallback,
            message=f"{fallback.message}; the {answers} put same pairs as far apart as "
            f"cosine {floor:.3f}, where more than {NEAR_PAIRS_LIMIT:,} pairs lie: too many to "
            "weigh, so eps stays",
        )
    ni, nj, ncos = near
    p = np.interp(ncos.astype(np.float64), ux, fitted)
    total = p.sum()

    def expected_f1(eps):
        lab = dbscan(D, eps=float(eps), min_samples=min_samples, n_threads=n_threads)
        inside = (lab[ni] == lab[nj]) & (lab[ni] >= 0)
        sizes = np.bincount(lab[lab >= 0])
        n_inside = float((sizes * (sizes - 1) // 2).sum())
        return 2 * p[inside].sum() / (n_inside + total) if n_inside + total else 0.0

    lo, hi, step = CALIBRATION_GRID
    grid = np.round(np.arange(lo, hi + step / 2, step), 4)
    scores = np.array([expected_f1(e) for e in grid])
    best = int(np.argmax(scores))  # ties: the smallest eps
    eps, score = float(grid[best]), float(scores[best])
    before = float(expected_f1(fallback.eps))
    if score - before < CALIBRATION_GAIN:
        return dataclasses.replace(
            fallback,
            message=f"{fallback.message}; the {answers} agree with it (expected pairwise F1 "
            f"{before:.3f}, at best {score:.3f} with eps {eps:.2f})",
        )
    return EpsChoice(
        eps,
        "calibrated",
        fallback.data_eps,
        None,
        f"eps {eps:.2f} from {answers}: expected pairwise F1 {score:.3f}, "
        f"{before:.3f} with eps {fallback.eps:.3f}",
    )
