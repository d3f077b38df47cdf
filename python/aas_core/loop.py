"""The active loop on fixed embeddings.

One cycle: the two clusterings (DBSCAN on the k-reciprocal Jaccard distance,
FINCH on the same kNN graph) refined by NP3 with every answer so far → a
sampler proposes pairs within the cycle's budget → the oracle (a person, or
:class:`~aas_core.LabelOracle` in simulation) answers → the answers are
stored → NP3 refines again. The embeddings do not change between cycles here
(no training), so the kNN graph, the Jaccard distance and the two base
clusterings are computed once; only the refinement and the proposal run per
cycle. Training between cycles is the SpCL driver's job.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ._validation import check_float, check_int, check_option, effective_threads
from .cluster import closest_partition, dbscan, finch
from .cluster.eps import (
    AUTO_MAX_DISTANCE,
    EpsChoice,
    calibrated_eps,
    calibration_pairs,
    fit_eps,
)
from .constraints import PairConstraints
from .gpu import check_device
from .metrics import clustering
from .neighbors import knn_graph, normalize_rows
from .rerank import k_reciprocal_jaccard

__all__ = ["ActiveLoop", "ClusterState", "cluster_features"]


@dataclass(frozen=True, eq=False)
class ClusterState:
    """What the samplers read in a cycle: features, distances, both clusterings.

    Attributes
    ----------
    X : (n, d) float32, the embeddings with unit rows
    D : (n, n) scipy.sparse.csr_array float32, k-reciprocal Jaccard distances
        up to ``eps + 0.1`` (up to 0.85 with ``eps="auto"``; absent = 1)
    labels_a : (n,) int64, DBSCAN on D (-1 = outlier), before constraints
    labels_b : (n,) int64, the FINCH partition whose cluster count is closest
        to A's (outliers counted as singletons), before constraints
    seconds : dict, wall time of each stage
    graph : KNNGraph or None, the shared kNN graph (None when n < 3)
    eps : EpsChoice or None, the eps of A and where it came from
    finch : FinchResult or None, every FINCH level (with ``eps_from_answers``)
    min_samples : int
    eps_from_answers : bool, whether :meth:`refit` follows the answers
    """

    X: np.ndarray
    D: object
    labels_a: np.ndarray
    labels_b: np.ndarray
    seconds: dict
    graph: object = None
    eps: EpsChoice | None = None
    finch: object = None
    min_samples: int = 4
    eps_from_answers: bool = False

    def refit(self, constraints, *, n_threads=None) -> ClusterState:
        """This state with eps re-chosen from ``constraints`` (with ``eps_from_answers``;
        else self).

        DBSCAN runs again on the stored distances at the new eps and B is the
        stored FINCH level closest in count: milliseconds, no new graph.
        """
        if not self.eps_from_answers:  # set only with eps="auto", with every FINCH level kept
            return self
        choice = fit_eps(self.D, constraints, min_samples=self.min_samples, n_threads=n_threads)
        return self._at_eps(choice, n_threads=n_threads)

    def _calibrated(self, pairs, same, *, n_threads=None):
        """(this state at the eps that answers to near pairs drawn at random choose, the
        choice): :func:`~aas_core.cluster.calibrated_eps` with this state's eps as the
        fallback."""
        choice = calibrated_eps(
            self.D,
            self.graph,
            pairs,
            same,
            min_samples=self.min_samples,
            fallback=self.eps,
            n_threads=n_threads,
        )
        return self._at_eps(choice, n_threads=n_threads), choice

    def _at_eps(self, choice, *, n_threads=None) -> ClusterState:
        """This state with eps ``choice`` (an :class:`EpsChoice`): DBSCAN again on the stored
        distances and B the FINCH level closest in count (every level computed once from
        the graph when this state kept none); only the choice changes when eps does not."""
        if np.isclose(choice.eps, self.eps.eps):
            return dataclasses.replace(self, eps=choice)
        fin = self.finch if self.finch is not None else finch(self.graph, n_threads=n_threads)
        a = dbscan(self.D, eps=choice.eps, min_samples=self.min_samples, n_threads=n_threads)
        b = _finch_level(fin, a)
        return dataclasses.replace(self, labels_a=a, labels_b=b, eps=choice, finch=fin)


def _finch_level(fin, a) -> np.ndarray:
    """The FINCH partition closest in count to A's clusters + outliers."""
    target = int(a.max(initial=-1) + 1 + (a < 0).sum())
    return np.ascontiguousarray(fin.labels[:, closest_partition(fin, target)])


def _first_copies(X):
    """For each row, the first row exactly equal to it; None when all rows differ."""
    rows = np.ascontiguousarray(X).view(np.dtype((np.void, X.dtype.itemsize * X.shape[1])))
    _, first, inverse = np.unique(rows.ravel(), return_index=True, return_inverse=True)
    if len(first) == len(X):
        return None
    return first[inverse.ravel()]


def _as_one_point(D, first):
    """D where exact copies are one point: 0 between copies, and row i is the row of its
    first copy for every other image (``first`` from :func:`_first_copies`).

    A group of copies larger than k1 ties for every kNN slot; the kNN keeps the copies
    with the smallest indices, so the others share no k-reciprocal neighbourhood with
    them and sit at a distance from their own copies (DBSCAN called 10 of 40 identical
    rows noise). Copies of one embedding are one point, seen with its multiplicity.
    """
    keep = np.unique(first)  # the first copies, increasing
    group = np.full(len(first), -1, np.int64)
    group[keep] = np.arange(len(keep))
    members = np.argsort(group[first], kind="stable")  # rows by group, index order within
    count = np.bincount(group[first], minlength=len(keep))
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    sub = sp.csr_array(D)[keep]  # the first copies' rows ...
    r = np.repeat(np.arange(len(keep)), np.diff(sub.indptr))
    c = group[sub.indices]
    on = c >= 0  # ... between first copies (their diagonal zero included)
    r, c, v = r[on], c[on], sub.data[on]
    per = count[r] * count[c]  # each entry stands for every pair of their copies
    e = np.repeat(np.arange(len(v)), per)
    t = np.arange(int(per.sum())) - np.repeat(np.cumsum(per) - per, per)
    rows = members[start[r][e] + t // count[c][e]]
    cols = members[start[c][e] + t % count[c][e]]
    out = sp.csr_array((v[e], (rows, cols)), shape=D.shape)  # keeps the explicit zeros
    out.sort_indices()
    return out


def _check_eps(eps, owner):
    if isinstance(eps, str):
        if eps != "auto":
            raise ValueError(
                f"The 'eps' parameter of {owner} must be 'auto' or a float in (0, 1); got {eps!r}."
            )
        return eps
    return check_float("eps", eps, low=0.0, high=1.0, closed="neither", owner=owner)


def cluster_features(
    X,
    *,
    k1=30,
    k2=6,
    eps="auto",
    min_samples=4,
    constraints=None,
    eps_from_answers=False,
    n_threads=None,
    device="cpu",
) -> ClusterState:
    """kNN graph → Jaccard → DBSCAN (clustering A) and FINCH (clustering B), one shared graph.

    Parameters
    ----------
    X : (n, d) float array, n >= 2 (rows are L2-normalised, a copy if needed).
        Rows equal after normalisation are one point counted as many times:
        distance 0 between them, and each the first copy's distances to the
        others, so they always get one label in A (and clusters of copies are
        found however many copies there are).
    k1, k2 : int, SpCL's re-ranking neighbourhoods (k1 is capped at n - 1)
    eps : "auto" or float in (0, 1), DBSCAN radius on the Jaccard distance.
        "auto" (default): fitted to the data (:mod:`aas_core.cluster.eps`).
    min_samples : int >= 1
    constraints : PairConstraints or None, the answers so far (read only
        with ``eps_from_answers``)
    eps_from_answers : bool
        With ``eps="auto"``: re-choose eps to agree best with the answers
        (off by default: the sampled answers are a biased sample and moved
        eps the wrong way in our measurements, see
        :mod:`aas_core.cluster.eps`); the state then keeps every FINCH level
        so :meth:`ClusterState.refit` can follow later answers.
    n_threads : int or None
    device : {"cpu", "cuda"}
        Where the kNN graph, the Jaccard step and every FINCH level (first
        neighbours among cluster means, linking, means) run (see
        :mod:`aas_core.gpu`); DBSCAN runs on the CPU.

    Examples
    --------
    >>> import aas_core as aas
    >>> X, y = aas.datasets.make_reid_blobs(200, d=64, seed=0)
    >>> s = cluster_features(X, k1=20)
    >>> s.labels_a.shape, s.labels_b.shape
    ((200,), (200,))
    """
    owner = "cluster_features"
    check_device(device, owner)
    X = normalize_rows(X, owner=owner, min_rows=2, device=device)  # the CPU stages read it here
    n = len(X)
    threads = effective_threads(n_threads, owner=owner)
    eps = _check_eps(eps, owner)
    auto = eps == "auto"
    if not isinstance(eps_from_answers, (bool, np.bool_)):
        raise TypeError(
            f"The 'eps_from_answers' parameter of {owner} must be a bool; got {eps_from_answers!r}."
        )
    follow = bool(eps_from_answers) and auto
    k = min(check_int("k1", k1, low=2, owner=owner), n - 1)
    k2 = check_int("k2", k2, low=1, owner=owner)
    min_samples = check_int("min_samples", min_samples, low=1, owner=owner)
    seconds = {}
    t = time.perf_counter()
    copies = _first_copies(X)
    if n < 3:  # too small for a re-ranking: no pair within eps, FINCH joins the two
        D = sp.csr_array((np.zeros(n, np.float32), (np.arange(n), np.arange(n))), shape=(n, n))
        if copies is not None:
            D = _as_one_point(D, copies)
        choice = EpsChoice(0.6, "data", 0.6, None, "eps 0.6: too few images to fit it")
        if not auto:
            choice = EpsChoice(eps, "given")
        a = dbscan(D, eps=choice.eps, min_samples=min_samples, n_threads=threads)
        b = np.zeros(n, np.int64)
        return ClusterState(
            X, D, a, b, {"cluster": time.perf_counter() - t}, eps=choice, min_samples=min_samples
        )  # nothing to refit: FINCH has one level
    g = knn_graph(X, k, n_threads=threads, device=device)
    seconds["knn"] = time.perf_counter() - t
    t = time.perf_counter()
    # Clustering reads distances up to eps only; keep a margin for SpCL's eps + 0.02
    # (with "auto", up to the largest eps the fit may choose).
    reach = AUTO_MAX_DISTANCE if auto else min(1.0, eps + 0.1)
    D = k_reciprocal_jaccard(
        g, k1=k, k2=min(k2, k), max_distance=reach, n_threads=threads, device=device
    )
    if copies is not None:  # exact copies tie beyond k1: see _as_one_point
        D = _as_one_point(D, copies)
    seconds["jaccard"] = time.perf_counter() - t
    t = time.perf_counter()
    if auto:
        choice = fit_eps(
            D, constraints if follow else None, min_samples=min_samples, n_threads=threads
        )
    else:
        choice = EpsChoice(eps, "given", None, None, f"eps {eps:g} as given")
    a = dbscan(D, eps=choice.eps, min_samples=min_samples, n_threads=threads)
    seconds["dbscan"] = time.perf_counter() - t
    t = time.perf_counter()
    # B is the FINCH level closest in count to A (outliers as singletons); counts
    # fall level by level, so the levels below the first one at or under the
    # target cannot be closer and are not computed -- unless eps may change later.
    target = int(a.max(initial=-1) + 1 + (a < 0).sum())
    fin = finch(g, n_threads=threads, stop_at_clusters=None if follow else target, device=device)
    b = _finch_level(fin, a)
    seconds["finch"] = time.perf_counter() - t
    return ClusterState(
        X,
        D,
        a,
        b,
        seconds,
        g,
        eps=choice,
        finch=fin if follow else None,
        min_samples=min_samples,
        eps_from_answers=follow,
    )


class ActiveLoop:
    """Cycles of propose → ask → store → refine on fixed embeddings.

    Parameters
    ----------
    X : (n, d) float array, n >= 2
    sampler : a :class:`~aas_core.sampling.PairSampler` (AAS or a baseline)
    oracle : :class:`~aas_core.LabelOracle`, or anything with ``answer(pairs) -> bool array``;
        when it has ``y`` (the true identities) every record carries clustering scores
    budget_per_cycle : float in [0, 1] or int >= 0
        A float is a fraction of all n(n-1)/2 pairs (paper: 0.0002, i.e.
        0.02% per cycle); an int is a count of pairs.
    cycles : int >= 0
    seed : int or None
        Seed of the sampler's random draws (one Generator for the whole run).
    constraints : PairConstraints or None
        Answers known before the first cycle; the loop adds to this store and
        never removes anything from it.
    clusters : ClusterState or None
        The output of :func:`cluster_features` for ``X``, to share one
        clustering between several loops (as ``aas demo`` does).
    on_conflict : {"drop_oldest", "raise"}
        What NP3 does with contradictory answers (a noisy annotator): ignore
        the oldest answer of each contradiction in the refinement (the store
        keeps it), or raise.
    merge : {"auto", "clusters", "nearest"}
        What a must-link between two clusters merges in NP3 (see
        :func:`aas_core.np3`): whichever the answers so far support, chosen
        again every cycle (the default, :func:`aas_core.refine.choose_merge`;
        it also dissolves the clusters the answers show to be mixes,
        :func:`aas_core.refine.mixed_clusters`), the whole clusters (the
        paper's), or only between mutually nearest clusters (for coarse,
        impure clusterings).
    k1, k2, eps, min_samples, eps_from_answers, n_threads, device
        Passed to :func:`cluster_features` (an ``AmbiguityAwareSampler`` takes its
        own ``device`` for its closest-pair search). With ``eps="auto"`` (the default)
        eps is fitted to the data; with ``eps_from_answers`` it is also
        re-chosen before every cycle to agree best with the answers so far
        (:func:`aas_core.cluster.fit_eps`).
    calibrate : int >= 0
        Before the first proposal, ask this many near pairs drawn uniformly among
        the kNN edges and choose eps from their answers
        (:func:`aas_core.cluster.calibrated_eps`; needs ``eps="auto"``). They come
        out of the budget: the first cycle's sampler gets ``budget_per_cycle`` minus
        them (and the next cycles the rest, when they are more than one cycle's
        budget). 0 (default): the paper's loop, eps from the data alone.

    Attributes
    ----------
    records_ : list of dict, one per cycle after :meth:`run` (cycle 0 = before asking)
    labels_ : (n,) int64, clustering A refined with every answer after the last cycle
    clusters_ : ClusterState, the clustering of the last cycle (its ``eps`` says which)
    calibration_ : (pairs, answers) of the calibration, or None

    Examples
    --------
    >>> import aas_core as aas
    >>> X, y = aas.datasets.make_reid_blobs(300, d=64, seed=0)
    >>> loop = aas.ActiveLoop(X, aas.sampling.AmbiguityAwareSampler(), aas.LabelOracle(y),
    ...                       budget_per_cycle=20, cycles=2, seed=0, k1=20)
    >>> [r["cycle"] for r in loop.run()]
    [0, 1, 2]
    """

    def __init__(
        self,
        X,
        sampler,
        oracle,
        *,
        budget_per_cycle,
        cycles,
        seed=None,
        constraints=None,
        clusters=None,
        on_conflict="drop_oldest",
        merge="auto",
        k1=30,
        k2=6,
        eps="auto",
        min_samples=4,
        eps_from_answers=False,
        calibrate=0,
        n_threads=None,
        device="cpu",
    ):
        owner = "ActiveLoop"
        check_device(device, owner)
        self.X = normalize_rows(X, owner=owner, min_rows=2, device=device)
        n = len(self.X)
        if not hasattr(sampler, "propose_from"):
            raise TypeError(
                f"{owner}: 'sampler' must have a propose_from method; got {type(sampler).__name__}."
            )
        if not hasattr(oracle, "answer"):
            raise TypeError(
                f"{owner}: 'oracle' must have an answer method; got {type(oracle).__name__}."
            )
        y = getattr(oracle, "y", None)
        if y is not None and len(y) != n:
            raise ValueError(f"{owner}: the oracle knows {len(y)} images but 'X' has {n} rows.")
        total = n * (n - 1) // 2
        if isinstance(budget_per_cycle, (float, np.floating)):
            frac = check_float("budget_per_cycle", budget_per_cycle, low=0.0, high=1.0, owner=owner)
            self.budget = int(round(frac * total))
        else:
            self.budget = check_int("budget_per_cycle", budget_per_cycle, low=0, owner=owner)
        self.cycles = check_int("cycles", cycles, low=0, owner=owner)
        self.on_conflict = check_option(
            "on_conflict", on_conflict, ("drop_oldest", "raise"), owner=owner
        )
        self.merge = check_option("merge", merge, ("clusters", "nearest", "auto"), owner=owner)
        self.total_pairs = total
        self.sampler, self.oracle, self.seed = sampler, oracle, seed
        if constraints is None:
            constraints = PairConstraints(n=n)
        elif not isinstance(constraints, PairConstraints):
            raise TypeError(
                f"{owner}: 'constraints' must be PairConstraints or None; got "
                f"{type(constraints).__name__}."
            )
        elif int(constraints.pairs.max(initial=-1)) >= n:
            raise ValueError(
                f"{owner}: 'constraints' mention image {int(constraints.pairs.max())} but 'X' "
                f"has {n} rows."
            )
        self.constraints = constraints
        if clusters is not None:
            if not isinstance(clusters, ClusterState):
                raise TypeError(
                    f"{owner}: 'clusters' must be a ClusterState from cluster_features or None; "
                    f"got {type(clusters).__name__}."
                )
            if len(clusters.X) != n:
                raise ValueError(
                    f"{owner}: 'clusters' was computed for {len(clusters.X)} images but 'X' has "
                    f"{n} rows."
                )
        self.clusters = clusters
        self.calibrate = check_int("calibrate", calibrate, low=0, owner=owner)
        if self.calibrate:
            given = eps != "auto" or (
                clusters is not None and clusters.eps is not None and clusters.eps.source == "given"
            )
            if given or eps_from_answers or (clusters is not None and clusters.eps_from_answers):
                raise ValueError(
                    f"{owner}: 'calibrate' chooses eps from its answers, so it needs eps='auto' "
                    "(in 'clusters' too) and eps_from_answers=False."
                )
        self.calibration_ = None
        self._cluster_args = dict(
            k1=k1,
            k2=k2,
            eps=eps,
            min_samples=min_samples,
            eps_from_answers=eps_from_answers,
            n_threads=n_threads,
            device=check_device(device, owner),
        )

    def run(self, progress=None) -> list:
        """Runs the cycles; returns one record (a dict) per cycle, cycle 0 = before asking.

        ``progress``, if given, is called as ``progress(cycle, cycles)`` after each cycle.

        Record keys: cycle, pairs_asked (this cycle), pairs_total (so far),
        budget_used_pct (pairs_total as % of all n(n-1)/2 pairs), must_link,
        cannot_link (answers so far), dropped (answers NP3 ignored as
        contradictory), mixed_clusters (clusters of A that ``merge="auto"``
        dissolved, see :func:`aas_core.refine.mixed_clusters`), candidates (the
        sampler's pool), message, clusters
        (outliers counted as singletons), eps and eps_source (the DBSCAN
        radius of clustering A and "given", "data", "answers" or "calibrated"), seconds
        (per stage), and when the
        oracle knows the truth: pairwise_precision, pairwise_recall,
        pairwise_f1, ari, nmi of the refined clustering A.
        """
        from .refine import _np3, np3

        rng = np.random.default_rng(self.seed)
        state = self.clusters
        if state is None:
            state = cluster_features(self.X, constraints=self.constraints, **self._cluster_args)
        else:
            state = state.refit(self.constraints, n_threads=self._cluster_args["n_threads"])
        y = getattr(self.oracle, "y", None)
        records = []
        self._asked = 0

        def refined():
            t = time.perf_counter()
            a, dropped, mixed = _np3(
                state.labels_a,
                self.constraints,
                state.X,
                on_conflict=self.on_conflict,
                merge=self.merge,
                dissolve=None,
                return_dropped=True,
                n_threads=None,
                owner="np3",
                return_mixed=True,
            )
            b = np3(  # B keeps what A dissolves as mixed: AAS still sees the disagreement there
                state.labels_b,
                self.constraints,
                state.X,
                on_conflict=self.on_conflict,
                merge=self.merge,
                dissolve=False,
            )
            return a, b, len(dropped), len(mixed), time.perf_counter() - t

        a, b, dropped, mixed, t_np3 = refined()
        seconds = {} if self.clusters is not None else dict(state.seconds)
        records.append(
            self._record(0, 0, a, y, dropped, mixed, 0, "", {**seconds, "np3": t_np3}, state.eps)
        )
        debt = 0  # calibration answers still to be taken from the cycles' budgets
        for cycle in range(1, self.cycles + 1):
            n_cal, t_cal, cal_msg = 0, 0.0, ""
            if cycle == 1 and self.calibrate and state.graph is not None:
                t = time.perf_counter()
                state, n_cal, cal_msg = self._calibrated(state, rng)
                if n_cal:  # the sampler proposes from the clustering at the chosen eps
                    a, b = refined()[:2]
                debt = n_cal
                t_cal = time.perf_counter() - t
            budget = max(0, self.budget - debt)
            debt = max(0, debt - self.budget)
            t = time.perf_counter()
            prop = self.sampler.propose_from(
                state.X, a, b, state.D, self.constraints, budget, rng=rng, graph=state.graph
            )
            t_prop = time.perf_counter() - t
            t = time.perf_counter()
            answers = np.asarray(self.oracle.answer(prop.pairs), bool)
            t_ask = time.perf_counter() - t
            if len(prop.pairs):
                self.constraints.add(prop.pairs, answers)
            self._asked += len(prop.pairs)
            t = time.perf_counter()
            state = state.refit(self.constraints, n_threads=self._cluster_args["n_threads"])
            t_fit = time.perf_counter() - t
            a, b, dropped, mixed, t_np3 = refined()
            records.append(
                self._record(
                    cycle,
                    len(prop.pairs) + n_cal,
                    a,
                    y,
                    dropped,
                    mixed,
                    prop.n_candidates,
                    cal_msg + prop.message,
                    {
                        **({"calibrate": t_cal} if n_cal else {}),
                        "propose": t_prop,
                        "oracle": t_ask,
                        "eps_fit": t_fit,
                        "np3": t_np3,
                    },
                    state.eps,
                )
            )
            if progress is not None:
                progress(cycle, self.cycles)
        self.records_ = records
        self.labels_ = a
        self.clusters_ = state
        return records

    def _calibrated(self, state, rng):
        """Asks ``calibrate`` near pairs drawn uniformly and re-chooses eps from their answers.

        Returns (state, pairs asked, message). See :func:`aas_core.cluster.calibrated_eps`.
        """
        threads = self._cluster_args["n_threads"]
        pairs = calibration_pairs(state.graph, self.calibrate, rng, self.constraints)
        same = np.asarray(self.oracle.answer(pairs), bool).reshape(-1)
        if len(pairs):
            self.constraints.add(pairs, same)
        self._asked += len(pairs)
        self.calibration_ = (pairs, same)
        # the data's eps kept: labels as they are
        state, choice = state._calibrated(pairs, same, n_threads=threads)
        return state, len(pairs), f"calibration: {choice.message}; "

    def _record(
        self, cycle, n_pairs, labels, y, dropped, mixed, candidates, message, seconds, eps
    ) -> dict:
        ml = int(self.constraints.is_must_link.sum())
        rec = {
            "cycle": cycle,
            "pairs_asked": int(n_pairs),
            "pairs_total": int(self._asked),
            "budget_used_pct": 100.0 * self._asked / max(self.total_pairs, 1),
            "must_link": ml,
            "cannot_link": len(self.constraints) - ml,
            "dropped": int(dropped),
            "mixed_clusters": int(mixed),
            "candidates": int(candidates),
            "message": message,
            "clusters": int(len(np.unique(labels[labels >= 0])) + np.sum(labels < 0)),
            "eps": None if eps is None else round(eps.eps, 4),
            "eps_source": None if eps is None else eps.source,
            "seconds": {k: round(v, 4) for k, v in seconds.items()},
        }
        if y is not None:
            p, r, f = clustering.pairwise_scores(y, labels)
            rec.update(
                pairwise_precision=p,
                pairwise_recall=r,
                pairwise_f1=f,
                ari=clustering.ari(y, labels),
                nmi=clustering.nmi(y, labels),
            )
        return rec
