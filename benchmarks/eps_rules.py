"""Candidate data-only rules for DBSCAN's eps, measured by ``bench_defaults.py --rules``.

Issue 24 asks for a default eps whose pairwise-F1 regret against the best
fixed eps is at most 0.03 on every generator-suite member and development
set. These are the rules we tried; each reads only what the clustering
already has (the kNN graph, the k-reciprocal Jaccard distances, FINCH) and
returns one eps. None is in the library: none came near the target on every
set (see benchmarks/README.md), and the library's ``eps="auto"`` stays the
core-share rule (``core65`` here).

Rules that need a DBSCAN per eps use ``grid`` (the benchmark's grid), which
at 2,500 points costs well under a second.
"""

from __future__ import annotations

import numpy as np

RULES = (
    "core65",
    "kdist-q70",
    "otsu5",
    "otsu10",
    "finch0",
    "finch1",
    "count",
    "knn-f1-a1.5",
    "knn-f1-a2",
    "knn-f1-a3",
    "max(knn-f1-a2,count)",
    "gmm2-knn-f1",
)


def _otsu(values: np.ndarray, bins: int = 100) -> float:
    """The threshold of largest between-class variance of ``values`` in [0, 1]."""
    h, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    h = h.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(h)
    w1 = w0[-1] - w0
    m0 = np.cumsum(h * centres)
    m1 = m0[-1] - m0
    with np.errstate(all="ignore"):
        between = w0 * w1 * (m0 / w0 - m1 / w1) ** 2
    return float(edges[1:][np.nanargmax(between)])


def _knn_edges(D, indices: np.ndarray, k: int):
    """(rows, cols, Jaccard distance) of each point's k - 1 nearest others (absent = 1)."""
    from aas_core.cluster.eps import _distances

    n = indices.shape[0]
    nb = indices[:, 1:k]
    rows = np.repeat(np.arange(n), nb.shape[1])
    cols = nb.ravel()
    return rows, cols, _distances(D, np.stack([rows, cols], axis=1))


def _expected_f1(p: np.ndarray, together: list) -> np.ndarray:
    """Pairwise F1 on the kNN edges if edge e is the same animal with probability p[e]."""
    total = p.sum()
    return np.array([2 * p[t].sum() / (t.sum() + total) if total else 0.0 for t in together])


def choose(rule: str, *, D, graph, finch_labels, grid, labels=None, min_samples: int = 4) -> float:
    """The eps ``rule`` picks (see the module notes); ``labels``: DBSCAN at each grid eps."""
    from aas_core.cluster.dbscan import dbscan
    from aas_core.cluster.eps import data_eps, kth_neighbour_distance
    from aas_core.metrics.clustering import pairwise_f1

    D = D.tocsr()
    grid = np.asarray(grid, np.float64)
    if rule == "core65":
        return data_eps(D, min_samples=min_samples)  # the library's eps="auto"
    if rule == "kdist-q70":
        return float(np.quantile(kth_neighbour_distance(D, min_samples), 0.70))
    if rule.startswith("otsu"):
        return _otsu(_knn_edges(D, graph.indices, int(rule[4:]))[2])
    if labels is None:
        labels = [dbscan(D, eps=float(e), min_samples=min_samples) for e in grid]
    if rule.startswith("finch"):
        level = finch_labels[:, min(int(rule[5:]), finch_labels.shape[1] - 1)]
        return float(grid[int(np.argmax([pairwise_f1(level, lab) for lab in labels]))])
    if rule == "count":  # the eps with the most clusters
        return float(grid[int(np.argmax([len(np.unique(lab[lab >= 0])) for lab in labels]))])
    rows, cols, d = _knn_edges(D, graph.indices, 30)
    together = [(lab[rows] == lab[cols]) & (lab[rows] >= 0) for lab in labels]
    if rule.startswith("knn-f1-a"):
        p = (1 - d) ** float(rule[len("knn-f1-a") :])
        return float(grid[int(np.argmax(_expected_f1(p, together)))])
    if rule == "max(knn-f1-a2,count)":
        kw = dict(D=D, graph=graph, finch_labels=finch_labels, grid=grid, labels=labels)
        a, b = choose("knn-f1-a2", **kw), choose("count", **kw)
        return max(a, b)
    if rule == "gmm2-knn-f1":  # two Gaussians on the kNN cosine similarities
        from sklearn.mixture import GaussianMixture

        sims = graph.sims[:, 1:30].ravel().astype(np.float64)[:, None]
        gm = GaussianMixture(2, random_state=0).fit(sims)
        p = gm.predict_proba(sims)[:, int(np.argmax(gm.means_.ravel()))]
        return float(grid[int(np.argmax(_expected_f1(p, together)))])
    raise ValueError(f"unknown rule {rule!r}")


def regrets(rules, *, D, graph, finch_labels, grid, grid_f1: dict) -> dict:
    """Per rule: its eps and its regret (best grid F1 - F1 at the grid eps nearest its eps)."""
    eps_grid = np.array([float(e) for e in grid_f1])
    f1 = np.array(list(grid_f1.values()))
    from aas_core.cluster.dbscan import dbscan

    labels = [dbscan(D, eps=float(e), min_samples=4) for e in grid]
    out = {}
    for rule in rules:
        eps = choose(rule, D=D, graph=graph, finch_labels=finch_labels, grid=grid, labels=labels)
        near = int(np.argmin(np.abs(eps_grid - eps)))
        out[rule] = {"eps": round(eps, 4), "regret": round(float(f1.max() - f1[near]), 4)}
    return out
