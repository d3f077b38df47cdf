"""NP3: refine any partition with must-link / cannot-link answers.

The non-parametric, plug-and-play refinement of the paper (§3.1 E, Fig. 2):
merge the clusters that a must-link (ML) joins, then purify every merged
cluster that holds a cannot-link (CL) by colouring its conflict graph and
matching the colour classes to sub-clusters. The work is done in C++
(``aas_core._core.np3``); this module validates the input and resolves
inconsistent answers.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from . import _core
from ._base import Estimator
from ._validation import as_features, check_option, effective_threads
from .constraints import PairConstraints

__all__ = ["ConstrainedClustering", "choose_merge", "dropped_answers", "mixed_clusters", "np3"]

_ON_CONFLICT = ("raise", "drop_oldest")
_MERGE = ("clusters", "nearest", "auto")
# merge="auto": "nearest" when fewer than this share of the answered pairs inside one
# cluster are "same" (and at least _AUTO_MIN_ANSWERS such answers exist)
_AUTO_PURITY = 0.94
_AUTO_MIN_ANSWERS = 20
# merge="auto": a cluster in which fewer than this share of its (at least
# _AUTO_MIN_ANSWERS) inside answers are "same" is a mix of individuals and is dissolved
_MIXED_SHARE = 0.1


def np3(
    labels,
    constraints,
    X,
    *,
    on_conflict="raise",
    merge="clusters",
    dissolve=None,
    graph=None,
    keep_together=False,
    return_dropped=False,
    n_threads=None,
):
    """Refines a clustering so that it satisfies every pair constraint (NP3).

    Follows the paper's §3.1 E and Fig. 2:

    1. Check the constraints: a cannot-link (CL) inside one must-link (ML)
       closure is a conflict, handled as ``on_conflict`` says.
    2. Merge all clusters joined by an ML pair; an outlier (-1) is a cluster
       of its own.
    3. A merged cluster that holds a CL pair is impure. Inside it, ML groups
       are the ML closures (an unconstrained point is a group of one); the
       conflict graph has the ML groups as nodes and the CL pairs as edges;
       its connected components with an edge are the CL groups.
    4. Each CL group is coloured (DSatur; for groups of up to 64 ML groups
       where DSatur may have used too many colours, an exact search of at
       most 20,000 steps). The group with the most colours opens one
       sub-cluster per colour. The other groups, in decreasing colour count
       (ties: more points, then the canonically first), map their colour
       classes one-to-one onto sub-clusters by Hungarian matching on the
       cosine distance between the class's mean direction and the
       sub-cluster's; each matched class then joins its sub-cluster's mean,
       so later groups see it. A sub-cluster's mean is thus the mean of the
       unit rows of the constrained points placed in it.
    5. Every other ML group of the impure cluster, and every unconstrained
       point, moves as one unit to the sub-cluster whose mean direction is
       nearest (largest cosine) to the unit's mean, ties to the first
       sub-cluster opened. These units do not move the sub-cluster means, so
       each is decided on its own.

    Parameters
    ----------
    labels : (n,) int array
        Any partition; -1 marks an outlier (unassigned, its own singleton).
    constraints : PairConstraints
        The answers. Never modified.
    X : (n, d) float array
        Features, one row per point (L2-normalised on the fly for the cosine;
        float64 is converted to float32, a copy; never written). Only the rows
        of impure clusters are used, but all must be finite and non-zero.
    on_conflict : {"raise", "drop_oldest"}
        What to do with inconsistent answers. "raise": a ValueError naming a
        conflicting cycle, that is a CL pair and the ML path joining its ends,
        with their answer rows (row numbers of ``constraints.pairs``).
        "drop_oldest": while a conflict remains, take the one whose CL answer
        is oldest, and ignore for this refinement the oldest answer of its
        cycle (the CL and the shortest ML path that
        :meth:`PairConstraints.conflicts` reports). The store keeps every
        answer.
    merge : {"clusters", "nearest", "auto"}
        What a must-link between two clusters merges. "clusters" (the
        paper's): the two whole clusters (step 2). "nearest", for coarse,
        impure clusterings: the two whole clusters only when each is the
        other's nearest cluster (largest cosine between the mean directions
        of their unit rows); otherwise the two answered images, with every
        image must-linked to them, leave their clusters together and the
        rest of both clusters stays where it was. With "clusters", one
        answer between two impure clusters moves all their members, and
        answers chain such clusters into a few giant ones: on
        ``make_reid_blobs(4000)``, FINCH's first partition (pairwise F1
        0.53, 79% of its same-cluster pairs right) refined with three AAS
        cycles of answers falls to F1 0.51 with "clusters" and rises to
        0.92 with "nearest". On an already pure clustering (DBSCAN there)
        "clusters" is a little better (0.990 vs 0.978 after three cycles):
        choose by how pure the clusters are. "auto" does that from the
        answers: see :func:`choose_merge`. (Held-out answers cannot choose
        for you: the pairs a sampler asks about are mostly "same", and
        predicting them favours merging whole clusters either way.) "auto"
        also dissolves the clusters that their answers show to be mixes of
        individuals (see ``dissolve``).
    dissolve : bool or None
        Whether the clusters of :func:`mixed_clusters` (at least 20 answers
        inside, fewer than 10% "same") are dissolved first: their images
        become outliers, so only the answers regroup them. None (default):
        with ``merge="auto"`` only. ``ActiveLoop`` dissolves in the
        clustering it reports (A) but not in the second one (B), which
        keeps grouping those images so that AAS still sees where the two
        disagree.
    graph : KNNGraph or None
        With a kNN graph of X (e.g. ``cluster_features(X).graph``), step 5
        follows the graph instead of the centroids: inside each impure
        cluster, the graph's edges are taken from the most to the least
        similar and join two parts unless both hold constrained points of
        different sub-clusters (a seeded single linkage, in C++), so an
        unconstrained point joins the sub-cluster it reaches through its most
        similar chain of neighbours; a part that reaches none (no edge of the
        graph leads from it to a constrained point of its cluster) becomes a
        cluster of its own. A cluster that answers split then splits where the
        graph is thinnest, not along a plane between centroids. Steps 1-4 and
        the guarantees are unchanged.
    keep_together : bool
        Instead of step 5, every unconstrained point of an impure cluster (with
        its must-link closure) stays with the sub-cluster that holds most of
        its constrained points (ties: the smaller label): only the answered
        points move. For embeddings that do not separate the individuals,
        where neither the centroids nor the graph say where a point belongs.
        Not together with ``graph``.
    return_dropped : bool
        Also return the rows of the answers that were ignored.
    n_threads : int or None
        Threads (None: OMP_NUM_THREADS or all CPUs). Results do not depend on it.

    Returns
    -------
    labels : (n,) int64
        The refined labels (a new array). A refined cluster made of all the
        points of one input cluster, plus possibly outliers, keeps that
        cluster's label: clusters touched by no constraint are unchanged
        (with ``merge="auto"``, except the mixed clusters it dissolves), and
        an outlier that joins a cluster by must-link takes its label. An
        outlier touched by no constraint stays -1. Every other cluster (merges
        of several clusters, parts of a split, outliers joined together, an
        outlier with only cannot-links) gets a fresh label ``max(labels) + 1``,
        ``+ 2``, ... in order of its smallest row index. Applying np3 again
        with the same constraints returns the same labels.
    dropped : (k,) int64
        Only with ``return_dropped``: rows of ``constraints.pairs`` that were
        ignored, in the order they were dropped (empty unless "drop_oldest"
        met a conflict).

    Notes
    -----
    Guarantees, for any labels and any consistent constraints: every ML pair
    ends in one cluster and every CL pair in two; clusters that hold no
    constrained point are unchanged; the partition does not depend on the
    order of the rows or of the constraint answers (labels aside). For that,
    every tie (which node DSatur colours next, which CL group comes first,
    equal matching costs) is broken by a canonical order of the points: their
    feature rows compared lexicographically, the row index deciding only
    between identical rows. Sums run in that order too, in double precision.

    Cost: one pass over X to check it, O(n + m) bookkeeping for m answers,
    and O(p·q·d) for the p points of impure clusters with q sub-clusters.

    Examples
    --------
    >>> import numpy as np, aas_core as aas
    >>> X = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.8, 0.3]], dtype=np.float32)
    >>> labels = np.array([0, 0, 0, 0, -1])  # 0-1 and 2-3 are wrongly merged
    >>> c = aas.PairConstraints(must_link=[[4, 0]], cannot_link=[[0, 2]])
    >>> aas.np3(labels, c, X).tolist()
    [1, 1, 2, 2, 1]
    """
    return _np3(
        labels,
        constraints,
        X,
        on_conflict=on_conflict,
        merge=merge,
        dissolve=dissolve,
        graph=graph,
        keep_together=keep_together,
        return_dropped=return_dropped,
        n_threads=n_threads,
        owner="np3",
    )


def _np3(
    labels,
    constraints,
    X,
    *,
    on_conflict,
    merge,
    dissolve,
    return_dropped,
    n_threads,
    owner,
    graph=None,
    keep_together=False,
    return_mixed=False,
):
    """np3; with ``return_mixed`` (for the callers that report it) returns (labels,
    dropped, the labels of the clusters dissolved as mixed)."""
    check_option("on_conflict", on_conflict, _ON_CONFLICT, owner=owner)
    check_option("merge", merge, _MERGE, owner=owner)
    if dissolve is not None and not isinstance(dissolve, (bool, np.bool_)):
        raise TypeError(
            f"The 'dissolve' parameter of {owner} must be True, False or None; got {dissolve!r}."
        )
    if not isinstance(constraints, PairConstraints):
        raise TypeError(
            f"{owner}: 'constraints' must be a PairConstraints; got {type(constraints).__name__}."
        )
    threads = effective_threads(n_threads, owner=owner)
    # Finiteness and zero rows are checked in C++ in one pass over X: a numpy
    # check allocates n·d booleans (0.2 GB at 100k × 2048) and costs as much
    # as the refinement itself.
    X = as_features(X, name="X", owner=owner, check_finite=False)
    n = X.shape[0]
    lab = _as_labels(labels, n, owner)
    if graph is not None:
        graph = _check_graph(graph, n, owner)
    if not isinstance(keep_together, (bool, np.bool_)):
        raise TypeError(
            f"The 'keep_together' parameter of {owner} must be True or False; got "
            f"{keep_together!r}."
        )
    if keep_together and graph is not None:
        raise ValueError(f"{owner}: give 'graph' or 'keep_together', not both.")
    pairs = constraints.pairs
    is_ml = constraints.is_must_link
    if constraints.n is not None and constraints.n != n:
        raise ValueError(
            f"{owner}: 'constraints' were made for n={constraints.n} images, but X and "
            f"labels have {n} rows."
        )
    if len(pairs) and pairs.max() >= n:
        row = int(np.argmax(pairs.max(axis=1) >= n))
        i, j = pairs[row]
        raise ValueError(
            f"{owner}: 'constraints' answer {row} pairs ({i}, {j}), but X and labels have "
            f"only {n} rows (indices must be in [0, {n})."
        )
    dropped = np.empty(0, np.int64)
    if len(pairs) and on_conflict == "raise":
        found = constraints.conflicts()
        if found:
            raise ValueError(_conflict_message(pairs, found, owner))
    elif len(pairs):
        dropped = _drop_oldest(pairs, is_ml)
    keep = np.ones(len(pairs), bool)
    keep[dropped] = False
    ml = np.ascontiguousarray(pairs[keep & is_ml])
    cl = np.ascontiguousarray(pairs[keep & ~is_ml])
    mixed = np.empty(0, np.int64)
    if merge == "auto" if dissolve is None else dissolve:
        mixed = _mixed(lab, pairs[keep], is_ml[keep], X, threads)
        lab = _as_outliers(lab, mixed)
    if merge == "auto":
        merge = _choose(lab, pairs[keep], is_ml[keep])
    if merge == "nearest" and len(ml):
        lab = _nearest_merges_only(lab, ml, X, threads)
    out = _core.np3(lab, X, ml, cl, threads)
    if (graph is not None or keep_together) and len(cl):
        out = _place_free_points(lab, X, ml, cl, out, graph, threads)
    if return_mixed:
        return out, dropped, mixed
    return (out, dropped) if return_dropped else out


def choose_merge(labels, constraints, X=None) -> str:
    """The NP3 ``merge`` mode the answers support: "clusters" or "nearest".

    The answers inside one cluster of ``labels`` (both images in the same cluster,
    not an outlier; the clusters of :func:`mixed_clusters` set aside, judged with
    the features ``X`` when given, as ``np3`` does) say how pure
    the clusters are: when at least 20 of them exist and at least 94% are "same",
    whole clusters merge as in the paper ("clusters"). Otherwise a must-link moves
    only the answered images unless their two clusters are each other's nearest
    ("nearest"): a whole-cluster merge moves many images nobody looked at, so it
    waits for answers that show the clusters are pure. This is what
    ``np3(merge="auto")`` uses.

    Measured (pairwise F1 after the last cycle, "clusters" / "nearest"; the choice
    in bold): ``make_reid_blobs(4000)`` with DBSCAN, AAS 3 cycles of 0.02%: share
    0.96, **0.978** / 0.971; FINCH's first partition with NIS: share 0.91,
    0.552 / **0.838**; the lion crops' ImageNet features, 5 cycles of 0.5%: share
    0.01--0.02, AAS 0.055 / **0.058**, NIS 0.087 / **0.096** (means of 3 seeds,
    before :func:`mixed_clusters` dissolved anything). The threshold was set on
    these cases. The share depends on which pairs a sampler asks: biased low
    where it asks about ambiguous images (AAS: 0.96 against NIS's 0.98 on the
    same clustering), high for GBAS, whose inside answers on FINCH's impure
    first partition are 97--99% "same", so "auto" keeps the paper's merge and
    GBAS falls from F1 0.53 to 0.40 there before the share drops below 94%.

    Examples
    --------
    >>> import numpy as np, aas_core as aas
    >>> c = aas.PairConstraints()
    >>> c.add([(0, 1), (0, 2)], [False, False])
    2
    >>> aas.refine.choose_merge(np.zeros(3, int), c)  # two answers: too few to show purity
    'nearest'
    """
    lab, pairs, is_ml = _labels_and_answers(labels, constraints, "choose_merge")
    X = _features_of(X, len(lab), "choose_merge")
    return _choose(_as_outliers(lab, _mixed(lab, pairs, is_ml, X)), pairs, is_ml)


def dropped_answers(constraints) -> np.ndarray:
    """Rows of ``constraints.pairs`` that ``np3(on_conflict="drop_oldest")`` ignores.

    While a cannot-link lies inside a must-link closure, the oldest answer of
    that cycle (the cannot-link and the shortest must-link path between its
    ends) is set aside; the rest is consistent. Returns the rows in the order
    they were dropped, (k,) int64 (empty for consistent answers).

    Examples
    --------
    >>> import aas_core as aas
    >>> c = aas.PairConstraints()
    >>> c.add([(0, 1), (1, 2), (0, 2)], [True, True, False])
    3
    >>> aas.refine.dropped_answers(c).tolist()  # the oldest of the cycle: 0 ~ 1
    [0]
    """
    if not isinstance(constraints, PairConstraints):
        raise TypeError(
            "dropped_answers: 'constraints' must be a PairConstraints; got "
            f"{type(constraints).__name__}."
        )
    if not len(constraints.pairs):
        return np.empty(0, np.int64)
    return _drop_oldest(constraints.pairs, constraints.is_must_link)


def _features_of(X, n, owner):
    """``X`` checked as (n, d) features for the public helpers (None stays None)."""
    if X is None:
        return None
    X = as_features(X, name="X", owner=owner)
    if X.shape[0] != n:
        raise ValueError(f"{owner}: 'X' has {X.shape[0]} rows, but 'labels' has {n} entries.")
    return X


def _labels_and_answers(labels, constraints, owner):
    if not isinstance(constraints, PairConstraints):
        raise TypeError(
            f"{owner}: 'constraints' must be a PairConstraints; got {type(constraints).__name__}."
        )
    lab = _as_labels(labels, len(np.asarray(labels)), owner)
    pairs = constraints.pairs
    if len(pairs) and pairs.max() >= len(lab):
        raise ValueError(
            f"{owner}: 'constraints' hold an image index {int(pairs.max())}, but 'labels' "
            f"has {len(lab)} entries."
        )
    return lab, pairs, constraints.is_must_link


def mixed_clusters(labels, constraints, X=None) -> np.ndarray:
    """Clusters that the answers show to be a mix of individuals.

    A cluster of ``labels`` (not the outliers, -1) is mixed when at least 20
    answered pairs have both images in it, fewer than 10% of them are "same"
    (or, with ``X``, fewer than 10% of its pairs by the estimate below), and
    dissolving it raises the pairwise F1 that the answers let us estimate
    (each cluster's pairs times its share of "same"; the mixed clusters are
    taken in increasing share, as many as raise it). So a mixed cluster that
    holds most of the estimated true pairs, such as a giant cluster of nearly
    every image, is kept: without it F1 would fall.

    With ``X`` (the features, (n, d); ``np3`` always passes them) a cluster's
    share is the lower of the share of "same" among the answers inside it and
    P(same | cosine) -- fitted to all the answers, nondecreasing in the
    cosine -- averaged over the cluster's pairs (all of them up to 12 images,
    else 64 drawn with a fixed seed), once the cosine tells the answers apart
    (it ranks a "same" answer above a "different" one at least 9 times in 10;
    until then the answers' share alone). The answers inside a cluster are a
    biased sample of its pairs (AAS asks about near, ambiguous pairs, "same"
    more often than the cluster's typical pair); given the cosine, the answer
    depends far less on why the pair was asked. Where the features do not
    separate the animals (the lion crops' ImageNet features: 0.70), a fit on
    the cosine would say nothing about a cluster's pairs. On the generator's
    camera-trap member at the data's eps (one cluster of 1,692 images, 0.18%
    of its pairs one animal), AAS's first answers were 3.7% "same" inside it:
    the answers' share kept it (F1 0.006 after five cycles), the estimate
    dissolves it (F1 0.78).
    ``np3(merge="auto")`` dissolves mixed clusters: their images become
    outliers before the refinement, so only the answers regroup them (the
    images an answer ties together stay together, and an image must-linked to
    an intact cluster joins it). This is SpCL's self-paced rule applied to the
    answers: an unreliable cluster is not kept as an identity.

    Measured (before the estimate from ``X``) on the lion crops' ImageNet
    features (DBSCAN at the fitted eps,
    whose clusters are a few giant mixes: pairwise precision 0.008), pairwise
    F1 of the refined clustering after five cycles of 0.5%, means of 3 seeds,
    with / without dissolving: AAS 0.092 / 0.058, NIS 0.140 / 0.096, LBAS
    0.114 / 0.040, Random 0.061 / 0.034; heads trained with those answers
    (``--freeze-backbone``) retrieve the unseen lions as well or better (test
    mAP AAS 15.0 / 15.0, NIS 16.5 / 14.2, LBAS 16.3 / 13.5). On
    ``make_reid_blobs`` (DBSCAN, or FINCH's first partition) no cluster is
    mixed and nothing changes.

    Returns the sorted labels, (m,) int64.

    Examples
    --------
    >>> import numpy as np, aas_core as aas
    >>> labels = np.array([0] * 8 + [1] * 8)
    >>> inside = [(i, j) for i in range(8) for j in range(i + 1, 8)][:20]
    >>> c = aas.PairConstraints(cannot_link=inside, must_link=[(8, 9), (8, 10)])
    >>> aas.refine.mixed_clusters(labels, c).tolist()  # 20 "different" inside 0; 1 looks pure
    [0]
    """
    owner = "mixed_clusters"
    lab, pairs, is_ml = _labels_and_answers(labels, constraints, owner)
    return _mixed(lab, pairs, is_ml, _features_of(X, len(lab), owner))


def _choose(lab, pairs, is_ml) -> str:
    inside = _inside(lab, pairs)
    if inside.sum() < _AUTO_MIN_ANSWERS:
        return "nearest"
    return "nearest" if is_ml[inside].mean() < _AUTO_PURITY else "clusters"


def _inside(lab, pairs) -> np.ndarray:
    """(m,) bool: both images of the answered pair are in one cluster (not outliers)."""
    if not len(pairs):
        return np.zeros(0, bool)
    a, b = lab[pairs[:, 0]], lab[pairs[:, 1]]
    return (a == b) & (a >= 0)


def _mixed(lab, pairs, is_ml, X=None, threads=None) -> np.ndarray:
    """Sorted labels of the clusters whose inside answers show a mix of individuals.

    Candidates: at least _AUTO_MIN_ANSWERS answers inside, under _MIXED_SHARE "same"
    (among them, or with ``X`` by :func:`_share_by_similarity`; each cluster's share is
    then the lower of the two).
    Of those, the ones with the lowest share of "same" are dissolved as long as that
    raises the pairwise F1 estimated from the answers (below): a mixed cluster that
    holds most of the true pairs (a giant cluster of nearly everything) is kept.
    """
    inside = _inside(lab, pairs)
    if not inside.any():
        return np.empty(0, np.int64)
    codes, which = np.unique(lab[pairs[inside, 0]], return_inverse=True)
    asked = np.bincount(which, minlength=len(codes))
    same = np.bincount(which, weights=is_ml[inside], minlength=len(codes))
    if not (asked >= _AUTO_MIN_ANSWERS).any():
        return np.empty(0, np.int64)
    all_codes, sizes = np.unique(lab[lab >= 0], return_counts=True)
    pos = np.searchsorted(all_codes, codes)
    share = np.full(len(all_codes), (same.sum() + 1.0) / (asked.sum() + 2.0))
    share[pos] = (same + 1.0) / (asked + 2.0)
    mixed = same < _MIXED_SHARE * asked
    if X is not None:
        # the lower of the two estimates: each is biased, the answers' share by why
        # the pairs were asked, the fit by the few answers it may rest on
        model = _share_by_similarity(lab, pairs, is_ml, X, all_codes, sizes, threads)
        if model is not None:
            share = np.minimum(share, model)
            mixed |= model[pos] < _MIXED_SHARE
    mixed &= asked >= _AUTO_MIN_ANSWERS
    if not mixed.any():
        return np.empty(0, np.int64)
    return _dissolving_helps(lab, pairs, is_ml, codes[mixed], share, all_codes, sizes)


def _dissolving_helps(lab, pairs, is_ml, cand, share, all_codes, sizes) -> np.ndarray:
    """The candidate clusters whose dissolution raises the estimated pairwise F1.

    F1 = 2 TP / (P + T) over pairs of images: P, the pairs the clustering puts
    together, is known; TP is estimated as each cluster's pairs times its estimated
    share of "same" pairs (``share``, per ``all_codes``); T, all true pairs, as that
    TP: the answers say how precise the clusters are, not how many true pairs lie
    across them. A cluster that holds most of the estimated true pairs is therefore
    kept however mixed (F1 would fall with it); one that holds few of them among
    many wrong pairs is dissolved. A dissolved cluster keeps only what its
    must-links tie together, pairs known true. The candidates are tried in
    increasing share; the best prefix is kept.
    """
    n = len(lab)
    m = sizes.astype(np.float64) * (sizes - 1) / 2  # pairs per cluster
    tp = float((share * m).sum())
    pred = float(m.sum())
    truth = tp  # the answers estimate precision, not recall: take the clustering's as 1
    # pairs that the must-links inside each candidate keep together once it is dissolved
    ml = pairs[is_ml]
    ml = ml[(lab[ml[:, 0]] == lab[ml[:, 1]]) & np.isin(lab[ml[:, 0]], cand)]
    graph = sp.coo_array((np.ones(len(ml)), (ml[:, 0], ml[:, 1])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    inside = np.isin(lab, cand)
    comp_ids, comp_sizes = np.unique(comp[inside], return_counts=True)
    comp_label = np.zeros(len(comp_ids), np.int64)
    comp_label[np.searchsorted(comp_ids, comp[inside])] = lab[inside]
    kept_pairs = np.zeros(len(cand))
    np.add.at(
        kept_pairs,
        np.searchsorted(cand, comp_label),
        comp_sizes.astype(np.float64) * (comp_sizes - 1) / 2,
    )
    cand_pos = np.searchsorted(all_codes, cand)
    order = np.argsort(share[cand_pos], kind="stable")
    d_tp = np.cumsum((kept_pairs - share[cand_pos] * m[cand_pos])[order])
    d_pred = np.cumsum((kept_pairs - m[cand_pos])[order])
    f1 = 2 * (tp + d_tp) / (pred + d_pred + truth)
    best = int(np.argmax(f1))
    if f1[best] <= 2 * tp / (pred + truth):
        return np.empty(0, np.int64)
    return np.sort(cand[order[: best + 1]])


_SEPARATES_AUC = 0.9  # the cosine must rank a "same" answer above a "different" 9 in 10
_SAMPLED_PAIRS = 64  # random pairs per larger cluster to estimate its share of "same"
_PAV_BINS = 512  # answers pooled into at most this many bins before the isotonic fit


def _isotonic(x, y):
    """Nondecreasing least-squares fit of y on x (pool adjacent violators), on at most
    _PAV_BINS equal-count bins of x: (each bin's smallest x, fitted value), x ascending."""
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order].astype(np.float64)
    cuts = np.unique(np.linspace(0, len(x), min(len(x), _PAV_BINS) + 1).astype(np.int64))
    lo = x[cuts[:-1]]
    vals = list(np.add.reduceat(y, cuts[:-1]) / np.diff(cuts))
    wts = list(np.diff(cuts).astype(np.float64))
    cnt = [1] * len(vals)
    out_v, out_w, out_c = [], [], []
    for v, w, c in zip(vals, wts, cnt):
        out_v.append(v)
        out_w.append(w)
        out_c.append(c)
        while len(out_v) > 1 and out_v[-2] > out_v[-1]:
            w2 = out_w[-2] + out_w[-1]
            out_v[-2] = (out_v[-2] * out_w[-2] + out_v[-1] * out_w[-1]) / w2
            out_w[-2] = w2
            out_c[-2] += out_c[-1]
            out_v.pop(), out_w.pop(), out_c.pop()
    return lo, np.repeat(out_v, out_c)


def _cluster_pairs(lab, codes, sizes):
    """Pairs of images to stand for each cluster's pairs: all of them for a cluster of
    up to 12 images, else _SAMPLED_PAIRS drawn at random (a fixed seed: the same
    labels give the same estimate). Returns (i, j, the cluster's position in codes)."""
    order = np.argsort(lab, kind="stable")
    order = order[lab[order] >= 0]
    start = np.searchsorted(lab[order], codes)
    parts = []
    for s in np.unique(sizes[sizes <= 12]).tolist():
        if s < 2:
            continue
        which = np.flatnonzero(sizes == s)
        a, b = np.triu_indices(s, 1)
        base = np.repeat(start[which], len(a))
        parts.append(
            (
                order[base + np.tile(a, len(which))],
                order[base + np.tile(b, len(which))],
                np.repeat(which, len(a)),
            )
        )
    big = np.flatnonzero(sizes > 12)
    if len(big):
        rng = np.random.default_rng(0)
        r = _SAMPLED_PAIRS
        size = np.repeat(sizes[big], r)
        first = rng.integers(0, size)
        second = (first + 1 + rng.integers(0, size - 1)) % size
        base = np.repeat(start[big], r)
        parts.append((order[base + first], order[base + second], np.repeat(big, r)))
    if not parts:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64)
    return tuple(np.concatenate(p) for p in zip(*parts))


def _auc(score, positive) -> float:
    """How often a positive outscores a negative (ties count half); 0.5 without both."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if not n_pos or not n_neg:
        return 0.5
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # mid-ranks of ties
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _cosines(X, norms, i, j, threads):
    """Cosine of each pair (i[k], j[k]) (C++: no gathered copies of the rows)."""
    pairs = np.ascontiguousarray(np.stack([i, j], axis=1), np.int64)
    dots = _core.pair_dots(X, X, pairs, effective_threads(threads, owner="np3"))
    return dots / np.maximum(norms[i] * norms[j], 1e-30)


def _share_by_similarity(lab, pairs, is_ml, X, codes, sizes, threads=None):
    """Each cluster's expected share of "same" among its pairs: P(same | cosine),
    fitted to all the answers (nondecreasing in the cosine), averaged over the
    cluster's pairs (:func:`_cluster_pairs`), smoothed as the answer shares are.

    The answers inside a cluster are a biased sample of its pairs: a sampler asks
    about near, ambiguous pairs (AAS's closest pairs are often "same") or about far
    ones (purity checks, LBAS's positives, mostly "different"). Given the cosine,
    whether two images show one individual depends far less on why they were
    asked, so a giant mix whose asked near pairs are often "same" but whose typical
    pair is far apart is judged by its typical pairs. None while the cosine does
    not tell the answers apart (AUC under _SEPARATES_AUC)."""
    X = np.ascontiguousarray(X, np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", X, X))
    cos = _cosines(X, norms, pairs[:, 0], pairs[:, 1], threads)
    if _auc(cos, is_ml) < _SEPARATES_AUC:
        return None  # the cosine does not tell the answers apart: a fit on it says nothing
    lo, fit = _isotonic(cos, is_ml)
    i, j, which = _cluster_pairs(lab, codes, sizes)
    p = fit[np.clip(np.searchsorted(lo, _cosines(X, norms, i, j, threads), "right") - 1, 0, None)]
    mean = np.bincount(which, weights=p, minlength=len(codes)) / np.maximum(
        np.bincount(which, minlength=len(codes)), 1
    )
    n_ans = len(pairs)
    return (mean * n_ans + 1.0) / (n_ans + 2.0)


def _as_outliers(lab, mixed) -> np.ndarray:
    """``lab`` with the members of the clusters ``mixed`` made outliers (a new array if any)."""
    if not len(mixed):
        return lab
    out = lab.copy()
    out[np.isin(lab, mixed)] = -1
    return out


def _nearest_merges_only(lab, ml, X, n_threads) -> np.ndarray:
    """Labels where a must-link joins two clusters only if they are each other's nearest.

    For every must-link between two different clusters (outliers excluded:
    an outlier joins a cluster as in the paper) the clusters' mean directions
    are compared with every cluster's; if the two are mutual nearest
    clusters, nothing changes here (NP3 then merges them). Otherwise the
    answered images' must-link closure gets a label of its own, so NP3's
    merge moves only those images. O(n d) for the means (the C++ kernel FINCH
    uses) plus O(q C d) for the q clusters involved among C.
    """
    a, b = lab[ml[:, 0]], lab[ml[:, 1]]
    cross = (a != b) & (a >= 0) & (b >= 0)
    if not cross.any():
        return lab
    clusters = lab >= 0
    codes = np.unique(lab[clusters])
    # outliers go to one extra group, dropped: FINCH's kernel sums the unit rows per cluster
    dense = np.where(clusters, np.searchsorted(codes, lab), len(codes)).astype(np.int64)
    unit_weights = 1.0 / np.linalg.norm(X, axis=1).astype(np.float64)
    means, _ = _core.cluster_directions(X, unit_weights, dense, len(codes) + 1, n_threads)
    means = means[: len(codes)]
    involved = np.unique(np.concatenate([a[cross], b[cross]]))
    rows = np.searchsorted(codes, involved)
    sims = means[rows] @ means.T
    sims[np.arange(len(rows)), rows] = -np.inf
    nearest = dict(zip(involved.tolist(), codes[np.argmax(sims, axis=1)].tolist()))
    refused = [
        k
        for k in np.flatnonzero(cross)
        if nearest[int(a[k])] != int(b[k]) or nearest[int(b[k])] != int(a[k])
    ]
    if not refused:
        return lab
    n = len(lab)
    graph = sp.coo_array((np.ones(len(ml)), (ml[:, 0], ml[:, 1])), shape=(n, n))
    _, closure = connected_components(graph, directed=False)
    leave = np.isin(closure, np.unique(closure[ml[refused, 0]]))
    out = lab.copy()
    out[leave] = lab.max(initial=-1) + 1 + closure[leave]
    return out


def _check_graph(graph, n, owner):
    from .neighbors import KNNGraph

    if not isinstance(graph, KNNGraph):
        raise TypeError(f"{owner}: 'graph' must be a KNNGraph or None; got {type(graph).__name__}.")
    if graph.indices.shape[0] != n:
        raise ValueError(
            f"{owner}: 'graph' has {graph.indices.shape[0]} rows but X has {n}; build it from X."
        )
    return graph


def _place_free_points(lab, X, ml, cl, out, graph, n_threads) -> np.ndarray:
    """NP3's output with the unconstrained points of impure clusters placed along the
    graph, or (``graph=None``) kept with their cluster's largest sub-cluster.

    The clusters after the must-link merges alone are NP3's merged clusters;
    those holding a cannot-link are the impure ones. Their points in CL groups
    (the must-link closures that touch a cannot-link inside) keep NP3's
    sub-cluster as a seed; every other point is free (see ``graph`` and
    ``keep_together`` in :func:`np3`).
    """
    n = len(lab)
    merged = _core.np3(lab, X, ml, np.empty((0, 2), np.int64), n_threads)
    a, b = merged[cl[:, 0]], merged[cl[:, 1]]
    inside = (a == b) & (a >= 0)
    if not inside.any():
        return out
    impure = np.isin(merged, np.unique(a[inside]))
    g = sp.coo_array((np.ones(len(ml)), (ml[:, 0], ml[:, 1])), shape=(n, n))
    _, closure = connected_components(g, directed=False)
    seeded = impure & np.isin(closure, np.unique(closure[cl[inside].ravel()]))
    result = out.copy()
    if graph is None:  # keep_together
        for group in np.unique(a[inside]).tolist():
            members = merged == group
            held = out[members & seeded]
            keeper = int(np.bincount(held - held.min()).argmax() + held.min())
            result[members & ~seeded] = keeper
        return result
    group = np.where(impure, merged, -1).astype(np.int64)
    seed = np.where(seeded, out, -1).astype(np.int64)
    unions = np.ascontiguousarray(ml[impure[ml[:, 0]] & impure[ml[:, 1]]], dtype=np.int64)
    got, comp = _core.split_along_graph(
        group,
        seed,
        unions,
        np.ascontiguousarray(graph.indices, np.int64),
        np.ascontiguousarray(graph.sims, np.float32),
    )
    free = impure & ~seeded
    reached = free & (got >= 0)
    result[reached] = got[reached]
    alone = free & (got < 0)
    if alone.any():  # parts the graph does not tie to any sub-cluster: clusters of their own
        roots, first = np.unique(comp[alone], return_inverse=True)
        result[alone] = max(int(out.max(initial=-1)), int(lab.max(initial=-1))) + 1 + first
    return result


def _as_labels(labels, n, owner) -> np.ndarray:
    """(n,) int64 copy of ``labels``, each >= -1."""
    a = np.asarray(labels)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{owner}: 'labels' must hold integer labels; got dtype {a.dtype}.")
    if a.ndim != 1:
        raise ValueError(f"{owner}: 'labels' must be 1-D; got shape {a.shape}.")
    if len(a) != n:
        raise ValueError(f"{owner}: 'labels' must have one entry per row of X ({n}); got {len(a)}.")
    if a.dtype.kind == "u" and n and a.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{owner}: 'labels' must fit in int64; got {a.max()}.")
    out = np.array(a, dtype=np.int64)  # always a copy
    bad = np.flatnonzero(out < -1)
    if bad.size:
        raise ValueError(
            f"{owner}: 'labels' must be >= -1 (-1 = outlier); got {out[bad[0]]} "
            f"in row {int(bad[0])}."
        )
    return out


def _pair_text(pairs, rows) -> str:
    return " - ".join(f"({pairs[r, 0]}, {pairs[r, 1]})" for r in rows)


def _conflict_message(pairs, found, owner) -> str:
    c = found[0]
    i, j = pairs[c["cannot_link"]]
    path = c["must_link_path"]
    return (
        f"{owner}: the constraints are inconsistent ({len(found)} conflict(s)). The "
        f"cannot-link ({i}, {j}) (answer {c['cannot_link']}) joins two images that the "
        f"must-links {_pair_text(pairs, path)} (answers {path}) put together. Correct the "
        "answers, or pass on_conflict='drop_oldest' ('aas refine --on-conflict drop_oldest') "
        "to ignore the oldest answer of each such cycle."
    )


def _drop_oldest(pairs, is_ml) -> np.ndarray:
    """Rows to ignore so that the rest is consistent (the rule of ``np3``).

    One conflict at a time: the oldest CL answer inside an ML closure, its
    cycle (that CL and the shortest ML path between its ends, as
    PairConstraints.conflicts() finds it), and the oldest answer of the cycle
    is dropped. O(n + m) per dropped answer.
    """
    active = np.ones(len(pairs), bool)
    dropped = []
    size = int(pairs.max()) + 1
    while True:
        ml = pairs[active & is_ml]
        g = sp.coo_array((np.ones(len(ml)), (ml[:, 0], ml[:, 1])), shape=(size, size))
        _, comp = connected_components(g, directed=False)
        cl_rows = np.flatnonzero(active & ~is_ml)
        bad = cl_rows[comp[pairs[cl_rows, 0]] == comp[pairs[cl_rows, 1]]]
        if not len(bad):
            return np.asarray(dropped, np.int64)
        rows = np.flatnonzero(active)
        view = PairConstraints()
        view._append(pairs[rows], is_ml[rows])  # stored answers: no need to re-check them
        path = view._ml_path(*pairs[bad[0]])  # rows of the view
        cycle = [int(bad[0])] + [int(rows[r]) for r in path]
        oldest = min(cycle)
        active[oldest] = False
        dropped.append(oldest)


class ConstrainedClustering(Estimator):
    """NP3 refinement as an estimator (see :func:`np3`).

    Parameters
    ----------
    on_conflict : {"raise", "drop_oldest"}
        What to do with inconsistent answers (see :func:`np3`).
    merge : {"clusters", "nearest", "auto"}
        What a must-link between two clusters merges (see :func:`np3`).
    dissolve : bool or None
        Whether clusters the answers show to be mixed are dissolved first (see
        :func:`np3`; None: with ``merge="auto"``).
    n_threads : int or None
        Threads (None: OMP_NUM_THREADS or all CPUs).

    Attributes
    ----------
    labels_ : (n,) int64
        The refined labels.
    dropped_ : (k,) int64
        Rows of ``constraints.pairs`` ignored to resolve conflicts (empty
        when the answers are consistent).
    n_clusters_ : int
        Clusters in ``labels_``, outliers (-1) not counted.

    Examples
    --------
    >>> import numpy as np, aas_core as aas
    >>> X = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    >>> c = aas.PairConstraints(must_link=[[1, 2]], cannot_link=[[0, 2]])
    >>> est = aas.ConstrainedClustering().fit(X, labels=[0, 0, 1, 1], constraints=c)
    >>> est.labels_.tolist(), est.n_clusters_
    ([2, 3, 3, 3], 2)
    """

    def __init__(self, on_conflict="raise", *, merge="clusters", dissolve=None, n_threads=None):
        self.on_conflict = on_conflict
        self.merge = merge
        self.dissolve = dissolve
        self.n_threads = n_threads

    def fit(self, X, y=None, *, labels, constraints):
        """Refines ``labels`` of the rows of X with ``constraints``; returns self."""
        self.labels_, self.dropped_ = _np3(
            labels,
            constraints,
            X,
            on_conflict=self.on_conflict,
            merge=self.merge,
            dissolve=self.dissolve,
            return_dropped=True,
            n_threads=self.n_threads,
            owner="ConstrainedClustering",
        )
        self.n_clusters_ = int(len(np.unique(self.labels_[self.labels_ >= 0])))
        return self

    def fit_predict(self, X, y=None, *, labels, constraints):
        return self.fit(X, labels=labels, constraints=constraints).labels_
