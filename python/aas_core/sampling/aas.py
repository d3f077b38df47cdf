"""Ambiguity-Aware Sampling (paper §3.1)."""

from __future__ import annotations

import functools

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
_SPLITS = ("fixed", "yield")
# the four kinds of question whose budget split="yield" shares (PairProposal.pool values)
_ARMS = ("us", "os", "check", "merge")


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
        split over the clusters by size (LBAS's positives). With
        ``split="yield"`` (default) the share of the first proposal only
        (default 0.2); 0 with ``split="fixed"``: the paper's sampler.
    merges : float in [0, 1)
        Share of the budget spent on merge questions: the closest pair between
        each of DBSCAN's clusters and its nearest clusters by mean direction,
        split over the clusters by size (LBAS's negatives); they ask the
        merges of two clusters both clusterings keep apart (two flanks of one
        animal, two bursts of photos). As ``checks`` (default 0.1). Whatever
        the AAS pool leaves of its share goes to these two as well.
    split : {"yield", "fixed"}
        How the budget is shared between U_us, U_os, the purity checks and the
        merge questions. "yield" (default): the first proposal uses ``eps``,
        ``checks`` and ``merges``; each later one gives each of the four its
        share by the *yield* of its pairs in the previous proposal, the share
        of their answers that contradicted DBSCAN's clustering when asked (a
        merge it missed, an image it misplaced), smoothed as (changed + 0.5) /
        (answered + 1) and normalised, each at least ``floor`` so that no kind
        of question goes unasked; what the AAS pool leaves goes to the better
        of the other two first. The sampler remembers its last proposal for
        this (forgotten when the number of images changes); a pair answered
        "can't tell", or not yet, does not count. "fixed": ``eps``, ``checks``
        and ``merges`` every time. Measured on the generator suite and both
        development sets, see ``benchmarks/README.md`` (``bench_defaults.py
        --aas-split``): on the members where the paper's sampler trails a
        baseline (many animals seen once, two or three photos per animal,
        bursts of near-duplicates) it leads or ties with the split.
    floor : float in [0, 0.25]
        With ``split="yield"``, the least share each of the four gets.
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
        checks=0.2,
        merges=0.1,
        split="yield",
        floor=0.05,
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
        if self.checks + self.merges >= 1.0:
            raise ValueError(
                f"{owner}: 'checks' + 'merges' must be < 1 (the rest is the AAS pool's); "
                f"got {self.checks} + {self.merges}."
            )
        self.split = check_option("split", split, _SPLITS, owner=owner)
        self.floor = check_float("floor", floor, low=0.0, high=0.25, owner=owner)
        self.shares_ = None  # the last proposal's shares (us, os, check, merge)
        self._last = None  # split="yield": what the last proposal asked (see _yields)

    @classmethod
    def paper(cls, **kwargs):
        """The paper's sampler: U_us and U_os alone at ε = 0.6, k_max = 5, s_min = 0.3, on
        region medoids (``overseg="regions"``), every proposal split the same way.
        ``kwargs`` override (e.g. ``overseg="cells"`` for our U_os)."""
        params = dict(eps=0.6, k_max=5, s_min=0.3, overseg="regions", checks=0.0, merges=0.0)
        return cls(**{**params, "split": "fixed", **kwargs})

    def get_state(self):
        """With ``split="yield"``: the last proposal's pairs, kinds and whether DBSCAN held
        each together (plain Python values), or None. See :meth:`PairSampler.get_state`."""
        last = self._last
        if last is None:
            return None
        return {
            "images": int(last["key"]),
            "pairs": last["pairs"].tolist(),
            "arm": last["arm"].tolist(),
            "together": last["together"].tolist(),
        }

    def set_state(self, state) -> None:
        """Restores :meth:`get_state`'s value (None forgets)."""
        owner = "AmbiguityAwareSampler.set_state"
        if state is None:
            self._last = None
            return
        try:
            pairs = np.asarray(state["pairs"], np.int64).reshape(-1, 2)
            arm = np.asarray(state["arm"], np.int64).reshape(-1)
            together = np.asarray(state["together"], bool).reshape(-1)
            images = int(state["images"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{owner}: not a state get_state returned ({exc}).") from None
        if not (len(pairs) == len(arm) == len(together)):
            raise ValueError(f"{owner}: 'pairs', 'arm' and 'together' differ in length.")
        if len(arm) and (arm.min() < -1 or arm.max() >= len(_ARMS)):
            raise ValueError(f"{owner}: 'arm' must hold -1..{len(_ARMS) - 1}.")
        self._last = {"key": images, "pairs": pairs, "arm": arm, "together": together}

    def __repr__(self) -> str:
        return (
            f"AmbiguityAwareSampler(eps={self.eps}, k_max={self.k_max}, s_min={self.s_min}, "
            f"overseg={self.overseg!r}"
            + f", checks={self.checks}, merges={self.merges}, split={self.split!r}"
            + (f", floor={self.floor}" if self.split == "yield" else "")
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
        said = ""
        if self.split == "yield":
            key = len(X)  # the same images (a new embedding of them keeps what was learnt)
            if self._last is None or self._last["key"] != key:
                self._last = None  # new data: nothing to learn from
            yields = _yields(self._last, constraints)
            shares = self._first_shares() if yields is None else _yield_shares(yields, self.floor)
            if yields is not None:
                said = "; split by yield " + ", ".join(
                    f"{a} {y:.2f}" for a, y in zip(_ARMS, yields)
                )
        else:
            shares = self._first_shares()
        self.shares_ = shares
        n_checks = int(round(shares[2] * budget))
        n_merges = int(round(shares[3] * budget))
        pool_budget = max(0, budget - n_checks - n_merges)
        pooled = shares[0] + shares[1]
        prop = self._propose_pool(
            X,
            labels_a,
            labels_b,
            D,
            constraints,
            pool_budget,
            rng=rng,
            graph=graph,
            eps=self.eps if self.split == "fixed" or pooled <= 0 else shares[1] / pooled,
        )
        threads = _threads(self.n_threads, owner="AmbiguityAwareSampler.propose_from")
        fills = [
            (functools.partial(_with_merges, threads=threads), n_merges, shares[3]),
            (_with_checks, n_checks, shares[2]),
        ]
        if self.split == "yield":  # what the pool leaves goes to the better yield first
            fills.sort(key=lambda f: -f[2])
        (fill1, _, share1), (fill2, n2, share2) = fills
        if share1:
            prop = fill1(prop, X, labels_a, constraints, budget - n2)
        if share2:
            prop = fill2(prop, X, labels_a, constraints, budget)
        if self.split == "yield":
            self._last = _asked(key, prop, labels_a)
            prop = PairProposal(
                prop.pairs,
                prop.prob,
                prop.pool,
                prop.kind,
                prop.region,
                prop.n_candidates,
                prop.message
                + said
                + " ("
                + ", ".join(f"{a} {s:.0%}" for a, s in zip(_ARMS, shares))
                + " of the budget)",
            )
        return prop

    def _first_shares(self):
        """(us, os, check, merge) shares from ``eps``, ``checks`` and ``merges``."""
        pool = 1.0 - self.checks - self.merges
        return np.array([pool * (1.0 - self.eps), pool * self.eps, self.checks, self.merges])

    def _propose_pool(self, X, labels_a, labels_b, D, constraints, budget, *, rng, graph, eps=None):
        """The paper's proposal: up to ``budget`` pairs from U = U_us ∪ U_os (``eps``: the
        U_os share of Eq. 6, by default the sampler's)."""
        eps = self.eps if eps is None else eps
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
        prob = aas_probabilities(us_region, us_kind, os_sim, vi, eps=eps, pi=self.pi)
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

    def sources(members, alloc):
        return [_fps_pairs(X, m, k) for m, k in zip(members, alloc)]

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


def _with_merges(prop, X, labels_a, constraints, budget, *, threads):
    """``prop`` filled up to ``budget`` with merge questions (pool "merge"): the closest
    pair between each of A's clusters and its nearest clusters (LBAS's negatives)."""
    from .baselines import _centroid_sims, _closest_to_nearest_clusters

    def sources(members, alloc):
        if len(members) < 2:
            return []
        return _closest_to_nearest_clusters(X, members, _centroid_sims(X, members), alloc, threads)

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
    of A's clusters, their shares)`` (one iterator of pair chunks per cluster, each
    cluster's share by its size)."""
    from .baselines import _allocate, _clusters, _fill

    chosen = dict.fromkeys(map(tuple, prop.pairs.tolist()))
    clusters = _clusters(labels_a)
    members = [clusters[c] for c in sorted(clusters)]
    want = budget - len(chosen)
    alloc = _allocate(want, [len(m) for m in members])
    sources = sources_of(members, alloc) if want > 0 and members else []
    if sources:
        _fill(sources, alloc, budget, constraints, chosen)
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


def _asked(key, prop, labels_a):
    """What split="yield" remembers of a proposal: each pair's arm (index into _ARMS, -1
    for another pool) and whether DBSCAN's clustering held its two images together."""
    i, j = prop.pairs[:, 0], prop.pairs[:, 1]
    arm = np.full(len(prop.pairs), -1, np.int64)
    for t, name in enumerate(_ARMS):
        arm[np.asarray(prop.pool) == name] = t
    together = (labels_a[i] == labels_a[j]) & (labels_a[i] >= 0)
    return {"key": key, "pairs": prop.pairs.copy(), "arm": arm, "together": together}


def _yields(last, constraints):
    """Per arm, the smoothed share of the last proposal's answered pairs whose answer
    contradicted DBSCAN's clustering when asked, (changed + 0.5) / (answered + 1); None
    when nothing of the last proposal is answered (or there is none)."""
    if last is None or not len(last["pairs"]) or not len(constraints):
        return None
    from ..constraints import _keys

    given = constraints.pairs
    same = constraints.is_must_link
    n = int(max(given.max(), last["pairs"].max())) + 1
    keys, q = _keys(given, n), _keys(last["pairs"], n)
    # the latest answer of a pair answered more than once
    order = np.argsort(keys, kind="stable")
    keys, same = keys[order], same[order]
    last_of = np.r_[keys[1:] != keys[:-1], True]
    keys, same = keys[last_of], same[last_of]
    at = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
    answered = (keys[at] == q) & (last["arm"] >= 0)
    if not answered.any():
        return None
    changed = answered & (same[at] != last["together"])
    arm = last["arm"][answered]
    n_ans = np.bincount(arm, minlength=len(_ARMS))
    n_chg = np.bincount(last["arm"][changed], minlength=len(_ARMS))
    return (n_chg + 0.5) / (n_ans + 1.0)


def _yield_shares(yields, floor):
    """Budget shares proportional to ``yields``, each at least ``floor``."""
    y = np.asarray(yields, np.float64)
    return floor + (1.0 - len(y) * floor) * y / y.sum()
