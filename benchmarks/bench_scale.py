"""Scale check: k_reciprocal_jaccard from features at large n (default 200k × 2048).

Only ours runs (SpCL's dense n×n matrices would need 160 GB at 200k); the
point is that it completes within the machine's memory. Not part of run.sh
(the kNN alone takes ~9 minutes on 2 cores).

    python benchmarks/bench_scale.py --n 200000
"""

from __future__ import annotations

import time

from _common import Timer, driver_args, emit, header, load_features, run_worker, worker_args

SCRIPT = "bench_scale.py"


def worker() -> None:
    a = worker_args()
    X, _ = load_features(a.n, a.d)
    import aas_core as aas

    with Timer() as t:
        t0 = time.perf_counter()
        graph = aas.knn_graph(X, a.k, n_threads=a.threads)
        knn_s = time.perf_counter() - t0
        D = aas.k_reciprocal_jaccard(graph, k1=a.k, max_distance=0.7, n_threads=a.threads)
    emit(t.report(knn_seconds=round(knn_s, 1), nnz_per_row=round(D.nnz / a.n, 2)))


def main() -> None:
    args = driver_args(default_n=(200000,))
    for n in args.n:
        load_features(n, args.d)
        row = header("jaccard_scale", n, args.d, args.k, args.threads)
        row["ours"] = run_worker(SCRIPT, "ours", n=n, d=args.d, k=args.k, threads=args.threads)
        emit(row)


if __name__ == "__main__":
    import sys

    worker() if "--worker" in sys.argv else main()
