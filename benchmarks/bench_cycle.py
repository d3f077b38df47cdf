"""One AAS cycle (features → proposal) against the kNN graph alone, side by side.

The cycle is what an active-learning round runs on fixed embeddings
(target: a cycle ≤ 1.3 × the kNN time):

    knn_graph(X, 30) → k_reciprocal_jaccard(graph, k1=30, k2=6, max_distance=0.7)
    → dbscan(D, eps=0.6, min_samples=4)
    → finch(graph, stop_at_clusters=t) + closest_partition(fin, t),
      t = DBSCAN clusters + outliers (outliers count as singletons)
    → np3 of A and B with the constraints so far (none here, as in a first
      cycle: a validated copy)
    → AmbiguityAwareSampler().propose_from(X, A, B, D, constraints,
      budget = 0.02% of all pairs, rng=default_rng(0), graph=graph)

Two fresh worker processes per size, pinned to the same threads: "knn" times
``knn_graph(X, 30)`` alone, "cycle" times the whole cycle with per-stage
seconds. ``ratio`` is cycle / knn of the same run; ``ratio_in_process`` is the
cycle over its own kNN stage. After the timed cycle the worker times the
proposal's parts once more, separately (``propose_parts``), to show where
its time goes. With ``--repeat R`` the two workers alternate R times and the
fastest of each is reported (the least disturbed on a shared machine), and
``ratio_stagewise`` sums each stage's fastest time over the R cycles.

    python benchmarks/bench_cycle.py --n 10000 30000
"""

from __future__ import annotations

import time

import numpy as np

from _common import Timer, driver_args, emit, header, load_features, run_worker, worker_args

SCRIPT = "bench_cycle.py"
K, K2, MAX_DISTANCE, EPS, MIN_SAMPLES = 30, 6, 0.7, 0.6, 4
BUDGET_FRACTION = 0.0002  # of all n(n-1)/2 pairs per cycle (paper: 0.02%)


def worker() -> None:
    a = worker_args()
    X, _ = load_features(a.n, a.d)
    import aas_core as aas
    from aas_core.cluster import closest_partition
    from aas_core.sampling import AmbiguityAwareSampler

    if a.worker == "knn":
        with Timer() as t:
            aas.knn_graph(X, a.k, n_threads=a.threads)
        emit(t.report())
        return
    if a.worker != "cycle":
        raise SystemExit(f"unknown worker {a.worker}")

    n = a.n
    budget = int(BUDGET_FRACTION * n * (n - 1) / 2)
    stages = {}
    clock = [time.perf_counter()]

    def lap(name):
        now = time.perf_counter()
        stages[name] = round(now - clock[0], 3)
        clock[0] = now

    constraints = aas.PairConstraints(n=n)
    with Timer() as t:
        clock[0] = time.perf_counter()
        graph = aas.knn_graph(X, a.k, n_threads=a.threads)
        lap("knn")
        D = aas.k_reciprocal_jaccard(
            graph, k1=a.k, k2=K2, max_distance=MAX_DISTANCE, n_threads=a.threads
        )
        lap("jaccard")
        labels_a = aas.dbscan(D, eps=EPS, min_samples=MIN_SAMPLES, n_threads=a.threads)
        lap("dbscan")
        target = int(labels_a.max() + 1 + (labels_a < 0).sum())
        fin = aas.finch(graph, stop_at_clusters=target, n_threads=a.threads)
        labels_b = fin.labels[:, closest_partition(fin, target)]
        lap("finch")
        labels_a = aas.np3(labels_a, constraints, X)  # the answers so far (none yet)
        labels_b = aas.np3(labels_b, constraints, X)
        lap("np3")
        proposal = AmbiguityAwareSampler().propose_from(
            X, labels_a, labels_b, D, constraints, budget, rng=np.random.default_rng(0), graph=graph
        )
        lap("propose")
    report = t.report(stages=stages)
    report["propose_parts"] = _propose_parts(X, labels_a, labels_b, D, graph, a.threads)
    report["result"] = {
        "dbscan_clusters": int(labels_a.max() + 1),
        "dbscan_outliers": int((labels_a < 0).sum()),
        "finch_levels_computed": fin.n_clusters,
        "finch_clusters_chosen": int(labels_b.max() + 1),
        "budget": budget,
        "candidates": int(proposal.n_candidates),
        "proposed": len(proposal),
        "inside_regions": int((proposal.pool == "us").sum()),
        "over_segmentation": int((proposal.pool == "os").sum()),
        "message": proposal.message,
    }
    emit(report)


def _propose_parts(X, labels_a, labels_b, D, graph, threads) -> dict:
    """The default proposal's steps timed one by one (outside the timed cycle)."""
    from aas_core import PairConstraints
    from aas_core._validation import as_distance_graph, as_features
    from aas_core.sampling import uncertainty_regions
    from aas_core.sampling.aas import _knn_edges
    from aas_core.sampling.base import neighbour_rows
    from aas_core.sampling.cells import (
        cell_medoids,
        cells,
        linked_cell_pairs,
        nearest_cell_pairs,
    )
    from aas_core.sampling.pools import _closest_inconsistent_pairs

    parts = {}
    t0 = time.perf_counter()

    def lap(name):
        nonlocal t0
        now = time.perf_counter()
        parts[name] = round(now - t0, 4)
        t0 = now

    X = as_features(X, owner="bench")
    dist = as_distance_graph(D, owner="bench")
    neighbours = neighbour_rows(X, graph)[0]
    lap("validate")
    r = uncertainty_regions(labels_a, labels_b)
    lap("regions")
    us = _closest_inconsistent_pairs(X, r, r.region, threads)[0]
    lap("closest_pairs")
    us = us[_knn_edges(us, neighbours)]
    lap("knn_edge_filter")
    cell, n_cells = cells(r.labels_a, r.labels_b)
    medoids, dirs = cell_medoids(X, cell, n_cells, threads)
    lap("cells_and_medoids")
    linked = linked_cell_pairs(cell, dist, 0.3)[0]
    lap("linked_cell_pairs")
    near = nearest_cell_pairs(cell, medoids, dirs, neighbours, PairConstraints(), 5, threads)[0]
    lap("nearest_cell_pairs")
    parts.update(
        regions_n=r.n_regions,
        cells_n=n_cells,
        us_pairs=len(us),
        linked=len(linked),
        nearest=len(near),
    )
    return parts


def main() -> None:
    args = driver_args(
        extra={"--repeat": {"type": int, "default": 1, "help": "alternate the workers R times"}}
    )
    for n in args.n:
        load_features(n, args.d)  # generate and cache outside the timed workers
        common = dict(n=n, d=args.d, k=args.k, threads=args.threads)
        row = header("cycle", n, args.d, args.k, args.threads)
        knn, cycle = [], []
        for _ in range(max(1, args.repeat)):
            knn.append(run_worker(SCRIPT, "knn", **common))
            cycle.append(run_worker(SCRIPT, "cycle", **common))
        row["knn"] = min(knn, key=lambda r: r["seconds"])
        row["cycle"] = min(cycle, key=lambda r: r["seconds"])
        if len(knn) > 1:
            row["knn_all_seconds"] = [r["seconds"] for r in knn]
            row["cycle_all_seconds"] = [r["seconds"] for r in cycle]
        c = row["cycle"]
        row["ratio"] = round(c["seconds"] / row["knn"]["seconds"], 3)
        row["ratio_in_process"] = round(c["seconds"] / c["stages"]["knn"], 3)
        row["after_knn_seconds"] = round(c["seconds"] - c["stages"]["knn"], 3)
        if len(cycle) > 1:
            # each stage at its least disturbed: robust to bursts of other load
            best = {s: min(r["stages"][s] for r in cycle) for s in c["stages"]}
            row["stages_min"] = best
            row["ratio_stagewise"] = round(sum(best.values()) / row["knn"]["seconds"], 3)
        emit(row)


if __name__ == "__main__":
    import sys

    worker() if "--worker" in sys.argv else main()
