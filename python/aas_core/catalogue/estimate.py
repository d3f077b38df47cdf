"""How much is left: identities probably still split in two, from the answers so far.

The recent answers say how often a pair that the catalogue kept apart, at a
given cosine similarity, was the same individual: the latest quarter of the
same/different answers (at least 50), those whose two images were in
different identities before that quarter was given, fit P(same | similarity)
by isotonic regression (it never falls as the similarity rises;
pool-adjacent-violators). Recent answers, because every "same" found lowers
the rate among the pairs still apart. The curve is applied to every pair of
current identities that the kNN graph joins and no answer has shown to
differ, at the similarity of their most similar images, and summed over a
greedy one-to-one matching of identities (most likely pairs first), since
an identity split in two has one missing partner, not one per neighbour.
Resampling the window's answers (bootstrap) gives a 10-90% range; when even
its upper end is below one identity, more answers are unlikely to change
the catalogue.

What it assumes: the recent pairs were chosen among the ambiguous ones, as
the samplers do. On ``make_reid_blobs(2000)`` with a perfect oracle and AAS
at 0.05% per cycle, the estimate after cycles 1-6 was 41, 24, 16, 21, 2, 0
identities still split against the true 100, 23, 1, 0, 0, 0; with NIS 215,
122, 74, 44, 26, 13 against 275, 157, 94, 55, 24, 20. Uniformly random pairs
are almost never the same individual, so after random questions the
estimate says little (it reported 0 with 195 left): ask the samplers' pairs.
It counts only what the answers can still find: identities the kNN graph
joins. With an embedding that puts one animal's photos far apart, the
misses lie elsewhere: on 740 lion crops with ImageNet EfficientNet-Lite0
features (94 lions, 208 identities after 160 answers, 4 of them "same"),
it reported about 3, while more than 100 identities are split; a better
embedding (``aas train``) is what helps there, not more answers.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MIN_ANSWERS", "estimate_missed", "isotonic_rate"]

MIN_ANSWERS = 20  # same + different, before an estimate is given


def isotonic_rate(x, y, w=None):
    """The non-decreasing step function of x closest to y (weighted least squares).

    Returns (knots, values): the sorted distinct x and the fitted value at each;
    between knots the value is that of the knot at or below (flat beyond both ends).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    w = np.ones_like(y) if w is None else np.asarray(w, np.float64)
    order = np.argsort(x, kind="stable")
    x, y, w = x[order], y[order], w[order]
    knots, first = np.unique(x, return_index=True)
    sums = np.add.reduceat(y * w, first)
    weights = np.add.reduceat(w, first)
    # pool adjacent violators over the distinct x values
    val, wt, size = [], [], []
    for s, ww in zip(sums / weights, weights):
        val.append(s)
        wt.append(ww)
        size.append(1)
        while len(val) > 1 and val[-2] > val[-1]:
            w2 = wt[-2] + wt[-1]
            v2 = (val[-2] * wt[-2] + val[-1] * wt[-1]) / w2
            s2 = size[-2] + size[-1]
            del val[-1], wt[-1], size[-1]
            val[-1], wt[-1], size[-1] = v2, w2, s2
    return knots, np.repeat(val, size)


def _apply(knots, values, x):
    pos = np.searchsorted(knots, x, side="right") - 1
    return values[np.clip(pos, 0, len(values) - 1)]


def _candidates(numbers, graph, cannot):
    """Identity pairs joined by a kNN edge, not shown to differ: (a, b, best sim) arrays."""
    n, k = graph.indices.shape
    src = np.repeat(np.arange(n), k)
    dst = graph.indices.reshape(-1)
    sim = graph.sims.reshape(-1).astype(np.float64)
    a, b = numbers[src], numbers[dst]
    keep = (a != b) & (dst >= 0)
    a, b, sim = np.minimum(a, b)[keep], np.maximum(a, b)[keep], sim[keep]
    if len(a) == 0:
        return a, b, sim
    key = a * (int(numbers.max()) + 1) + b
    order = np.lexsort((-sim, key))
    first = np.r_[True, np.diff(key[order]) != 0]
    a, b, sim = a[order][first], b[order][first], sim[order][first]
    if len(cannot):
        ca, cb = numbers[cannot[:, 0]], numbers[cannot[:, 1]]
        known = set(zip(np.minimum(ca, cb).tolist(), np.maximum(ca, cb).tolist()))
        ok = np.array([(p, q) not in known for p, q in zip(a.tolist(), b.tolist())], bool)
        a, b, sim = a[ok], b[ok], sim[ok]
    return a, b, sim


def _matched_sum(a, b, p) -> float:
    """Sum of p over a greedy one-to-one matching of identities, most likely first."""
    used, total = set(), 0.0
    for t in np.argsort(-p, kind="stable").tolist():
        if a[t] in used or b[t] in used:
            continue
        used.add(a[t])
        used.add(b[t])
        total += float(p[t])
    return total


def estimate_missed(catalogue, clusters, constraints, *, n_boot=200, seed=0) -> dict:
    """Expected identities still split in two, with a 10-90% range (see the module doc).

    Parameters
    ----------
    catalogue : Catalogue (``numbers``: the identity of each image; its
        clustering and merge rule are used to see the state before the
        recent answers)
    clusters : ClusterState of the same images (its kNN graph and unit features)
    constraints : PairConstraints, the same/different answers in the order given
    n_boot : int, bootstrap resamples for the range
    seed : int

    Returns
    -------
    dict with ``estimate``, ``low``, ``high`` (identities), ``candidates``
    (identity pairs considered), ``answers``, ``recent`` (answers that fit
    the rate), ``settled`` (``high < 1``) and ``message`` (one line). With
    fewer than MIN_ANSWERS same/different answers ``estimate`` is None and
    the message says so.
    """
    from ..constraints import PairConstraints
    from .identities import refined_partition

    numbers = np.asarray(catalogue.numbers, np.int64)
    pairs, same = constraints.pairs, constraints.is_must_link
    m = len(pairs)
    base = {"answers": int(m), "candidates": 0, "recent": 0, "settled": False}
    if m < MIN_ANSWERS or clusters.graph is None:
        return {
            **base,
            "estimate": None,
            "low": None,
            "high": None,
            "message": f"too few answers to estimate what is left ({m} same/different; "
            f"{MIN_ANSWERS} needed)",
        }
    w = min(m, max(50, m // 4))
    earlier = PairConstraints(n=len(numbers))
    if m > w:
        earlier.add(pairs[: m - w], same[: m - w])
    before = refined_partition(
        clusters, earlier, clustering=catalogue.clustering, merge=catalogue.merge_rule
    )
    win = np.arange(m - w, m)
    win = win[before[pairs[win, 0]] != before[pairs[win, 1]]]
    X = clusters.X
    sims = np.einsum("ij,ij->i", X[pairs[win, 0]], X[pairs[win, 1]]).astype(np.float64)
    y = same[win].astype(np.float64)
    a, b, cand = _candidates(numbers, clusters.graph, pairs[~same])
    if len(win) == 0 or len(cand) == 0:
        est = low = high = 0.0
    else:
        knots, values = isotonic_rate(sims, y)
        est = _matched_sum(a, b, _apply(knots, values, cand))
        rng = np.random.default_rng(seed)
        boots = []
        for _ in range(int(n_boot)):
            pick = rng.integers(0, len(win), len(win))
            kb, vb = isotonic_rate(sims[pick], y[pick])
            boots.append(_matched_sum(a, b, _apply(kb, vb, cand)))
        low, high = (float(v) for v in np.percentile(boots, [10, 90]))
    settled = bool(high < 1.0)
    if settled:
        msg = (
            f"about {est:.1f} neighbouring identities may still be one individual (10-90%: "
            f"{low:.1f}-{high:.1f}); more answers are unlikely to change the catalogue"
        )
    else:
        msg = (
            f"about {est:.0f} pairs of neighbouring identities are probably one individual "
            f"(10-90%: {low:.0f}-{high:.0f})"
        )
    return {
        **base,
        "candidates": int(len(cand)),
        "recent": int(len(win)),
        "estimate": float(est),
        "low": float(low),
        "high": float(high),
        "settled": settled,
        "message": msg,
    }
