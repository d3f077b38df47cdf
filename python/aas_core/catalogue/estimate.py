"""Where a catalogue stands: what is still wrong in both directions, and whether the
embedding separates the animals at all.

Both figures rest on *check questions*, which the catalogue asks among the
others (:mod:`aas_core.catalogue.questions`) because answers to questions a
sampler chose say little about the rest: a sampler asks where it expects
"same", so its answers overrate how often unasked pairs are the same animal.

- **Photos wrongly grouped** (precision): a check of kind ``audit-member``
  asks a photo drawn uniformly from the photos that only the clustering puts
  in their identity (not joined to it by answers) against the identity's
  reference photo. The share of "different" among the recent checks, times
  the number of such photos now, estimates how many photos sit with another
  animal; the range is the 95% interval of its Beta posterior (Jeffreys
  prior).
- **Merges still missing** (recall): the number of identities that show an
  animal another identity also shows (identities minus the animals they
  show). Identity ``a`` has, over all other identities ``b``, an expected
  number of same-animal partners ``lambda_a = sum_b P(same | s_ab)``, with
  ``s_ab`` the cosine similarity of their reference photos; an animal split
  into c identities gives each of them ``lambda = c - 1``, so
  ``sum_a lambda_a / (1 + lambda_a)`` counts ``c - 1`` per animal: the
  merges missing. ``P(same | s)`` is a logistic curve above a floor (the
  share of same-animal pairs however dissimilar: where the embedding does
  not separate the animals, that floor is most of them) fitted to checks of
  kind ``audit-calibration``: reference-photo pairs of two identities drawn
  by similarity stratum (the strata cover every pair, each drawn in
  proportion to the same-animal pairs it may hold), so that given the
  similarity the pair is a random one. The range comes from the curve's
  posterior (a grid over its three parameters; weak priors) and the spread
  of the count itself (95%: from 2.5% to 97.5%).

On the lion and dog-face development sets with a correct person, 1,000
answers and checkpoints every 100, both ranges held the truth at 80-100% of
checkpoints in our simulation (``benchmarks/bench_catalogue.py`` measures it
over HTTP); with too few checks a figure is "not known yet", never a guess.
"Unlikely to change" is said only when both upper ends are below one.

The embedding does not separate the animals when nearest-neighbour pairs
are rarely the same animal, or when most photos the clustering groups are
another animal: then more answers verify photos one at a time but cannot
find most identities, and the status says what helps instead.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, log_expit
from scipy.stats import beta

__all__ = [
    "MIN_CHECKS",
    "calibration_rows",
    "embedding_tag",
    "estimate_status",
    "missing_merges",
    "separation",
    "separation_of",
    "wrongly_grouped",
]

# The ranges given: 95%. The answers make the catalogue change as checks come, so the
# checks are never quite a sample of it as it is now; a 90% range held the truth at 70-100%
# of the benchmark's checkpoints from one run to the next.
_LOW, _HIGH = 2.5, 97.5
MIN_CHECKS = 5  # answered member checks before the wrongly grouped photos are estimated
MIN_CALIBRATION = 10  # answered calibration checks before the missing merges are
AUDIT_MEMBER = "audit-member"
AUDIT_CALIBRATION = "audit-calibration"
_RECENT = (10, 0.25)  # member checks used: the latest quarter, at least 10
_MAX_ROWS = 4000  # identities whose partners are summed (a uniform sample beyond)
_N_BINS = 400  # similarity bins over the range of the reference photos' similarities
# the calibration curve's grid: P(same | s) = c + (1 - c) expit(a + b (s - s0) / w), where the
# floor c is the share of same-animal pairs however dissimilar (an embedding that does not
# separate the animals puts them anywhere), equally likely a priori at each value
_GC = np.array([0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2])
_GA = np.linspace(-12.0, 8.0, 81)
_GB = np.linspace(-10.0, 60.0, 101)
_C, _A, _B = np.meshgrid(_GC, _GA, _GB, indexing="ij")
_LOG_PRIOR = -0.5 * (_A / 6.0) ** 2 - 0.5 * ((_B - 10.0) / 25.0) ** 2


def _beta_range(k, m, q=(0.05, 0.95)):
    """Jeffreys 5-95% range of a rate from k events in m trials."""
    return tuple(float(v) for v in beta.ppf(q, k + 0.5, m - k + 0.5))


def _rows(answers, kind):
    """Rows of the kept pair-question answers to checks of ``kind``."""
    return np.flatnonzero(answers.questions & (answers.kind == kind))


def embedding_tag(catalogue) -> str:
    """The pool a calibration check records: the embedding its strata were drawn in."""
    return f"embedding {catalogue.calibration_id}"


def calibration_rows(catalogue) -> np.ndarray:
    """Rows of the calibration checks drawn in the catalogue's calibration embedding
    (:func:`.identities.calibration_embedding`): checks drawn by the similarities of
    another embedding are no random sample given this one's."""
    answers = catalogue.answers
    rows = _rows(answers, AUDIT_CALIBRATION)
    return rows[answers.pool[rows] == embedding_tag(catalogue)]


def recent_calibration_rows(catalogue) -> np.ndarray:
    """The recent half of :func:`calibration_rows` (at least 20): as answers merge
    identities, the pairs still apart at a given similarity are less often the same
    animal, so older checks overstate it (on make_reid_blobs(2000) the range held the
    truth at 8 of 10 checkpoints instead of 6)."""
    rows = calibration_rows(catalogue)
    return rows[-max(2 * MIN_CALIBRATION, len(rows) // 2) :]


# Member checks are told apart by the size of the photo's identity when asked: how often a
# grouped photo is another animal depends mostly on it (a giant cluster is a mix, a pair
# is usually right), and the identities change size as answers come.
SIZE_STRATA = ((2, 2), (3, 5), (6, 20), (21, None))


def size_stratum(size) -> str:
    """The stratum label of a member check in an identity of ``size`` photos."""
    for lo, hi in SIZE_STRATA:
        if size >= lo and (hi is None or size <= hi):
            return f"size {lo}" + ("+" if hi is None else "" if hi == lo else f"-{hi}")
    return "size 1"


def wrongly_grouped(catalogue, *, n_draws=4000, seed=0) -> dict:
    """Photos sitting with another animal: estimate, low, high (photos), checks, pool.

    The photos the answers do not join to their identity (the pool) are counted
    by the size of their identity; each size's share of "different" comes from
    the recent member checks asked in identities of that size (the last half, at
    least 20; a size with fewer than 3 checks takes all sizes' recent checks);
    the estimate and its range are the median and the 95% range of drawing each
    share from its Beta posterior and the count from the binomial.
    """
    answers = catalogue.answers
    sizes = np.zeros(len(catalogue.numbers), np.int64)
    for ident in catalogue.identities:
        sizes[ident.images] = len(ident.images)
    in_pool = (sizes > 1) & ~catalogue.verified
    pool = int(in_pool.sum())
    rows = _rows(answers, AUDIT_MEMBER)
    out = {"pool": pool, "checks": int(len(rows))}
    if pool == 0:
        return {**out, "estimate": 0.0, "low": 0.0, "high": 0.0, "share": 0.0}
    if len(rows) < MIN_CHECKS:
        return {**out, "estimate": None, "low": 0.0, "high": float(pool), "share": None}
    rng = np.random.default_rng(seed)
    labels = np.array([size_stratum(v) for v in sizes[in_pool].tolist()], object)

    def recent(r):
        return r[-max(_RECENT[0], int(len(r) * _RECENT[1])) :]

    everyone = recent(rows)
    draws = np.zeros(n_draws)
    for label in np.unique(labels):
        n_s = int((labels == label).sum())
        mine = rows[answers.pool[rows] == label]
        use = recent(mine) if len(mine) >= 3 else everyone
        wrong, asked = int((~answers.same[use]).sum()), len(use)
        p = rng.beta(wrong + 0.5, asked - wrong + 0.5, n_draws)
        draws += rng.binomial(n_s, p)
    lo, mid, hi = np.percentile(draws, [_LOW, 50, _HIGH])
    return {
        **out,
        "estimate": float(mid),
        "low": float(lo),
        "high": float(hi),
        "share": float(mid / pool),
    }


def similarity_scale(S) -> tuple:
    """(s0, w): a similarity near the top of ``S`` (its 99.9% quantile) and the width
    from its median to there. The calibration curve reads similarities as
    ``(s - s0) / w``, so one prior fits embeddings whose cosines span [-1, 1] and those
    whose same-animal pairs sit at 0.08 alike."""
    S = np.asarray(S, np.float64)
    S = S[np.isfinite(S)]
    if not len(S):
        return 0.9, 0.1
    mid, top = np.quantile(S, [0.5, 0.999])
    return float(top), float(max(top - mid, 1e-3))


def _partner_counts(catalogue, rng):
    """Per sampled identity, how many other identities' reference photos fall in each
    similarity bin (pairs known to differ left out); the sample's scale; the bins'
    centres; the similarity scale (:func:`similarity_scale`)."""
    X = catalogue.calibration_X
    refs = np.array([i.reference for i in catalogue.identities], np.int64)
    m = len(refs)
    rows = np.arange(m) if m <= _MAX_ROWS else np.sort(rng.choice(m, _MAX_ROWS, replace=False))
    R = X[refs]
    # the bins span the similarities there are (a sample of rows shows their range)
    probe = rows[rng.choice(len(rows), min(len(rows), 256), replace=False)]
    S = R[probe] @ R.T
    S[np.arange(len(probe)), probe] = np.nan
    s0, w = similarity_scale(S)
    lo, hi = float(np.nanmin(S)), float(np.nanmax(S))
    bins = np.linspace(lo - 1e-6, hi + 1e-6, _N_BINS + 1)
    counts = np.zeros((len(rows), len(bins) - 1), np.float64)
    for start in range(0, len(rows), 512):
        block = rows[start : start + 512]
        S = R[block] @ R.T
        S[np.arange(len(block)), block] = np.nan  # not its own partner
        b = np.clip(np.searchsorted(bins, S, side="right") - 1, 0, len(bins) - 2)
        b = np.where(np.isnan(S), -1, b)
        for r in range(len(block)):
            got = b[r][b[r] >= 0]
            counts[start + r] = np.bincount(got, minlength=len(bins) - 1)
    # identity pairs that an answer says differ are not candidates
    answers = catalogue.answers
    pos = {num: t for t, num in enumerate(i.number for i in catalogue.identities)}
    where = {int(r): t for t, r in enumerate(rows.tolist())}
    diff = answers.pairs[~answers.same]
    if len(diff):
        a = np.array([pos[k] for k in catalogue.numbers[diff[:, 0]].tolist()])
        b = np.array([pos[k] for k in catalogue.numbers[diff[:, 1]].tolist()])
        seen = set()
        for x, y in zip(a.tolist(), b.tolist()):
            if x == y or (min(x, y), max(x, y)) in seen:
                continue
            seen.add((min(x, y), max(x, y)))
            s = float(R[x] @ R[y])
            k = int(np.clip(np.searchsorted(bins, s, side="right") - 1, 0, len(bins) - 2))
            for u in (x, y):
                if u in where:
                    counts[where[u], k] -= 1
    centres = (bins[:-1] + bins[1:]) / 2
    return np.maximum(counts, 0), m / len(rows), centres, (s0, w)


def _curve_draws(s, y, scale, k, rng):
    """(k, 3) draws (c, a, b) of P(same | s) = c + (1 - c) expit(a + b s) from the grid
    posterior of the checks' similarities ``s`` and answers ``y``; the grid is over
    ``(s - s0) / w`` for ``scale = (s0, w)`` (:func:`similarity_scale`)."""
    s0, w = scale
    ll = _LOG_PRIOR.copy()
    log_c, log_1c = np.log(np.maximum(_C, 1e-300)), np.log1p(-_C)
    for si, yi in zip(s.tolist(), y.tolist()):
        z = _A + _B * ((si - s0) / w)
        if yi:  # log(c + (1 - c) expit(z))
            ll += np.logaddexp(log_c, log_1c + log_expit(z))
        else:  # log((1 - c) expit(-z))
            ll += log_1c + log_expit(-z)
    p = np.exp(ll - ll.max()).ravel()
    idx = rng.choice(p.size, size=k, p=p / p.sum())
    b = _B.ravel()[idx] / w
    return np.stack([_C.ravel()[idx], _A.ravel()[idx] - b * s0, b], axis=1)


def curve_values(draws, s) -> np.ndarray:
    """(k, len(s)): P(same | s) under each draw of :func:`_curve_draws`."""
    c, a, b = draws[:, :1], draws[:, 1:2], draws[:, 2:]
    return c + (1 - c) * expit(a + b * np.asarray(s, np.float64)[None, :])


def missing_merges(catalogue, *, n_draws=300, seed=0) -> dict:
    """Identities that show an animal another identity shows: estimate, low, high, checks."""
    rng = np.random.default_rng(seed)
    answers = catalogue.answers
    m = len(catalogue.identities)
    rows = recent_calibration_rows(catalogue)
    out = {"checks": int(len(rows)), "identities": m}
    if m < 2:
        return {**out, "estimate": 0.0, "low": 0.0, "high": 0.0}
    if len(rows) < MIN_CALIBRATION:
        return {**out, "estimate": None, "low": 0.0, "high": float(m - 1)}
    X = catalogue.calibration_X
    pairs = answers.pairs[rows]
    s = np.einsum("ij,ij->i", X[pairs[:, 0]], X[pairs[:, 1]]).astype(np.float64)
    counts, scale, centres, sim_scale = _partner_counts(catalogue, rng)
    draws = _curve_draws(s, answers.same[rows], sim_scale, n_draws, rng)
    totals = []
    for f in curve_values(draws, centres):
        lam = counts @ f
        q = lam / (1.0 + lam)
        spread = np.sqrt(scale * scale * (q * (1 - q)).sum())
        totals.append(scale * q.sum() + rng.normal() * spread)
    lo, mid, hi = np.percentile(totals, [_LOW, 50, _HIGH])
    cap = float(m - 1)
    return {
        **out,
        "estimate": float(np.clip(mid, 0, cap)),
        "low": float(np.clip(lo, 0, cap)),
        "high": float(np.clip(hi, 0, cap)),
        "same": int(answers.same[rows].sum()),
    }


def separation(catalogue) -> dict:
    """Whether the answers show the embedding separates the animals (None: not known yet).

    See :func:`separation_of`.
    """
    return separation_of(catalogue.answers, catalogue.clusters.graph)


def separation_of(answers, graph) -> dict:
    """Whether the answers show the embedding separates the animals (None: not known yet).

    Reads the pair-question answers between kNN neighbours (each among the
    other's four nearest) and the member checks: it does not when fewer than
    40% of 15 or more neighbour pairs are the same animal (the upper end of the
    Jeffreys 90% range), or fewer than half of 10 or more member checks; it does
    when more than half of 15 or more neighbour pairs are.
    """
    ask = answers.questions
    nn_same = nn_asked = 0
    if graph is not None and ask.any():
        near = graph.indices[:, : min(5, graph.indices.shape[1])]
        i, j = answers.pairs[ask, 0], answers.pairs[ask, 1]
        close = (near[i] == j[:, None]).any(axis=1) | (near[j] == i[:, None]).any(axis=1)
        nn_asked = int(close.sum())
        nn_same = int(answers.same[ask][close].sum())
    rows = _rows(answers, AUDIT_MEMBER)
    in_asked, in_same = int(len(rows)), int(answers.same[rows].sum())
    separates = None
    if nn_asked >= 15 and _beta_range(nn_same, nn_asked)[1] < 0.4:
        separates = False
    elif in_asked >= 10 and _beta_range(in_same, in_asked)[1] < 0.5:
        separates = False
    elif nn_asked >= 15 and _beta_range(nn_same, nn_asked)[0] > 0.5:
        separates = True
    return {
        "nearest_same": nn_same,
        "nearest_asked": nn_asked,
        "inside_same": in_same,
        "inside_asked": in_asked,
        "separates": separates,
    }


def _pct(k, m) -> str:
    return f"{100.0 * k / m:.0f}%" if m else "-"


def estimate_status(catalogue, *, n_draws=300, seed=0) -> dict:
    """Where ``catalogue`` stands (see the module doc).

    Returns a dict: ``wrongly_grouped`` and ``missing_merges`` (each with
    ``estimate`` -- None while not known --, ``low``, ``high``, ``checks``),
    ``separation`` (see :func:`separation`), ``counts``
    (:meth:`Catalogue.counts`), ``settled`` (both upper ends below one),
    ``message`` (one line) and ``warning`` ('' or what the answers show about
    the embedding, and what helps).
    """
    w = wrongly_grouped(catalogue, seed=seed)
    mm = missing_merges(catalogue, n_draws=n_draws, seed=seed)
    sep = separation(catalogue)
    counts = catalogue.counts()
    known = w["estimate"] is not None and mm["estimate"] is not None
    settled = bool(known and w["high"] < 1 and mm["high"] < 1)
    parts = []
    if w["estimate"] is None:
        parts.append(
            f"photos wrongly grouped: not known yet ({w['checks']} of {MIN_CHECKS} check answers)"
        )
    else:
        parts.append(
            f"photos wrongly grouped: about {w['estimate']:.0f} of the {w['pool']} not joined "
            f"by answers (95% range {w['low']:.0f}-{w['high']:.0f})"
        )
    if mm["estimate"] is None:
        since = " in this embedding" if catalogue.calibration_id > 1 else ""
        parts.append(
            f"merges missing: not known yet ({mm['checks']} of {MIN_CALIBRATION} check "
            f"answers{since})"
        )
    else:
        parts.append(
            f"merges missing: about {mm['estimate']:.0f} (95% range {mm['low']:.0f}-"
            f"{mm['high']:.0f})"
        )
    if settled:
        parts.append("more answers are unlikely to change the catalogue")
    warning = ""
    if sep["separates"] is False:
        why = []
        if sep["nearest_asked"]:
            why.append(
                f"{_pct(sep['nearest_same'], sep['nearest_asked'])} of {sep['nearest_asked']} "
                "answered pairs of nearest neighbours were the same animal"
            )
        if sep["inside_asked"]:
            why.append(
                f"{_pct(sep['inside_same'], sep['inside_asked'])} of {sep['inside_asked']} "
                "photos checked against their identity were the same animal"
            )
        warning = (
            "the embedding does not separate these animals (" + "; ".join(why) + "): answers "
            "verify photos one at a time but cannot find most identities. What helps: an "
            "embedding made for animals (--reembed --backbone megadescriptor-t, downloaded "
            "once), learning from your answers (--learn), or training (aas train --store)"
        )
    return {
        "wrongly_grouped": w,
        "missing_merges": mm,
        "separation": sep,
        "counts": counts,
        "settled": settled,
        "message": "; ".join(parts),
        "warning": warning,
    }
