"""Baseline pair samplers with the AAS interface.

Every sampler has ``propose_from(X, labels_a, labels_b, D, constraints,
budget, *, rng, graph=None) -> PairProposal``, never proposes a pair that the
constraints already imply, and spends its whole budget while unknown
candidates remain (the paper's baselines use their full budget; only AAS
stops at the end of its pool). GBAS and LBAS (He et al., ICME 2024) have no public code; they are
implemented from their description as we read it.
"""

from __future__ import annotations

import numpy as np

from .. import _core
from .._validation import check_float, check_int, effective_threads
from .base import PairProposal, PairSampler, neighbour_rows

_empty = PairProposal.empty

__all__ = ["GBAS", "LBAS", "NISSampler", "RandomPairSampler"]


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


class RandomPairSampler(PairSampler):
    """Uniformly random pairs i < j that the constraints do not already imply."""

    def propose_from(
        self, X, labels_a, labels_b, D, constraints, budget, *, rng, graph=None
    ) -> PairProposal:
        X, _, _, _, budget, rng = self._checked(X, None, None, None, constraints, budget, rng)
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


class NISSampler(PairSampler):
    """Nested importance sampling (Perez et al., ECCV 2024), our reading.

    Vertices are drawn without replacement with probability ∝ 1/n̂(v), where
    n̂(v) = 1 + Σ_{u≠v} (1 - d(v, u)) is the soft degree on the Jaccard
    similarity graph (stored entries; the 1 is the vertex itself, as in the
    reference code whose similarity matrix has a unit diagonal: n̂ estimates
    the size of v's identity and is never 0). Low-degree vertices, the likely
    singletons and outliers, come first. Each drawn vertex is paired with its
    ``m`` most similar neighbours whose answer is not yet known: by Jaccard
    similarity while the graph stores one, then by cosine similarity (the kNN
    graph), so that the sampler can always spend its budget. The reference
    draws neighbours at random from a softmax of the similarities; taking the
    most similar ones is the stronger baseline.
    """

    def __init__(self, m=5):
        self.m = check_int("m", m, low=1, owner="NISSampler")

    def propose_from(
        self, X, labels_a, labels_b, D, constraints, budget, *, rng, graph=None
    ) -> PairProposal:
        X, _, _, D, budget, rng = self._checked(
            X, None, None, D, constraints, budget, rng, need=("D",)
        )
        if budget == 0:
            return _empty("budget 0: nothing to ask.")
        n = D.shape[0]
        rows = np.repeat(np.arange(n), np.diff(D.indptr))
        off = rows != D.indices
        sim = np.where(off, 1.0 - D.data.astype(np.float64), 0.0)
        deg = 1.0 + np.bincount(rows, weights=sim, minlength=n)
        w = 1.0 / deg
        keys = np.log(rng.random(n)) / (w / w.sum())
        order = np.argsort(-keys, kind="stable")
        knn, _ = neighbour_rows(X, graph)
        chosen: dict = {}
        for v in order.tolist():
            lo, hi = D.indptr[v], D.indptr[v + 1]
            nb, s = D.indices[lo:hi].astype(np.int64), sim[lo:hi]
            ranked = np.concatenate([nb[np.lexsort((nb, -s))], knn[v]])
            ranked = ranked[ranked != v]
            ranked = ranked[np.sort(np.unique(ranked, return_index=True)[1])]  # first mention
            _take(
                np.stack([np.full(len(ranked), v), ranked], axis=1),
                constraints,
                min(self.m, budget - len(chosen)),
                chosen,
            )
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


class LBAS(PairSampler):
    """Local balanced active sampling on DBSCAN clusters, our reading of He et al.

    Outliers are dropped. Half the budget goes to expected positives, half to
    expected negatives, each split over clusters in proportion to their size.
    Positives of a cluster: (medoid, member) for members in farthest-point
    order from the medoid (the hardest same-cluster pairs first). Negatives of
    a cluster: the closest pair between it and each other cluster, nearest
    cluster (centroid cosine) first. Pairs already known are skipped and the
    next ones in the same order are taken, so the budget is spent as long as
    unknown pairs remain; a cluster that runs out passes its share on (one
    pair per cluster in turn), and too few negatives are made up with positives.
    """

    def propose_from(
        self, X, labels_a, labels_b, D, constraints, budget, *, rng, graph=None
    ) -> PairProposal:
        X, labels_a, _, _, budget, rng = self._checked(
            X, labels_a, None, None, constraints, budget, rng, need=("labels_a",)
        )
        clusters = _clusters(labels_a)
        if budget == 0 or not clusters:
            return _empty("budget 0: nothing to ask." if budget == 0 else "no DBSCAN cluster.")
        keys = sorted(clusters)
        members = [clusters[c] for c in keys]
        sizes = [len(m) for m in members]
        n_pos, n_neg = _split(budget)
        pos_alloc, neg_alloc = _allocate(n_pos, sizes), _allocate(n_neg, sizes)
        csim = _centroid_sims(X, members)
        pos = [_fps_pairs(X, m, k) for m, k in zip(members, pos_alloc)]
        threads = effective_threads(None, owner="LBAS")
        neg = _closest_to_nearest_clusters(X, members, csim, neg_alloc, threads)
        chosen: dict = {}
        _fill(pos, pos_alloc, n_pos, constraints, chosen)
        _fill(neg, neg_alloc, budget, constraints, chosen)
        _fill(pos, np.zeros_like(pos_alloc), budget, constraints, chosen)  # negatives ran out
        pairs = np.array(list(chosen), np.int64).reshape(-1, 2)
        return _proposal(pairs, np.full(len(pairs), np.nan), "lbas", f"{len(pairs)} LBAS pairs")


def _fps_pairs(X, members, first=1):
    """(medoid, member) pairs, members in farthest-point order, as (m, 2) chunks:
    ``first`` pairs, then twice as many each time (a generator; only what is
    taken is computed)."""
    if len(members) < 2:
        return
    xm = X[members]
    anchor = int(np.argmax(xm @ xm.sum(axis=0, dtype=np.float64).astype(np.float32)))
    near = (xm @ xm[anchor]).astype(np.float64)  # max similarity to the picked set
    near[anchor] = np.inf
    picked, size = [], max(1, int(first))
    for _ in range(len(members) - 1):
        far = int(np.argmin(near))
        picked.append(far)
        near = np.maximum(near, xm @ xm[far])
        near[far] = np.inf
        if len(picked) == size:
            yield _anchored(members, anchor, picked)
            picked, size = [], 2 * size
    if picked:
        yield _anchored(members, anchor, picked)


def _anchored(members, anchor, picked):
    return np.stack([np.full(len(picked), members[anchor]), members[picked]], axis=1)


def _centroid_sims(X, members):
    """Cosine of the clusters' mean directions, -inf on the diagonal."""
    cent = np.stack([X[m].sum(axis=0, dtype=np.float64) for m in members])
    cent /= np.maximum(np.linalg.norm(cent, axis=1, keepdims=True), 1e-12)
    csim = cent @ cent.T
    np.fill_diagonal(csim, -np.inf)
    return csim


def _nearest_first(sims, upto):
    """The ``upto`` largest of ``sims``, largest first, ties by index (as a stable
    argsort of -sims), without sorting the rest."""
    if upto >= len(sims):
        return np.argsort(-sims, kind="stable")
    kth = np.partition(-sims, upto - 1)[upto - 1]
    top = np.flatnonzero(-sims <= kth)  # every tie of the upto-th too
    return top[np.lexsort((top, -sims[top]))][:upto]


def _closest_to_nearest_clusters(X, members, sims, first, threads):
    """For every cluster t, the closest pair between t and each other cluster, nearest
    (by ``sims[t]``) first: one iterator of (m, 2) chunks per cluster, ``first[t]``
    clusters, then as many (at least 4) each time. The first chunks of all clusters
    come from one exact search (C++); later ones only when taken (most clusters need
    only a few more: duplicates of mutual nearest clusters are skipped)."""
    rows = np.concatenate(members).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum([len(m) for m in members])]).astype(np.int64)
    rest = len(members) - 1

    def pairs_of(t, others):
        return np.stack([np.full(len(others), t), others], axis=1).astype(np.int64)

    def search(pairs, n_threads):
        return _core.closest_cluster_pairs(X, starts, rows, pairs, n_threads)

    size0 = [min(max(1, int(f)), rest) for f in first]
    orders = [_nearest_first(sims[t], size0[t]) for t in range(len(members))]
    pairs0 = np.concatenate([pairs_of(t, o) for t, o in enumerate(orders)])
    found0 = np.split(search(pairs0, threads), np.cumsum(size0)[:-1])

    def source(t):
        yield found0[t]
        order, done, size = orders[t], len(orders[t]), max(4, size0[t])
        while done < rest:
            if len(order) < min(done + size, rest):
                order = _nearest_first(sims[t], min(2 * (done + size), rest))
            chunk = order[done : done + size]
            done += len(chunk)
            yield search(pairs_of(t, chunk), 1)  # a few: one thread (a team costs more)

    return [source(t) for t in range(len(members))]


def _fill(sources, alloc, upto, constraints, chosen):
    """Takes alloc[c] new pairs from source c, then one from each source in turn,
    until ``len(chosen) == upto`` or the sources run dry. Known or repeated pairs
    are skipped. Sources are iterators of (m, 2) chunks of pairs; they keep their
    position. A chunk's known pairs are found in one call (the answers do not
    change while filling)."""
    buffered = [iter(()) for _ in sources]

    def take_next(c):
        while True:
            for key in buffered[c]:
                if key not in chosen:
                    chosen[key] = None
                    return True
            chunk = next(sources[c], None)
            if chunk is None:
                return False
            chunk = np.sort(np.asarray(chunk, np.int64).reshape(-1, 2), axis=1)
            chunk = chunk[~constraints.is_known(chunk)] if len(chunk) else chunk
            buffered[c] = iter(map(tuple, chunk.tolist()))

    for c in range(len(sources)):
        for _ in range(int(alloc[c])):
            if len(chosen) >= upto or not take_next(c):
                break
    live = list(range(len(sources)))
    while len(chosen) < upto and live:
        live = [c for c in live if len(chosen) < upto and take_next(c)]


class GBAS(PairSampler):
    """Global balanced active sampling, our reading of He et al.

    Candidates are pairs of two DBSCAN inliers: expected positives inside a
    cluster, expected negatives across clusters. Each half of the budget takes
    the pairs whose Jaccard distance is closest to ``eps`` (most uncertain
    first), over all clusters at once; then, when those run out, pairs of
    cosine neighbours (the kNN graph) that the distance graph does not store
    (their distance is beyond its cut-off), most similar first; then any other
    pairs of the same type in random order (their distances are unknown and
    tie). A short half is filled from the other.
    """

    def __init__(self, eps=0.6):
        self.eps = check_float("eps", eps, low=0.0, high=1.0, owner="GBAS")

    def propose_from(
        self, X, labels_a, labels_b, D, constraints, budget, *, rng, graph=None
    ) -> PairProposal:
        X, labels_a, _, D, budget, rng = self._checked(
            X, labels_a, None, D, constraints, budget, rng, need=("labels_a", "D")
        )
        if budget == 0:
            return _empty("budget 0: nothing to ask.")
        a = labels_a
        n = D.shape[0]
        rows = np.repeat(np.arange(n), np.diff(D.indptr))
        cols = D.indices.astype(np.int64)
        keep = (rows < cols) & (a[rows] >= 0) & (a[cols] >= 0)
        rows, cols, dist = rows[keep], cols[keep], D.data[keep].astype(np.float64)
        order = np.lexsort((cols, rows, np.abs(dist - self.eps)))
        stored = np.stack([rows[order], cols[order]], axis=1)
        # beyond the cut-off: kNN pairs of inliers, by cosine similarity descending
        knn, sims = neighbour_rows(X, graph)
        u = np.repeat(np.arange(n), knn.shape[1])
        v = knn.ravel()
        s = sims.ravel()
        lo, hi = np.minimum(u, v), np.maximum(u, v)
        ok = (a[lo] >= 0) & (a[hi] >= 0) & (lo != hi)
        lo, hi, s = lo[ok], hi[ok], s[ok]
        order = np.lexsort((hi, lo, -s))
        extra = np.stack([lo[order], hi[order]], axis=1)
        pairs = np.concatenate([stored, extra])
        same = a[pairs[:, 0]] == a[pairs[:, 1]]
        n_pos, n_neg = _split(budget)
        chosen: dict = {}
        _take(pairs[same], constraints, n_pos, chosen)
        _random_inlier_pairs(a, True, n_pos - len(chosen), rng, constraints, chosen)
        _take(pairs[~same], constraints, budget - len(chosen), chosen)
        _random_inlier_pairs(a, False, budget - len(chosen), rng, constraints, chosen)
        _take(pairs[same], constraints, budget - len(chosen), chosen)
        _random_inlier_pairs(a, True, budget - len(chosen), rng, constraints, chosen)
        out = np.array(list(chosen), np.int64).reshape(-1, 2)
        return _proposal(out, np.full(len(out), np.nan), "gbas", f"{len(out)} GBAS pairs")


def _random_inlier_pairs(labels, same, count, rng, constraints, chosen, tries=20):
    """Adds up to ``count`` random unknown pairs of inliers, inside one cluster
    (``same``) or across two, drawing in rounds (at most ``tries``)."""
    inliers = np.flatnonzero(labels >= 0)
    if count <= 0 or len(inliers) < 2:
        return
    if same:
        clusters = _clusters(labels)
        members = [m for m in clusters.values() if len(m) > 1]
        if not members:
            return
        weight = np.array([len(m) * (len(m) - 1) for m in members], np.float64)
    for _ in range(tries):
        want = 2 * count + 16
        if same:
            picks = rng.choice(len(members), size=want, p=weight / weight.sum())
            u = np.array([members[c][rng.integers(len(members[c]))] for c in picks])
            v = np.array([members[c][rng.integers(len(members[c]))] for c in picks])
        else:
            u, v = inliers[rng.integers(len(inliers), size=(2, want))]
        ok = (u != v) & ((labels[u] == labels[v]) == same)
        cand = np.stack([u[ok], v[ok]], axis=1)
        before = len(chosen)
        _take(cand, constraints, count, chosen)
        count -= len(chosen) - before
        if count <= 0:
            return
