"""What a catalogue's identities rest on: the answers, read once, and what they prove.

An identity is evidence, not a cluster label. Its photos are

- **verified** when "same" answers join them, directly or through other
  photos, to the identity's reference photo (the one its questions are asked
  against): a person saw them to be one animal;
- **proposed** when only the clustering groups them with it.

A person's catalogue edits (merge, split, a new season's "new individual")
are answers with an origin. They are constraints like any answer, but only
the answers to pair questions are a sample of how pure the clusters are: a
cluster whose pair-question answers inside show it to be a mix of animals
(:func:`aas_core.refine.mixed_clusters`) is dissolved -- its photos go back
to "unsorted", every answered link kept -- while a person's split never
dissolves a merge they made. A merge edit joins the two whole identities
whatever the merge rule.

:func:`refine_identities` computes the partition: the base clustering,
mixed clusters dissolved, merge edits joined, NP3 with every answer
following the kNN graph (:func:`aas_core.np3` with ``graph=``), outliers as
identities of one photo. :func:`reference_photos` and :func:`verified_mask`
give the evidence of each identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from .._labels import outliers_to_singletons
from .._validation import check_option
from ..constraints import PairConstraints
from ..refine import choose_merge, dropped_answers, mixed_clusters, np3
from .estimate import separation_of

__all__ = ["Answers", "Partition", "read_answers", "reference_photos", "refine_identities"]

_CLUSTERINGS = ("dbscan", "finch")
PAIR = "pair"  # the origin of an answer to a pair question


@dataclass(frozen=True)
class Answers:
    """The current same/different answers of a store, read once, in the order given.

    pairs : (m, 2) int64; same : (m,) bool; origin : (m,) str, "pair" for the
    answer to a pair question, else the catalogue operation ("merge", "split",
    "new_individual"); kind : (m,) str, the kind the pair was queued with
    ("audit-member", "audit-calibration", "split", "link", a sampler's kind);
    answer_id : (m,) int64; operation : (m,) int64, the operation an edit belongs to
    (0 for a pair question); pool : (m,) str, the pool the pair was drawn from (for a
    check: its stratum); stays : {operation: (k,) int64}, the photos a split left
    where they were; n : the store's photos.
    """

    pairs: np.ndarray
    same: np.ndarray
    origin: np.ndarray
    kind: np.ndarray
    answer_id: np.ndarray
    operation: np.ndarray
    pool: np.ndarray
    stays: dict
    n: int

    def __len__(self) -> int:
        return len(self.same)

    @property
    def questions(self) -> np.ndarray:
        """(m,) bool: the answers to pair questions (not a person's catalogue edits)."""
        return self.origin == PAIR

    def constraints(self, mask=None) -> PairConstraints:
        """These answers (or the rows of ``mask``) as PairConstraints, in order."""
        c = PairConstraints(n=self.n) if self.n >= 2 else PairConstraints()
        rows = slice(None) if mask is None else np.asarray(mask, bool)
        if len(self.same[rows]):
            c._append(self.pairs[rows], self.same[rows])  # store answers: already checked
        return c


def read_answers(store) -> Answers:
    """The store's current same/different answers with their origins (one read)."""
    t = store.answer_table()
    pairs = np.stack([t["i"], t["j"]], axis=1) if len(t["i"]) else np.empty((0, 2), np.int64)
    splits = t["operation"][t["origin"] == "split"]
    stays = store.operation_photos(np.unique(splits)) if len(splits) else {}
    return Answers(
        pairs,
        t["same"],
        t["origin"],
        t["kind"],
        t["answer_id"],
        t["operation"],
        t["pool"],
        stays,
        store.n_images,
    )


@dataclass(frozen=True)
class Partition:
    """The identities as labels, and how they came about.

    labels : (n,) int64 >= 0, one label per identity (outliers are identities of
        one photo); dissolved : (n,) bool, photos of clusters dissolved as mixed;
    kept : (m,) bool, the answers used (contradicted ones are dropped, the
        oldest first, as ``np3(on_conflict="drop_oldest")`` does); merge : the
        merge rule applied ("clusters" or "nearest"); follow_graph : whether the
        photos of split clusters followed the kNN graph (the answers show the
        embedding separates the animals) or stayed together.
    """

    labels: np.ndarray
    dissolved: np.ndarray
    kept: np.ndarray
    merge: str
    follow_graph: bool = False


def refine_identities(clusters, answers, *, clustering="dbscan", merge="auto") -> Partition:
    """The base clustering refined by every answer into identities (see the module doc).

    Parameters
    ----------
    clusters : ClusterState (:func:`aas_core.cluster_features` of the store's embeddings)
    answers : Answers (:func:`read_answers`)
    clustering : "dbscan" (clustering A) or "finch" (B), the partition refined
    merge : "auto", "clusters" or "nearest": what a "same" answer to a pair question
        merges (see :func:`aas_core.np3`); "auto" decides from the pair questions'
        answers inside clusters. Merge edits always join whole identities.
    """
    check_option("clustering", clustering, _CLUSTERINGS, owner="refine_identities")
    check_option("merge", merge, ("auto", "clusters", "nearest"), owner="refine_identities")
    base = clusters.labels_a if clustering == "dbscan" else clusters.labels_b
    base = np.asarray(base, np.int64).copy()
    n = len(base)
    kept = np.ones(len(answers), bool)
    if len(answers):
        kept[dropped_answers(answers.constraints())] = False
    questions = answers.constraints(kept & answers.questions)
    mixed = mixed_clusters(base, questions, clusters.X)
    dissolved = np.isin(base, mixed) if len(mixed) else np.zeros(n, bool)
    base[dissolved] = -1
    merges = kept & (answers.origin == "merge") & answers.same
    base = _join_whole(base, answers.pairs[merges])
    if merge == "auto":
        merge = choose_merge(base, questions, clusters.X)
    # Where the embedding separates the animals, photos nobody answered about follow the
    # kNN graph when an answer splits their cluster; until the answers show it does, they
    # stay together with the largest answered part (only the photos answered move), so
    # splits never scatter a cluster along a graph that means nothing.
    follow = separation_of(answers, clusters.graph)["separates"] is True
    labels = np3(
        base,
        answers.constraints(kept),
        clusters.X,
        merge=merge,
        dissolve=False,
        graph=clusters.graph if follow else None,
        keep_together=not follow,
    )
    labels = _keep_stayers(outliers_to_singletons(np.asarray(labels, np.int64)), answers, kept)
    return Partition(labels, dissolved, kept, merge, follow)


def _keep_stayers(labels, answers, kept) -> np.ndarray:
    """Labels where the photos a person's split left in place did not follow the photos it
    took out (along the graph) unless answers join them; oldest split first.

    A split's answers are "different" between each photo taken out and the photo
    anchoring what stays, and "same" among the photos taken out. A photo it left
    that now shares the taken-out photos' identity goes back to the anchor's,
    with every photo "same" answers join it to -- unless those include a
    taken-out photo, or a "different" answer separates them from the anchor's
    identity.
    """
    if not answers.stays:
        return labels
    components = must_link_components(len(labels), answers, kept)
    diff = answers.pairs[kept & ~answers.same]
    out = labels.copy()
    for op in sorted(answers.stays):
        rows = np.flatnonzero(kept & (answers.operation == op) & ~answers.same)
        if not len(rows):
            continue  # undone, or contradicted by later answers
        pairs = answers.pairs[rows]
        # the photo every pair has; with one pair (one photo taken out) both ends are, and
        # the anchor is the end that stayed
        count = np.bincount(pairs.ravel())
        ends = np.flatnonzero(count == count.max())
        stayed = ends[np.isin(ends, answers.stays[op])]
        anchor = int(stayed[0] if len(stayed) else ends[0])
        moved = pairs[pairs != anchor]
        lab_out, lab_anchor = out[moved[0]], out[anchor]
        if lab_out == lab_anchor:
            continue
        taken = set(components[moved].tolist())
        for s in answers.stays[op].tolist():
            if out[s] != lab_out or components[s] in taken:
                continue
            group = np.flatnonzero((components == components[s]) & (out == lab_out))
            if _separated(group, out == lab_anchor, diff):
                continue
            out[group] = lab_anchor
    return out


def _separated(group, other, diff) -> bool:
    """Whether a "different" answer lies between the photos ``group`` and the mask ``other``."""
    if not len(diff):
        return False
    mine = np.zeros(len(other), bool)
    mine[group] = True
    a, b = diff[:, 0], diff[:, 1]
    return bool(((mine[a] & other[b]) | (mine[b] & other[a])).any())


def _join_whole(labels, pairs) -> np.ndarray:
    """``labels`` with the clusters (or outliers) at both ends of each pair made one."""
    if not len(pairs):
        return labels
    own = outliers_to_singletons(np.asarray(labels, np.int64))  # outliers: clusters of one
    k = int(own.max()) + 1
    g = sp.coo_array((np.ones(len(pairs)), (own[pairs[:, 0]], own[pairs[:, 1]])), shape=(k, k))
    _, comp = connected_components(g, directed=False)
    joined = np.bincount(comp, minlength=k)[comp[own]] > 1  # its cluster joined another
    out = labels.copy()
    out[joined] = int(labels.max(initial=-1)) + 1 + comp[own[joined]]
    return out


def must_link_components(n, answers, kept=None) -> np.ndarray:
    """(n,) int64: the component of each photo in the graph of the kept "same" answers."""
    rows = answers.same if kept is None else answers.same & kept
    ml = answers.pairs[rows]
    g = sp.coo_array((np.ones(len(ml)), (ml[:, 0], ml[:, 1])), shape=(n, n))
    return connected_components(g, directed=False)[1].astype(np.int64)


def reference_photos(labels, X, components) -> np.ndarray:
    """(k,) int64: the reference photo of each identity 0..k-1 of ``labels``.

    The medoid (largest summed cosine to the others) of the identity's largest
    group of photos joined by "same" answers, or of all its photos when none
    are joined: the photo its questions are asked against.
    """
    labels = np.asarray(labels, np.int64)
    k = int(labels.max(initial=-1)) + 1
    # the largest answer-joined group inside each identity (ties: the smallest component)
    key = labels * (int(components.max(initial=0)) + 1) + components
    groups, first, sizes = np.unique(key, return_index=True, return_counts=True)
    lab_of, comp_of = labels[first], components[first]
    order = np.lexsort((comp_of, -sizes, lab_of))
    best = np.full(k, -1, np.int64)
    size = np.zeros(k, np.int64)
    for t in order[::-1]:  # the first of each identity in this order wins, so go backwards
        best[lab_of[t]], size[lab_of[t]] = comp_of[t], sizes[t]
    core = np.where(size[labels] > 1, components == best[labels], True)
    rows = np.flatnonzero(core)
    onehot = sp.csr_array((np.ones(len(rows), X.dtype), (labels[rows], rows)), shape=(k, len(X)))
    sums = np.asarray(onehot @ X)  # (k, d): the sum of each identity's core rows
    score = np.einsum("ij,ij->i", X, sums[labels])
    score = np.where(core, score, -np.inf)
    order = np.lexsort((np.arange(len(labels)), -score, labels))
    starts = np.r_[0, np.flatnonzero(np.diff(labels[order])) + 1]
    return order[starts].astype(np.int64)


def verified_mask(labels, refs, components) -> np.ndarray:
    """(n,) bool: photos joined by "same" answers to their identity's reference photo
    (the reference itself too, when something is joined to it)."""
    labels = np.asarray(labels, np.int64)
    ref_comp = components[refs][labels]
    joined = components == ref_comp
    size = np.bincount(components[joined & (labels >= 0)], minlength=len(components))
    return joined & (size[components] > 1)
