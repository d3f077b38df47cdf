"""End to end: features → kNN → Jaccard → DBSCAN → FINCH, ours vs the references.

Ours shares one kNN graph between the Jaccard distance and FINCH. The
reference chain is what the paper's code runs: faiss-cpu search + SpCL's dense
Jaccard, sklearn DBSCAN on the dense matrix, finch-clust given the exact first
neighbours from the same faiss search.
Quality: pairwise F1 and ARI against the true identities of DBSCAN's labels
(clustering A) and of the FINCH partition closest in cluster count (B).

    python benchmarks/bench_pipeline.py --n 10000 30000
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from _common import (
    Timer,
    driver_args,
    emit,
    faiss_rank,
    header,
    load_features,
    ratio,
    run_worker,
    worker_args,
)

SCRIPT = "bench_pipeline.py"
EPS, MIN_SAMPLES = 0.6, 4


def _closest_level(n_clusters, target) -> int:
    return int(np.argmin([abs(c - target) for c in n_clusters]))  # ties: the finer level


def _quality(y, a, b) -> dict:
    from aas_core.metrics.clustering import ari, pairwise_f1

    return {
        "dbscan_clusters": int(a.max() + 1),
        "dbscan_noise": int((a < 0).sum()),
        "dbscan_pairwise_f1": round(pairwise_f1(y, a), 4),
        "dbscan_ari": round(ari(y, a), 4),
        "finch_clusters": int(b.max() + 1),
        "finch_pairwise_f1": round(pairwise_f1(y, b), 4),
        "finch_ari": round(ari(y, b), 4),
    }


def worker() -> None:
    a = worker_args()
    X, y = load_features(a.n, a.d)
    stages = {}

    def lap(name, t0):
        stages[name] = round(time.perf_counter() - t0, 3)
        return time.perf_counter()

    if a.worker == "ours":
        import aas_core as aas

        with Timer() as t:
            t0 = time.perf_counter()
            graph = aas.knn_graph(X, a.k, n_threads=a.threads)
            t0 = lap("knn", t0)
            D = aas.k_reciprocal_jaccard(graph, k1=a.k, max_distance=0.7, n_threads=a.threads)
            t0 = lap("jaccard", t0)
            labels_a = aas.dbscan(D, eps=EPS, min_samples=MIN_SAMPLES, n_threads=a.threads)
            t0 = lap("dbscan", t0)
            fin = aas.finch(graph, n_threads=a.threads)
            t0 = lap("finch", t0)
        n_target = int(labels_a.max() + 1 + (labels_a < 0).sum())
        labels_b = fin.labels[:, _closest_level(fin.n_clusters, n_target)]
    elif a.worker == "ref":
        from sklearn.cluster import DBSCAN

        from _oracles import spcl_jaccard

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pynndescent missing: only used by its ANN mode
            from finch import FINCH
        with Timer() as t:
            t0 = time.perf_counter()
            rank, _ = faiss_rank(X, a.k)
            t0 = lap("knn", t0)
            J = spcl_jaccard(X, rank, k1=a.k, k2=6)
            t0 = lap("jaccard", t0)
            labels_a = (
                DBSCAN(eps=EPS, min_samples=MIN_SAMPLES, metric="precomputed", n_jobs=a.threads)
                .fit(J)
                .labels_
            )
            del J
            t0 = lap("dbscan", t0)
            # finch-clust with exact first neighbours taken from the shared faiss
            # ranking (its own dense path crashes numpy's OpenBLAS at n = 30k).
            first = np.where(rank[:, 0] == np.arange(a.n), rank[:, 1], rank[:, 0])
            c, n_clusters, _ = FINCH(
                X,
                initial_rank=first,
                distance="cosine",
                ensure_early_exit=False,
                ann_threshold=a.n + 1,
                verbose=False,
            )
            t0 = lap("finch", t0)
        n_target = int(labels_a.max() + 1 + (labels_a < 0).sum())
        labels_b = c[:, _closest_level(n_clusters, n_target)]
    else:
        raise SystemExit(f"unknown worker {a.worker}")
    emit(t.report(stages=stages, quality=_quality(y, labels_a, labels_b)))


def main() -> None:
    args = driver_args()
    for n in args.n:
        load_features(n, args.d)  # generate and cache outside the timed workers
        common = dict(n=n, d=args.d, k=args.k, threads=args.threads)
        row = header("pipeline", n, args.d, args.k, args.threads)
        row["ours"] = run_worker(SCRIPT, "ours", **common)
        if not args.no_ref:
            row["ref"] = run_worker(SCRIPT, "ref", **common)
            row["speedup"] = ratio(row["ours"], row["ref"])
        emit(row)


if __name__ == "__main__":
    import sys

    worker() if "--worker" in sys.argv else main()
