"""Ambiguity-Aware Sampling (paper §3.1, DESIGN.md §3.6-3.7)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validation import (
    as_distance_graph,
    as_features,
    check_float,
    check_int,
    effective_threads,
)
from ..constraints import PairConstraints
from .distribution import KINDS, aas_probabilities, region_variation_of_information, weighted_sample
from .pools import _closest_inconsistent_pairs, _overseg_pairs, _region_medoids
from .regions import uncertainty_regions

__all__ = ["AmbiguityAwareSampler", "PairProposal"]


@dataclass(frozen=True, eq=False)
class PairProposal:
    """Pairs to ask a person about, with why each was chosen.

    Attributes
    ----------
    pairs : (m, 2) int64, i < j
    prob : (m,) float64, the sampling probability of each pair (Eq. 6)
    pool : (m,) str, "us" (inside a region) or "os" (between region medoids)
    kind : (m,) str, "beta1"/"beta2"/"beta3" for "us" pairs, "" for "os" pairs
    region : (m,) int64, the region of a "us" pair, -1 for "os" pairs
    n_candidates : int, size of U = U_us ∪ U_os after removing known pairs
    message : str, a one-line summary (says why when nothing is proposed)
    """

    pairs: np.ndarray
    prob: np.ndarray
    pool: np.ndarray
    kind: np.ndarray
    region: np.ndarray
    n_candidates: int
    message: str

    def __len__(self) -> int:
        return len(self.pairs)


class AmbiguityAwareSampler:
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

    def propose_from(self, X, labels_a, labels_b, D, constraints, budget, *, rng) -> PairProposal:
        """Proposal from given clusterings (A: DBSCAN, -1 = outlier; B: FINCH).

        ``X`` has unit rows; ``D`` is the sparse Jaccard distance; pairs that
        the ``constraints`` already imply are never proposed. X and D are
        checked once here (float32 C-contiguous X is used without a copy);
        the regions, U_us, the medoids and U_os are C++ kernels run on
        OMP_NUM_THREADS (or all CPUs) threads, with results independent of it.
        """
        owner = "AmbiguityAwareSampler.propose_from"
        budget = check_int("budget", budget, low=0, owner=owner)
        if not isinstance(constraints, PairConstraints):
            raise TypeError(
                f"{owner}: 'constraints' must be PairConstraints; got {type(constraints).__name__}."
            )
        X = as_features(X, name="X", owner=owner)
        graph = as_distance_graph(D, name="D", owner=owner)
        if graph.n != X.shape[0]:
            raise ValueError(
                f"{owner}: 'D' must be ({X.shape[0]}, {X.shape[0]}) like the rows of 'X'; "
                f"got ({graph.n}, {graph.n})."
            )
        regions = uncertainty_regions(labels_a, labels_b)
        if len(regions.region) != X.shape[0]:
            raise ValueError(
                f"{owner}: 'labels_a' and 'labels_b' must have {X.shape[0]} entries like the "
                f"rows of 'X'; got {len(regions.region)}."
            )
        raw_a = np.asarray(labels_a, np.int64)
        if regions.n_regions == 0:
            return _empty("A and B agree everywhere: no region of uncertainty, nothing to ask.")
        threads = effective_threads(None, owner=owner)
        us, us_region, _ = _closest_inconsistent_pairs(X, regions, regions.region, threads)
        medoids = _region_medoids(X, regions.region, regions.n_regions, threads)
        os_pairs, os_sim = _overseg_pairs(X, medoids, graph, self.k_max, self.s_min, threads)
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
        pool = np.repeat(np.array(["us", "os"]), [len(us), len(os_pairs)])
        kind = np.concatenate([np.array(KINDS)[us_kind], np.full(len(os_pairs), "", "<U5")])
        region = np.concatenate([us_region, np.full(len(os_pairs), -1)]).astype(np.int64)
        pick = weighted_sample(prob, budget, rng)
        msg = (
            f"{len(pick)} of {m} candidate pairs ({len(us)} inside, {len(os_pairs)} across "
            f"{regions.n_regions} regions)"
        )
        if budget >= m:
            msg += ": the whole pool fits the budget"
        return PairProposal(pairs[pick], prob[pick], pool[pick], kind[pick], region[pick], m, msg)


def _empty(message: str) -> PairProposal:
    return PairProposal(
        np.empty((0, 2), np.int64),
        np.empty(0),
        np.empty(0, "<U2"),
        np.empty(0, "<U5"),
        np.empty(0, np.int64),
        0,
        message,
    )
