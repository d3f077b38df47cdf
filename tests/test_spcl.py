import collections
import dataclasses
import warnings
from functools import cache

import numpy as np
import pytest
import scipy.sparse as sp

import aas_core as aas
from conftest import assert_same_partition

sklearn_cluster = pytest.importorskip("sklearn.cluster")


def spcl_oracle(D, eps, eps_gap, min_samples, indep_thres=None):
    """SpCL's self-paced selection (examples/spcl_train_usl.py), re-written
    slowly in numpy with the same dense n×n comparisons. Returns the pseudo
    labels and the threshold."""

    def dbscan(e):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = sklearn_cluster.DBSCAN(eps=e, min_samples=min_samples, metric="precomputed")
            return est.fit_predict(D)

    def outliers_get_new_ids(labels):
        num = len(set(labels)) - (1 if -1 in labels else 0)
        out, outliers = [], 0
        for lab in labels:
            if lab != -1:
                out.append(lab)
            else:
                out.append(num + outliers)
                outliers += 1
        return np.array(out)

    normal = outliers_get_new_ids(dbscan(eps))
    tight = outliers_get_new_ids(dbscan(eps - eps_gap))
    loose = outliers_get_new_ids(dbscan(eps + eps_gap))
    same = (normal[:, None] == normal[None, :]).astype(np.float32)
    same_tight = (tight[:, None] == tight[None, :]).astype(np.float32)
    same_loose = (loose[:, None] == loose[None, :]).astype(np.float32)
    r_comp = 1 - np.minimum(same, same_tight).sum(-1) / np.maximum(same, same_tight).sum(-1)
    r_indep = 1 - np.minimum(same, same_loose).sum(-1) / np.maximum(same, same_loose).sum(-1)

    comp, indep = collections.defaultdict(list), collections.defaultdict(list)
    size = collections.defaultdict(int)
    for c, i, lab in zip(r_comp, r_indep, normal):
        comp[lab].append(c)
        indep[lab].append(i)
        size[lab] += 1
    cluster_comp = [min(comp[k]) for k in sorted(comp)]
    cluster_indep = [min(indep[k]) for k in sorted(indep)]
    noins = [s for s, k in zip(cluster_indep, sorted(size)) if size[k] > 1]
    if indep_thres is None:
        indep_thres = np.sort(noins)[min(len(noins) - 1, np.round(len(noins) * 0.9).astype(int))]
    labels, outliers = normal.copy(), 0
    for i, lab in enumerate(normal):
        if not (cluster_indep[lab] <= indep_thres and r_comp[i] <= cluster_comp[lab]):
            labels[i] = len(cluster_indep) + outliers
            outliers += 1
    return labels, float(indep_thres)


@cache
def jaccard_graph(n, d, k1, k2, seed=0, max_distance=None):
    X, _ = aas.datasets.make_reid_blobs(n, d=d, seed=seed)
    return aas.k_reciprocal_jaccard(X, k1=k1, k2=k2, max_distance=max_distance)


def check_labels_layout(labels, state):
    """Clusters 0..C-1 by smallest member, then one label per un-clustered point."""
    n = labels.shape[0]
    counts = np.bincount(labels)
    C = state.n_clusters
    assert counts.shape[0] == C + state.n_unclustered
    assert np.all(counts[:C] > 1) and np.all(counts[C:] == 1)
    assert np.count_nonzero(labels >= C) == state.n_unclustered
    first = np.array([np.flatnonzero(labels == c)[0] for c in range(C)], dtype=int)
    assert np.all(np.diff(first) > 0)
    np.testing.assert_array_equal(labels[labels >= C], np.arange(C, C + state.n_unclustered))
    assert labels.dtype == np.int64 and labels.shape == (n,)


# ---------------------------------------------------------------- toys


def test_hand_worked_selection():
    # eps = 0.5, gap = 0.1, min_samples = 2. Edges 0-1 (0.3), 1-2 (0.45), 2-3 (0.55), 4-5 (0.1).
    #   normal {0,1,2} {3} {4,5};  tight (0.4) {0,1} {2} {3} {4,5};  loose (0.6) {0,1,2,3} {4,5}
    #   R_comp  = 1/3, 1/3, 2/3, 0, 0, 0;   R_indep = 1/4, 1/4, 1/4, 3/4, 0, 0
    #   cluster R_comp: {0,1,2} 1/3, {3} 0, {4,5} 0; cluster R_indep: 1/4, 3/4, 0
    #   M = 2 clusters with > 1 member: sorted (0, 1/4), index min(1, round(1.8)) = 1 -> 1/4
    #   2 fails compactness (2/3 > 1/3); 3 fails independence (3/4 > 1/4).
    rows, cols = [0, 1, 2, 4], [1, 2, 3, 5]
    vals = np.array([0.3, 0.45, 0.55, 0.1], np.float32)
    D = sp.csr_array((np.r_[vals, vals], (rows + cols, cols + rows)), shape=(6, 6))
    labels, state = aas.spcl_pseudo_labels(D, eps=0.5, eps_gap=0.1, min_samples=2)
    assert labels.tolist() == [0, 0, 2, 3, 1, 1]
    assert state.indep_threshold == 0.25
    assert (state.n_clusters, state.n_unclustered) == (2, 2)
    ref, thr = spcl_oracle(D, 0.5, 0.1, 2)
    assert_same_partition(labels, ref)
    assert thr == 0.25


def test_all_noise_leaves_the_threshold_open():
    D = sp.csr_array((5, 5), dtype=np.float32)
    labels, state = aas.spcl_pseudo_labels(D, eps=0.7)
    assert labels.tolist() == [0, 1, 2, 3, 4]
    assert state.indep_threshold is None
    assert (state.n_clusters, state.n_unclustered) == (0, 5)
    # the next call that sees a cluster fixes the threshold
    G = jaccard_graph(300, 32, 10, 3)
    _, later = aas.spcl_pseudo_labels(G, eps=0.7, state=state)
    assert later.indep_threshold == aas.spcl_pseudo_labels(G, eps=0.7)[1].indep_threshold
    assert later.indep_threshold is not None


def test_one_cluster():
    n = 6
    D = sp.csr_array(np.full((n, n), 0.1, np.float32))
    labels, state = aas.spcl_pseudo_labels(D, min_samples=3)
    assert labels.tolist() == [0] * n
    assert state.indep_threshold == 0.0
    assert (state.n_clusters, state.n_unclustered) == (1, 0)


def test_single_point():
    labels, state = aas.spcl_pseudo_labels(np.zeros((1, 1), np.float32), min_samples=1)
    assert labels.tolist() == [0]
    assert (state.n_clusters, state.n_unclustered) == (0, 1)


# ---------------------------------------------------------------- oracle parity

GRAPHS = [  # (n, d, k1, k2, seed, max_distance), eps, eps_gap, min_samples
    ((600, 2048, 30, 6, 0, None), 0.6, 0.02, 4),
    ((600, 2048, 30, 6, 0, None), 0.5, 0.02, 4),
    ((600, 2048, 30, 6, 1, 0.8), 0.45, 0.05, 4),
    ((300, 32, 10, 3, 0, None), 0.7, 0.02, 4),
    ((300, 32, 10, 3, 2, None), 0.8, 0.05, 3),
    ((300, 32, 10, 3, 3, 0.9), 0.75, 0.03, 2),
]


@pytest.mark.parametrize("graph, eps, eps_gap, min_samples", GRAPHS)
def test_matches_the_spcl_oracle(graph, eps, eps_gap, min_samples):
    D = jaccard_graph(*graph)
    labels, state = aas.spcl_pseudo_labels(D, eps=eps, eps_gap=eps_gap, min_samples=min_samples)
    ref, thr = spcl_oracle(D, eps, eps_gap, min_samples)
    assert_same_partition(labels, ref)
    assert state.indep_threshold == pytest.approx(thr, rel=1e-6)
    check_labels_layout(labels, state)
    sizes = np.bincount(ref)
    assert state.n_clusters == np.count_nonzero(sizes > 1)  # SpCL's statistics line
    assert state.n_unclustered == np.count_nonzero(sizes == 1)
    assert 0 < state.n_clusters < len(labels)


def test_the_threshold_is_frozen_by_the_first_call():
    G1 = jaccard_graph(600, 2048, 30, 6, 0)
    G2 = jaccard_graph(600, 2048, 30, 6, 1)
    _, first = aas.spcl_pseudo_labels(G1, eps=0.6)
    labels, second = aas.spcl_pseudo_labels(G2, eps=0.6, state=first)
    assert second.indep_threshold == first.indep_threshold
    _, fresh = aas.spcl_pseudo_labels(G2, eps=0.6)
    assert fresh.indep_threshold != first.indep_threshold  # so reuse is visible here
    ref, _ = spcl_oracle(G2, 0.6, 0.02, 4, indep_thres=np.float32(first.indep_threshold))
    assert_same_partition(labels, ref)
    check_labels_layout(labels, second)


def test_state_is_a_frozen_dataclass():
    _, state = aas.spcl_pseudo_labels(jaccard_graph(300, 32, 10, 3), eps=0.7)
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.indep_threshold = 0.5
    assert (state.eps, state.eps_gap, state.min_samples) == (0.7, 0.02, 4)


def test_thread_count_does_not_change_the_labels():
    D = jaccard_graph(600, 2048, 30, 6)
    a, sa = aas.spcl_pseudo_labels(D, n_threads=1)
    b, sb = aas.spcl_pseudo_labels(D, n_threads=2)
    np.testing.assert_array_equal(a, b)
    assert sa == sb


# ---------------------------------------------------------------- bad input

GOOD = sp.csr_array(np.full((4, 4), 0.1, np.float32))


@pytest.mark.parametrize(
    "D, kwargs, error, match",
    [
        (
            GOOD,
            {"eps_gap": 0.7},
            ValueError,
            (
                r"'eps_gap' parameter of spcl_pseudo_labels .*"
                r"\[0, 0.6\]; got 0.7"
            ),
        ),
        (GOOD, {"eps_gap": -0.01}, ValueError, "'eps_gap' parameter"),
        (GOOD, {"eps": -1.0}, ValueError, "'eps' parameter of spcl_pseudo_labels"),
        (GOOD, {"eps": None}, TypeError, "'eps' parameter .* got None"),
        (GOOD, {"min_samples": 0}, ValueError, "'min_samples' parameter"),
        (GOOD, {"state": 0.5}, TypeError, "'state' parameter .* got float"),
        (GOOD, {"n_threads": 0}, ValueError, "'n_threads' parameter"),
        (sp.csr_array((2, 3), dtype=np.float32), {}, ValueError, "square"),
        (sp.csr_array(-GOOD.toarray()), {}, ValueError, ">= 0"),
        (np.zeros(4, np.float32), {}, ValueError, "2-D"),
        ("D", {}, TypeError, "spcl_pseudo_labels: 'D' must be a scipy.sparse"),
    ],
)
def test_bad_input_is_named_in_the_error(D, kwargs, error, match):
    with pytest.raises(error, match=match):
        aas.spcl_pseudo_labels(D, **kwargs)


def test_a_state_from_other_parameters_is_refused():
    _, state = aas.spcl_pseudo_labels(GOOD, min_samples=2)
    with pytest.raises(ValueError, match=r"state was computed with .* \(0.6, 0.02, 2\)"):
        aas.spcl_pseudo_labels(GOOD, min_samples=3, state=state)
