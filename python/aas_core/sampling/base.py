"""The interface every pair sampler shares.

A sampler answers one question: which pairs of images should a person look
at next? ``propose_from`` takes the state of one cycle (features, the two
clusterings already refined by NP3, the Jaccard distance graph, the answers so
far) and returns a :class:`PairProposal`; ``propose`` computes that state from
the features first, for callers who only have embeddings and answers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .._validation import check_int
from ..constraints import PairConstraints

__all__ = ["PairProposal", "PairSampler", "as_generator", "neighbour_rows"]


@dataclass(frozen=True, eq=False)
class PairProposal:
    """Pairs to ask a person about, with why each was chosen.

    Attributes
    ----------
    pairs : (m, 2) int64, i < j, no pair twice, none implied by the constraints
    prob : (m,) float64, the probability the sampler gave the pair (NaN when
        the sampler ranks rather than draws)
    pool : (m,) str, where the pair came from: "us" (inside a region of
        uncertainty), "os" (between region medoids) or "check" (a purity check,
        ``AmbiguityAwareSampler(checks=...)``) for AAS; the sampler's name for
        the baselines
    kind : (m,) str, for AAS "us" pairs "beta1"/"beta2"/"beta3" (inlier-inlier,
        inlier-outlier, outlier-outlier by DBSCAN); for AAS "os" pairs "linked"
        (cells joined by a Jaccard similarity >= s_min), "nearest" (medoids of
        nearest cells) or "medoids" (region medoids, ``overseg="regions"``);
        "purity" for the checks;
        "" for the baselines
    region : (m,) int64, the region of an AAS "us" pair, -1 otherwise
    n_candidates : int, size of the pool the pairs were drawn from
    message : str, a one-line summary; says why when nothing is proposed
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

    @classmethod
    def empty(cls, message: str) -> PairProposal:
        return cls(
            np.empty((0, 2), np.int64),
            np.empty(0),
            np.empty(0, "<U6"),
            np.empty(0, "<U5"),
            np.empty(0, np.int64),
            0,
            message,
        )


def as_generator(rng, *, owner) -> np.random.Generator:
    """An int seed, a Generator or None (fresh entropy) -> a Generator; never the global RNG."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)):
        if rng is not None and rng < 0:
            raise ValueError(f"The 'rng' parameter of {owner} must be a seed >= 0; got {rng}.")
        return np.random.default_rng(rng)
    raise TypeError(
        f"The 'rng' parameter of {owner} must be an int seed, a numpy Generator or None; "
        f"got {type(rng).__name__}."
    )


class PairSampler:
    """Base class: ``propose`` (from features) on top of ``propose_from`` (from a cycle's state).

    Subclasses implement :meth:`propose_from` and call :meth:`_checked` first.
    """

    def propose(
        self, X, constraints, budget, *, rng=None, clusters=None, n_threads=None
    ) -> PairProposal:
        """Pairs to ask about next, from embeddings and the answers so far.

        Computes one cycle's state (kNN graph, Jaccard distance, DBSCAN and
        FINCH, see :func:`aas_core.loop.cluster_features`; eps fitted to the
        data and the answers) unless ``clusters`` (a ``ClusterState`` from
        that function, whose "auto" eps is re-fitted to the answers) is
        given, refines both
        clusterings with every answer (NP3, conflicts resolved by dropping the
        oldest answer of each contradiction for this refinement only), then
        calls :meth:`propose_from`.

        Parameters
        ----------
        X : (n, d) float array of embeddings
        constraints : PairConstraints, the answers so far (never modified)
        budget : int >= 0, the most pairs to propose
        rng : int, numpy Generator or None
        clusters : ClusterState or None
        n_threads : int or None
        """
        from ..loop import cluster_features
        from ..refine import np3

        owner = f"{type(self).__name__}.propose"
        rng = as_generator(rng, owner=owner)
        if not isinstance(constraints, PairConstraints):
            raise TypeError(
                f"{owner}: 'constraints' must be PairConstraints; got {type(constraints).__name__}."
            )
        if clusters is None:
            clusters = cluster_features(X, constraints=constraints, n_threads=n_threads)
        elif len(clusters.X) != len(np.asarray(X)):
            raise ValueError(
                f"{owner}: 'clusters' was computed for {len(clusters.X)} images but 'X' has "
                f"{len(np.asarray(X))} rows."
            )
        else:  # an "auto" eps follows the answers
            clusters = clusters.refit(constraints, n_threads=n_threads)
        # as ActiveLoop refines by default: the merge the answers support, and B keeps
        # the clusters A dissolves as mixed, so that AAS still sees the disagreement
        a = np3(clusters.labels_a, constraints, clusters.X, on_conflict="drop_oldest", merge="auto")
        b = np3(
            clusters.labels_b,
            constraints,
            clusters.X,
            on_conflict="drop_oldest",
            merge="auto",
            dissolve=False,
        )
        return self.propose_from(
            clusters.X, a, b, clusters.D, constraints, budget, rng=rng, graph=clusters.graph
        )

    def propose_from(
        self, X, labels_a, labels_b, D, constraints, budget, *, rng, graph=None
    ) -> PairProposal:  # pragma: no cover - abstract
        """Pairs to ask about, given one cycle's state.

        X : (n, d) float32 unit rows; labels_a : (n,) DBSCAN labels (-1 =
        outlier) and labels_b : (n,) FINCH labels, both refined by NP3; D :
        (n, n) sparse Jaccard distances (absent = 1); constraints :
        PairConstraints; budget : int >= 0; rng : seed or Generator; graph :
        the KNNGraph of X, if at hand (samplers that need cosine neighbours
        compute it otherwise).
        """
        raise NotImplementedError

    def get_state(self):
        """What the sampler learnt from its earlier proposals, as plain Python values (for
        a checkpoint), or None when it learns nothing (every sampler here but
        ``AmbiguityAwareSampler(split="yield")``). :meth:`set_state` puts it back, so
        that a resumed run proposes what the uninterrupted one would."""
        return None

    def set_state(self, state) -> None:
        """Restores what :meth:`get_state` returned."""
        if state is not None:
            raise ValueError(
                f"{type(self).__name__}.set_state: this sampler keeps no state; got a "
                f"{type(state).__name__}."
            )

    def _checked(self, X, labels_a, labels_b, D, constraints, budget, rng, *, need=()):
        """Validates the arguments of propose_from; returns (X, a, b, D, budget, rng).

        X becomes float32 (n, d); labels become int64 (or stay None where the
        sampler does not read them); D a CSR array. The arguments named in
        ``need`` must not be None. Nothing is written back.
        """
        from .._validation import as_features

        owner = f"{type(self).__name__}.propose_from"
        given = {"labels_a": labels_a, "labels_b": labels_b, "D": D}
        missing = [name for name in need if given[name] is None]
        if missing:
            raise ValueError(
                f"{owner}: {', '.join(repr(m) for m in missing)} must be given (not None); "
                f"{type(self).__name__} reads them."
            )
        budget = check_int("budget", budget, low=0, owner=owner)
        rng = as_generator(rng, owner=owner)
        if not isinstance(constraints, PairConstraints):
            raise TypeError(
                f"{owner}: 'constraints' must be PairConstraints; got {type(constraints).__name__}."
            )
        X = as_features(X, owner=owner)
        n = len(X)
        labels = []
        for name, lab in (("labels_a", labels_a), ("labels_b", labels_b)):
            if lab is None:
                labels.append(None)
                continue
            arr = np.asarray(lab)
            if arr.ndim != 1 or arr.dtype.kind not in "iu":
                raise ValueError(
                    f"{owner}: {name!r} must be a 1-D integer array; got dtype {arr.dtype}, "
                    f"shape {arr.shape}."
                )
            if len(arr) != n:
                raise ValueError(
                    f"{owner}: {name!r} must have one label per row of X ({n}); got {len(arr)}."
                )
            labels.append(arr.astype(np.int64, copy=False))
        if D is not None:
            if not sp.issparse(D) or D.shape != (n, n):
                shape = getattr(D, "shape", None)
                raise ValueError(
                    f"{owner}: 'D' must be a sparse ({n}, {n}) distance graph; got "
                    f"{type(D).__name__} with shape {shape}."
                )
            D = sp.csr_array(D)
        top = int(constraints.pairs.max(initial=-1))
        if top >= n:
            raise ValueError(
                f"{owner}: 'constraints' mention image {top} but there are only {n} images."
            )
        return X, labels[0], labels[1], D, budget, rng


def neighbour_rows(X, graph):
    """Cosine neighbours of every row, self excluded: (indices (n, k), sims (n, k)).

    From ``graph`` when given (the loop's shared kNN graph), else computed with k = 30.
    """
    from ..neighbors import KNNGraph, knn_graph

    n = len(X)
    if graph is None:
        if n < 2:
            return np.empty((n, 0), np.int64), np.empty((n, 0), np.float32)
        graph = knn_graph(X, min(30, n - 1), include_self=False)
    elif not isinstance(graph, KNNGraph) or graph.n != n:
        raise ValueError(
            f"'graph' must be the KNNGraph of the same {n} images; got {type(graph).__name__}."
        )
    if graph.includes_self:
        return graph.indices[:, 1:], graph.sims[:, 1:]
    return graph.indices, graph.sims
