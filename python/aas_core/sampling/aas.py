"""Ambiguity-Aware Sampling (paper §3.1)."""

from __future__ import annotations

import numpy as np

from .._validation import as_distance_graph, check_float, check_int, check_option
from .._validation import effective_threads as _threads
from ..gpu import check_device
from .base import PairProposal, PairSampler, neighbour_rows
from .cells import cell_medoids, cells, linked_cell_pairs, nearest_cell_pairs
from .distribution import KINDS, aas_probabilities, region_variation_of_information, weighted_sample
from .pools import _closest_inconsistent_pairs, _overseg_pairs, _region_medoids
from .regions import uncertainty_regions

__all__ = ["AmbiguityAwareSampler", "PairProposal"]

_OVERSEG = ("cells", "regions")


class AmbiguityAwareSampler(PairSampler):
    """Proposes the pairs that resolve the most disagreement between two clusterings.

    The pool U = U_us ∪ U_os (paper §3.1 A–D):

    - U_us (under-segmentation, inside the regions of uncertainty where A and
      B disagree): for every two clusters of A (or of B) in a region that share
      a cluster of the other clustering, their closest pair of images, kept when
      the two images are together in exactly one of A and B (Eqs. 1–3).
    - U_os (over-segmentation): with ``overseg="cells"`` (default, our
      refinement) pairs between *cells*, the groups both clusterings keep
      together: cells linked by a Jaccard similarity ≥ ``s_min`` (their closest
      such pair) and every cell with its ``k_max`` nearest cells by mean
      direction among those the kNN graph connects it to (their medoids). With
      ``overseg="regions"``, the paper as we read it: one medoid
      per region, paired with its ``k_max`` nearest region medoids when their
      Jaccard similarity is ≥ ``s_min``. See :mod:`aas_core.sampling.cells`
      for why cells (measured: the region reading leaves AAS behind every
      baseline after a few cycles on make_reid_blobs).

    Pairs are drawn without replacement from P(Y) = ε·P(Y | U_os) + (1−ε)·P(Y
    | U_us) (Eq. 6; the factors π, ρ, ω are defined in
    :mod:`aas_core.sampling.distribution`). When |U| ≤ budget all of U is
    proposed, so AAS may spend less than its budget; when A and B agree
    everywhere nothing is proposed. Pairs the answers already imply are never
    proposed.

    Parameters
    ----------
    eps : float in [0, 1]
        Share of the U_os (over-segmentation) pool in Eq. 6 (paper: 0.6).
    k_max : int >= 1
        Nearest partners per cell (or region medoid) in U_os (paper: 5).
    s_min : float in [0, 1]
        Minimum Jaccard similarity 1 - d of a linked U_os pair (paper: 0.3).
    pi : None or 3 weights
        Weights of the pair types β1 (inlier–inlier), β2 (inlier–outlier), β3
        (outlier–outlier) in U_us; None: uniform over the types present.
    overseg : {"cells", "regions"}
        How U_os is built (see above).
    checks : float in [0, 1)
        Share of the budget spent on purity checks of DBSCAN's clusters, which
        no disagreement between A and B reaches when both hold the same wrong
        image: (medoid, member) pairs in farthest-point order from the medoid,
        split over the clusters by size (LBAS's positives). The checks also
        take whatever the AAS pool leaves of its share. 0 (default): the
        paper's sampler. Measured on the generator suite, see
        ``benchmarks/README.md`` (``bench_defaults.py --aas-checks``).
    merges : float in [0, 1)
        Share of the budget spent on merge questions: the closest pair between
        each of DBSCAN's clusters and its nearest clusters by mean direction,
        split over the clusters by size (LBAS's negatives); they ask the
        merges of two clusters both clusterings keep apart (two flanks of
        one animal, two bursts of photos). They also take whatever the AAS
        pool leaves of its share; the checks come after them. 0 (default):
        the paper's sampler (``bench_defaults.py --aas-merges``).
    n_threads : int or None
    device : {"cpu", "cuda"}
        Where the U_us closest-pair search runs (the costly part of a proposal;
        see :mod:`aas_core.gpu`). "cuda" returns exactly the CPU's pairs, so the
        proposals are the same.

    Examples
    --------
    >>> import aas_core as aas
    >>> X, y = aas.datasets.make_reid_blobs(300, d=64, seed=0)
    >>> s = aas.cluster_features(X, k1=20)
    >>> p = AmbiguityAwareSampler().propose_from(
    ...     s.X, s.labels_a, s.labels_b, s.D, aas.PairConstraints(), 10, rng=0, graph=s.graph)
    >>> len(p), sorted(set(p.pool.tolist())) <= ["os", "us"]
    (10, True)
    """

    def __init__(
        self,
        eps=0.6,
        k_max=5,
        s_min=0.3,
        pi=None,
        overseg="cells",
        n_threads=None,
        device="cpu",
        checks=0.0,
        merges=0.0,
    ):
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
        self.overseg = check_option("overseg", overseg, _OVERSEG, owner=owner)
        _threads(n_threads, owner=owner)  # fail early on a bad value
        self.n_threads = n_threads
        self.device = check_device(device, owner)
        self.checks = check_float("checks", checks, low=0.0, high=1.0, closed="left", owner=owner)
        self.merges = check_float("merges", merges, low=0.0, high=1.0, closed="left", owner=owner)

    def __repr__(self) -> str:
        return (
            f"AmbiguityAwareSampler(eps={self.eps}, k_max={self.k_max}, s_min={self.s_min}, "
            f"overseg={self.overseg!r}"
            + (f", checks={self.checks}" if self.checks else "")
            + (f", merges={self.merges}" if self.merges else "")
            + (f", device={self.device!r})" if self.device != "cpu" else ")")
        )

    def propose_from(
        self, X, labels_a, labels_b, D, constraints, budget, *, rng, graph=None
    ) -> PairProposal:
        """Proposal from one cycle's state (A: DBSCAN, -1 = outlier; B: FINCH; both
        refined by NP3). See :meth:`PairSampler.propose_from`."""
        X, labels_a, labels_b, D, budget, rng = self._checked(
            X, labels_a, labels_b, D, constraints, budget, rng, need=("labels_a", "labels_b", "D")
        )
        if budget == 0:
            return PairProposal.empty("budget 0: nothing to ask.")
        n_checks = int(round(self.checks * budget))
        n_merges = int(round(self.merges * budget))
        pool_budget = max(0, budget - n_checks - n_merges)
        prop = self._propose_pool(
            X, labels_a, labels_b, D, constraints, pool_budget, rng=rng, graph=graph
        )
        if self.merges:
            prop = _with_merges(prop, X, labels_a, constraints, budget - n_checks)
        if not self.checks:
            return prop
        return _with_checks(prop, X, labels_a, constraints, budget)

    def _propose_pool(self, X, labels_a, labels_b, D, constraints, budget, *, rng, graph):
        """The paper's proposal: up to ``budget`` pairs from U = U_us ∪ U_os."""
        owner = "AmbiguityAwareSampler.propose_from"
        if budget == 0:
            return PairProposal.empty("budget 0: nothing to ask.")
        regions = uncertainty_regions(labels_a, labels_b)
        if regions.n_regions == 0:
            return PairProposal.empty(
                "A and B agree everywhere: no region of uncertainty, nothing to ask."
            )
        threads = _threads(self.n_threads, owner=owner)
        dist = as_distance_graph(D, name="D", owner=owner)

        neighbours = neighbour_rows(X, graph)[0]
        us, us_region, _ = _closest_inconsistent_pairs(
            X, regions, regions.region, threads, device=self.device, owner=owner
        )
        # A closest pair whose images are not within each other's k nearest
        # neighbours marks no boundary: the two clusters do not touch, and the
        # question is not ambiguous (measured on make_reid_blobs(10000): such
        # pairs are 24% of U_us in the first cycle with a third of them
        # positive, and 87% later with none positive).
        touch = _knn_edges(us, neighbours)
        us, us_region = us[touch], us_region[touch]
        if self.overseg == "regions":
            medoids = _region_medoids(X, regions.region, regions.n_regions, threads)
            os_pairs, os_sim = _overseg_pairs(X, medoids, dist, self.k_max, self.s_min, threads)
            os_kind = np.full(len(os_pairs), "medoids")
        else:
            cell, n_cells = cells(regions.labels_a, regions.labels_b)
            medoids, dirs = cell_medoids(X, cell, n_cells, threads)
            linked, linked_sim = linked_cell_pairs(cell, dist, self.s_min)
            near, near_sim = nearest_cell_pairs(
                cell, medoids, dirs, neighbours, constraints, self.k_max, threads
            )
            os_pairs = np.concatenate([linked, near]).reshape(-1, 2)
            os_sim = np.concatenate([linked_sim, near_sim])
            os_kind = np.repeat(np.array(["linked", "nearest"]), [len(linked), len(near)])
            _, first = np.unique(_pair_keys(os_pairs), return_index=True)
            first = np.sort(first)  # a pair found both ways is one candidate, "linked"
            os_pairs, os_sim, os_kind = os_pairs[first], os_sim[first], os_kind[first]

        keep_us = ~constraints.is_known(us) if len(us) else np.zeros(0, bool)
        keep_os = ~constraints.is_known(os_pairs) if len(os_pairs) else np.zeros(0, bool)
        us, us_region = us[keep_us], us_region[keep_us]
        os_pairs, os_sim, os_kind = os_pairs[keep_os], os_sim[keep_os], os_kind[keep_os]
        outlier = labels_a < 0
        us_kind = outlier[us[:, 0]].astype(np.int64) + outlier[us[:, 1]]
        vi = region_variation_of_information(
            regions.region, regions.labels_a, regions.labels_b, regions.n_regions
        )
        prob = aas_probabilities(us_region, us_kind, os_sim, vi, eps=self.eps, pi=self.pi)
        pairs = np.concatenate([us, os_pairs]).astype(np.int64).reshape(-1, 2)
        if len(pairs) == 0:
            return PairProposal.empty(
                f"{regions.n_regions} region(s) of uncertainty, but every candidate pair is "
                "already answered or implied by the answers."
            )
        pool = np.repeat(np.array(["us", "os"]), [len(us), len(os_pairs)])
        kind = np.concatenate([np.array(KINDS)[us_kind], os_kind.astype("<U7")])
        region = np.concatenate([us_region, np.full(len(os_pairs), -1)]).astype(np.int64)
        # A pair in both pools is one candidate; its marginal P(Y) (Eq. 6) is the
        # sum of its two terms. It keeps its U_us description (listed first).
        _, first, inverse = np.unique(_pair_keys(pairs), return_index=True, return_inverse=True)
        if len(first) < len(pairs):
            inverse = inverse.ravel()
            prob = np.bincount(inverse, weights=prob)
            keep = np.sort(first)
            prob = prob[inverse[keep]]
            pairs, pool, kind, region = pairs[keep], pool[keep], kind[keep], region[keep]
        m = len(pairs)
        pick = weighted_sample(prob, budget, rng)
        n_us = int((pool == "us").sum())
        msg = (
            f"{len(pick)} of {m} candidate pairs ({n_us} inside {regions.n_regions} regions of "
            f"uncertainty, {m - n_us} for over-segmentation)"
        )
        if budget >= m:
            msg += ": the whole pool fits the budget"
        return PairProposal(pairs[pick], prob[pick], pool[pick], kind[pick], region[pick], m, msg)


def _with_checks(prop, X, labels_a, constraints, budget):
    """``prop`` filled up to ``budget`` with purity checks of A's clusters (pool "check")."""
    from .baselines import _fps_pairs

    def sources(members):
        return [_fps_pairs(X, m) for m in members]

    return _filled(
        prop,
        labels_a,
        constraints,
        budget,
        sources,
        "check",
        "purity",
        "purity checks of DBSCAN's clusters",
    )


def _with_merges(prop, X, labels_a, constraints, budget):
    """``prop`` filled up to ``budget`` with merge questions (pool "merge"): the closest
    pair between each of A's clusters and its nearest clusters (LBAS's negatives)."""
    from .baselines import _centroid_sims, _closest_to_nearest_clusters

    def sources(members):
        if len(members) < 2:
            return []
        csim = _centroid_sims(X, members)
        return [_closest_to_nearest_clusters(X, members, t, csim[t]) for t in range(len(members))]

    return _filled(
        prop,
        labels_a,
        constraints,
        budget,
        sources,
        "merge",
        "merge",
        "merge questions between DBSCAN's nearest clusters",
    )


def _filled(prop, labels_a, constraints, budget, sources_of, pool, kind, what):
    """``prop`` filled up to ``budget`` with new, unknown pairs from ``sources_of(members
    of A's clusters)`` (one iterator per cluster, each cluster's share by its size)."""
    from .baselines import _allocate, _clusters, _fill

    chosen = {(int(i), int(j)): None for i, j in prop.pairs}
    clusters = _clusters(labels_a)
    members = [clusters[c] for c in sorted(clusters)]
    want = budget - len(chosen)
    sources = sources_of(members) if want > 0 and members else []
    if sources:
        _fill(sources, _allocate(want, [len(m) for m in members]), budget, constraints, chosen)
    extra = np.array(list(chosen)[len(prop.pairs) :], np.int64).reshape(-1, 2)
    if not len(extra):
        return prop
    m = len(extra)
    return PairProposal(
        np.concatenate([prop.pairs, extra]).astype(np.int64),
        np.concatenate([prop.prob, np.full(m, np.nan)]),
        np.concatenate([prop.pool, np.full(m, pool)]),
        np.concatenate([prop.kind, np.full(m, kind)]),
        np.concatenate([prop.region, np.full(m, -1, np.int64)]),
        prop.n_candidates,
        f"{prop.message}; {m} {what}",
    )


def _pair_keys(pairs):
    return pairs[:, 0].astype(np.int64) * (int(pairs.max(initial=0)) + 1) + pairs[:, 1]


def _knn_edges(pairs, neighbours):
    """(m,) bool: j is among the neighbours of i, or i among those of j."""
    if not len(pairs) or neighbours.shape[1] == 0:
        return np.zeros(len(pairs), bool)
    i, j = pairs[:, 0], pairs[:, 1]
    return (neighbours[i] == j[:, None]).any(axis=1) | (neighbours[j] == i[:, None]).any(axis=1)
