"""Baseline pair samplers with the AAS interface (DESIGN.md §3.9).

Every sampler has ``propose_from(X, labels_a, labels_b, D, constraints,
budget, *, rng) -> PairProposal`` and never proposes a pair that the
constraints already imply. GBAS and LBAS follow with issue 3.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._validation import check_int
from ..constraints import PairConstraints
from .aas import PairProposal, _empty

__all__ = ["NISSampler", "RandomPairSampler"]


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
