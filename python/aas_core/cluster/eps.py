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

A given number always wins over "auto".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["AUTO_MAX_DISTANCE", "CORE_SHARE", "EPS_RANGE", "EpsChoice", "data_eps", "fit_eps"]

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
    source : {"given", "data", "answers"}
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
