"""Ambiguity-Aware Sampling (paper §3.1, DESIGN.md §3.6-3.7)."""

from __future__ import annotations

import numpy as np

from .._validation import check_float, check_int
from .base import PairProposal, PairSampler
from .distribution import KINDS, aas_probabilities, region_variation_of_information, weighted_sample
from .pools import closest_inconsistent_pairs, overseg_pairs, region_medoids
from .regions import uncertainty_regions

__all__ = ["AmbiguityAwareSampler", "PairProposal"]


class AmbiguityAwareSampler(PairSampler):
    """Proposes the pairs that resolve the most disagreement between two clusterings.

    Parameters
    ----------
    eps : float in [0, 1]
        Share of the U_os (over-segmentation) pool in Eq. 4 (paper: 0.6).
    k_max : int >= 1
        Nearest region medoids paired for U_os (paper: 5).
    s_min : float in [0, 1]
        Minimum similarity 1 - d_Jaccard of a U_os pair (paper: 0.3).
    pi : None or 3 weights
        Weights of pair types beta1..beta3 in U_us (None: uniform over present types).
    """

    def __init__(self, eps=0.6, k_max=5, s_min=0.3, pi=None):
        owner = "AmbiguityAwareSampler"
        self.eps = check_float("eps", eps, low=0.0, high=1.0, owner=owner)
        self.k_max = check_int("k_max", k_max, low=1, owner=owner)
        self.s_min = check_float("s_min", s_min, low=0.0, high=1.0, owner=owner)
        if pi is not None:
            w = np.asarray(pi, np.float64)
            if w.shape != (3,) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
                raise ValueError(
                    f"{owner}: 'pi' must be 3 non-negative weights, not all 0; got {pi!r}."
                )
            pi = w
        self.pi = pi

    def propose_from(
        self, X, labels_a, labels_b, D, constraints, budget, *, rng, graph=None
    ) -> PairProposal:
        """Proposal from given clusterings (A: DBSCAN, -1 = outlier; B: FINCH).

        ``X`` has unit rows; ``D`` is the sparse Jaccard distance; pairs that
        the ``constraints`` already imply are never proposed.
        """
        X, labels_a, labels_b, D, budget, rng = self._checked(
            X, labels_a, labels_b, D, constraints, budget, rng, need=("labels_a", "labels_b", "D")
        )
        if budget == 0:
            return _empty("budget 0: nothing to ask.")
        raw_a = labels_a
        regions = uncertainty_regions(labels_a, labels_b)
        if regions.n_regions == 0:
            return _empty("A and B agree everywhere: no region of uncertainty, nothing to ask.")
        us, us_region, _ = closest_inconsistent_pairs(X, regions)
        os_pairs, os_sim = overseg_pairs(
            X, region_medoids(X, regions), D, k_max=self.k_max, s_min=self.s_min
        )
        keep_us = ~constraints.is_known(us) if len(us) else np.zeros(0, bool)
        keep_os = ~constraints.is_known(os_pairs) if len(os_pairs) else np.zeros(0, bool)
        us, us_region = us[keep_us], us_region[keep_us]
        os_pairs, os_sim = os_pairs[keep_os], os_sim[keep_os]
        outlier = raw_a < 0
        us_kind = outlier[us[:, 0]].astype(np.int64) + outlier[us[:, 1]]
        vi = region_variation_of_information(
            regions.region, regions.labels_a, regions.labels_b, regions.n_regions
        )
        prob = aas_probabilities(us_region, us_kind, os_sim, vi, eps=self.eps, pi=self.pi)
        pairs = np.concatenate([us, os_pairs]).astype(np.int64).reshape(-1, 2)
        m = len(pairs)
        if m == 0:
            return _empty(
                f"{regions.n_regions} region(s) of uncertainty, but every candidate pair is "
                "already answered or implied by the constraints."
            )
        pool = np.array(["us"] * len(us) + ["os"] * len(os_pairs))
        kind = np.array([KINDS[t] for t in us_kind] + [""] * len(os_pairs))
        region = np.concatenate([us_region, np.full(len(os_pairs), -1)]).astype(np.int64)
        # A pair in both pools is one candidate; its marginal P(Y) (Eq. 6) is the
        # sum of its two terms. It keeps its U_us description (listed first).
        _, first, inverse = np.unique(
            pairs[:, 0] * (pairs[:, 1].max(initial=0) + 1) + pairs[:, 1],
            return_index=True,
            return_inverse=True,
        )
        if len(first) < m:
            prob = np.bincount(inverse.ravel(), weights=prob)
            keep = np.sort(first)
            prob = prob[inverse.ravel()[keep]]
            pairs, pool, kind, region = pairs[keep], pool[keep], kind[keep], region[keep]
            m = len(pairs)
        pick = weighted_sample(prob, budget, rng)
        msg = (
            f"{len(pick)} of {m} candidate pairs ({len(us)} inside, {len(os_pairs)} across "
            f"{regions.n_regions} regions)"
        )
        if budget >= m:
            msg += ": the whole pool fits the budget"
        return PairProposal(pairs[pick], prob[pick], pool[pick], kind[pick], region[pick], m, msg)


def _empty(message: str) -> PairProposal:
    return PairProposal.empty(message)
