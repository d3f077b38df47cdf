"""Baseline pair samplers with the AAS interface (DESIGN.md §3.9).

Every sampler has ``propose_from(X, labels_a, labels_b, D, constraints,
budget, *, rng) -> PairProposal`` and never proposes a pair that the
constraints already imply. GBAS and LBAS (He et al., ICME 2024) have no public code; they are
implemented from their description as DESIGN.md §3.9 reads it.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._validation import check_int
from ..constraints import PairConstraints
from .aas import PairProposal, _empty

__all__ = ["GBAS", "LBAS", "NISSampler", "RandomPairSampler"]


def _check(owner, constraints, budget):
    budget = check_int("budget", budget, low=0, owner=owner)
    if not isinstance(constraints, PairConstraints):
        raise TypeError(
            f"{owner}: 'constraints' must be PairConstraints; got {type(constraints).__name__}."
        )
    return budget


def _proposal(pairs, prob, pool, message) -> PairProposal:
    m = len(pairs)
    return PairProposal(
        pairs.astype(np.int64).reshape(-1, 2),
        np.asarray(prob, np.float64),
        np.full(m, pool),
        np.full(m, ""),
        np.full(m, -1, np.int64),
        m,
        message,
    )


class RandomPairSampler:
    """Uniformly random pairs i < j that the constraints do not already imply."""

    def propose_from(self, X, labels_a, labels_b, D, constraints, budget, *, rng) -> PairProposal:
        owner = "RandomPairSampler.propose_from"
        budget = _check(owner, constraints, budget)
        n = len(X)
        if budget == 0 or n < 2:
            return _empty("budget 0: nothing to ask." if budget == 0 else "fewer than 2 images.")
        total = n * (n - 1) // 2
        chosen: dict = {}
        tries = 0
        while len(chosen) < budget and tries < 50:
            tries += 1
            want = 2 * (budget - len(chosen)) + 16
            p = rng.integers(0, n, size=(want, 2))
            p = p[p[:, 0] != p[:, 1]]
            p = np.sort(p, axis=1)
            p = p[~constraints.is_known(p)] if len(p) else p
            for i, j in p.tolist():
                chosen.setdefault((i, j), None)
                if len(chosen) == budget:
                    break
        if len(chosen) < budget:  # nearly everything is known: enumerate what is left
            ii, jj = np.triu_indices(n, 1)
            rest = np.stack([ii, jj], axis=1)
            rest = rest[~constraints.is_known(rest)]
            rest = rest[[(i, j) not in chosen for i, j in rest.tolist()]]
            extra = rng.permutation(len(rest))[: budget - len(chosen)]
            for i, j in rest[np.sort(extra)].tolist():
                chosen[(i, j)] = None
        pairs = np.array(sorted(chosen), np.int64).reshape(-1, 2)
        prob = np.full(len(pairs), 1.0 / total)
        return _proposal(pairs, prob, "random", f"{len(pairs)} uniform random pairs")


class NISSampler:
    """Nested importance sampling (Perez et al., ECCV 2024), our reading.

    Soft degree deg(v) = Σ_u (1 - d(v, u)) over the stored Jaccard entries
    (u ≠ v). Vertices are drawn without replacement with probability ∝
    1/deg(v) (low degree first; vertices with no stored neighbour cannot be
    paired this way and are skipped), and each drawn vertex is paired with its
    ``m`` most similar neighbours, skipping known pairs, until the budget is
    spent.
    """

    def __init__(self, m=5):
        self.m = check_int("m", m, low=1, owner="NISSampler")

    def propose_from(self, X, labels_a, labels_b, D, constraints, budget, *, rng) -> PairProposal:
        owner = "NISSampler.propose_from"
        budget = _check(owner, constraints, budget)
        if budget == 0:
            return _empty("budget 0: nothing to ask.")
        D = sp.csr_array(D)
        n = D.shape[0]
        rows = np.repeat(np.arange(n), np.diff(D.indptr))
        off = rows != D.indices
        sim = np.where(off, 1.0 - D.data.astype(np.float64), 0.0)
        deg = np.bincount(rows, weights=sim, minlength=n)
        cand = np.flatnonzero(deg > 0)
        if not len(cand):
            return _empty("the similarity graph has no edges: nothing to ask.")
        w = 1.0 / deg[cand]
        keys = np.log(rng.random(len(cand))) / (w / w.sum())
        order = cand[np.argsort(-keys, kind="stable")]
        chosen: dict = {}
        for v in order.tolist():
            lo, hi = D.indptr[v], D.indptr[v + 1]
            nb, s = D.indices[lo:hi], sim[lo:hi]
            top = nb[np.argsort(-s, kind="stable")][: self.m]
            top = top[top != v]
            pairs = np.sort(np.stack([np.full(len(top), v), top], axis=1), axis=1)
            if len(pairs):
                pairs = pairs[~constraints.is_known(pairs)]
            for i, j in pairs.tolist():
                chosen.setdefault((i, j), None)
                if len(chosen) == budget:
                    break
            if len(chosen) == budget:
                break
        pairs = np.array(list(chosen), np.int64).reshape(-1, 2)
        return _proposal(pairs, np.full(len(pairs), np.nan), "nis", f"{len(pairs)} NIS pairs")


def _split(budget):
    """Half positives, half negatives (the odd one to the positives)."""
    return budget - budget // 2, budget // 2


def _clusters(labels):
    """{label: ascending member indices} for labels >= 0 (outliers dropped)."""
    labels = np.asarray(labels, np.int64)
    idx = np.flatnonzero(labels >= 0)
    order = idx[np.argsort(labels[idx], kind="stable")]
    cuts = np.flatnonzero(np.diff(labels[order])) + 1
    return {int(labels[c[0]]): c for c in np.split(order, cuts) if len(c)}


def _allocate(total, sizes):
    """Largest-remainder split of ``total`` in proportion to ``sizes``."""
    sizes = np.asarray(sizes, np.float64)
    if total <= 0 or sizes.sum() <= 0:
        return np.zeros(len(sizes), np.int64)
    quota = total * sizes / sizes.sum()
    out = np.floor(quota).astype(np.int64)
    rest = total - out.sum()
    out[np.argsort(-(quota - out), kind="stable")[:rest]] += 1
    return out


def _take(pairs, constraints, limit, chosen):
    """Adds up to ``limit`` new, unknown pairs (i < j) to ``chosen``, in order."""
    if limit <= 0 or not len(pairs):
        return
    pairs = np.sort(np.asarray(pairs, np.int64).reshape(-1, 2), axis=1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    pairs = pairs[~constraints.is_known(pairs)] if len(pairs) else pairs
    added = 0
    for i, j in pairs.tolist():
        if (i, j) not in chosen:
            chosen[(i, j)] = None
            added += 1
            if added == limit:
                return


class LBAS:
    """Local balanced active sampling on DBSCAN clusters, our reading of He et al.

    Outliers are dropped. Half the budget goes to expected positives, half to
    expected negatives, each split over clusters in proportion to their size.
    Positives of a cluster: (medoid, member) for members picked by farthest-point
    sampling from the medoid (the hardest same-cluster pairs). Negatives of a
    cluster: the closest pair between it and its nearest other clusters (by
    centroid cosine), nearest first.
    """

    def propose_from(self, X, labels_a, labels_b, D, constraints, budget, *, rng) -> PairProposal:
        budget = _check("LBAS.propose_from", constraints, budget)
        clusters = _clusters(labels_a)
        if budget == 0 or not clusters:
            return _empty("budget 0: nothing to ask." if budget == 0 else "no DBSCAN cluster.")
        keys = sorted(clusters)
        sizes = [len(clusters[c]) for c in keys]
        n_pos, n_neg = _split(budget)
        pos_alloc, neg_alloc = _allocate(n_pos, sizes), _allocate(n_neg, sizes)
        pos = [_fps_pairs(X, clusters[c], q + 4) for c, q in zip(keys, pos_alloc)]
        cent = np.stack([X[clusters[c]].sum(axis=0) for c in keys])
        cent /= np.maximum(np.linalg.norm(cent, axis=1, keepdims=True), 1e-12)
        csim = cent @ cent.T
        np.fill_diagonal(csim, -np.inf)
        neg = []
        for t, q in enumerate(neg_alloc):
            others = np.argsort(-csim[t], kind="stable")[: min(q + 4, len(keys) - 1)]
            ma, cand = clusters[keys[t]], []
            for o in others.tolist():
                mb = clusters[keys[o]]
                flat = int(np.argmax(X[ma] @ X[mb].T))
                cand.append([ma[flat // len(mb)], mb[flat % len(mb)]])
            neg.append(np.array(cand, np.int64).reshape(-1, 2))
        chosen: dict = {}
        _fill(pos, pos_alloc, n_pos, constraints, chosen)
        _fill(neg, neg_alloc, budget, constraints, chosen)
        _fill(pos, pos_alloc, budget, constraints, chosen)  # too few negatives: more positives
        pairs = np.array(list(chosen), np.int64).reshape(-1, 2)
        return _proposal(pairs, np.full(len(pairs), np.nan), "lbas", f"{len(pairs)} LBAS pairs")


def _fps_pairs(X, members, count):
    """(medoid, member) pairs for up to ``count`` members in farthest-point order."""
    if count <= 0 or len(members) < 2:
        return np.empty((0, 2), np.int64)
    xm = X[members]
    anchor = int(np.argmax(xm @ xm.sum(axis=0)))
    near = (xm @ xm[anchor]).astype(np.float64)  # max similarity to the picked set
    near[anchor] = np.inf
    picked = []
    while len(picked) < min(count, len(members) - 1):
        far = int(np.argmin(near))
        picked.append(far)
        near = np.maximum(near, xm @ xm[far])
        near[far] = np.inf
    return np.array([[members[anchor], members[t]] for t in picked], np.int64)


def _fill(lists, alloc, upto, constraints, chosen):
    """Takes alloc[c] pairs from list c, then one from each list in turn, until
    ``len(chosen) == upto`` or the lists run out. Known or repeated pairs are skipped."""
    lists = [np.sort(p, axis=1) for p in lists]
    known = [constraints.is_known(p) if len(p) else np.zeros(0, bool) for p in lists]
    cursor = [0] * len(lists)

    def take_next(c):
        while cursor[c] < len(lists[c]):
            t = cursor[c]
            cursor[c] += 1
            i, j = (int(v) for v in lists[c][t])
            if i != j and not known[c][t] and (i, j) not in chosen:
                chosen[(i, j)] = None
                return True
        return False

    for c in range(len(lists)):
        for _ in range(int(alloc[c])):
            if len(chosen) >= upto or not take_next(c):
                break
    progress = True
    while len(chosen) < upto and progress:
        progress = False
        for c in range(len(lists)):
            if len(chosen) < upto and take_next(c):
                progress = True


class GBAS:
    """Global balanced active sampling, our reading of He et al.

    Candidates are the stored Jaccard pairs between two DBSCAN inliers:
    expected positives inside a cluster, expected negatives across clusters.
    Each half of the budget takes the pairs whose distance is closest to
    ``eps`` (most uncertain first), over all clusters at once; a short half
    is filled from the other.
    """

    def __init__(self, eps=0.6):
        from .._validation import check_float

        self.eps = check_float("eps", eps, low=0.0, high=1.0, owner="GBAS")

    def propose_from(self, X, labels_a, labels_b, D, constraints, budget, *, rng) -> PairProposal:
        budget = _check("GBAS.propose_from", constraints, budget)
        if budget == 0:
            return _empty("budget 0: nothing to ask.")
        D = sp.csr_array(D)
        a = np.asarray(labels_a, np.int64)
        rows = np.repeat(np.arange(D.shape[0]), np.diff(D.indptr))
        cols = D.indices.astype(np.int64)
        keep = (rows < cols) & (a[rows] >= 0) & (a[cols] >= 0)
        rows, cols, dist = rows[keep], cols[keep], D.data[keep].astype(np.float64)
        order = np.lexsort((cols, rows, np.abs(dist - self.eps)))
        pairs = np.stack([rows[order], cols[order]], axis=1)
        same = a[pairs[:, 0]] == a[pairs[:, 1]]
        n_pos, n_neg = _split(budget)
        chosen: dict = {}
        _take(pairs[same], constraints, n_pos, chosen)
        _take(pairs[~same], constraints, budget - len(chosen), chosen)
        _take(pairs[same], constraints, budget - len(chosen), chosen)
        out = np.array(list(chosen), np.int64).reshape(-1, 2)
        return _proposal(out, np.full(len(out), np.nan), "gbas", f"{len(out)} GBAS pairs")
