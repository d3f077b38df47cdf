"""Exact cosine kNN graph: ours vs faiss-cpu IndexFlatIP (and sklearn brute).

python benchmarks/bench_knn.py --n 10000 30000
"""

from __future__ import annotations

import numpy as np

from _common import (
    CACHE,
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

SCRIPT = "bench_knn.py"


def worker() -> None:
    a = worker_args()
    X, _ = load_features(a.n, a.d)
    if a.worker == "ours":
        import aas_core as aas

        with Timer() as t:
            g = aas.knn_graph(X, a.k, n_threads=a.threads)
        idx, sims = g.indices, g.sims
    elif a.worker == "faiss":
        with Timer() as t:
            idx, sims = faiss_rank(X, a.k)
    elif a.worker == "sklearn":
        from sklearn.neighbors import NearestNeighbors

        with Timer() as t:
            dist, idx = (
                NearestNeighbors(
                    n_neighbors=a.k, metric="cosine", algorithm="brute", n_jobs=a.threads
                )
                .fit(X)
                .kneighbors(X)
            )
        sims = 1 - dist
    else:
        raise SystemExit(f"unknown worker {a.worker}")
    res = t.report()
    if a.out:
        np.savez(a.out, indices=idx, sims=sims)
    emit(res)


def main() -> None:
    args = driver_args()
    for n in args.n:
        out = {"ours": CACHE / f"knn_ours_{n}.npz", "faiss": CACHE / f"knn_faiss_{n}.npz"}
        row = header("knn", n, args.d, args.k, args.threads)
        row["ours"] = run_worker(
            SCRIPT, "ours", n=n, d=args.d, k=args.k, threads=args.threads, out=out["ours"]
        )
        if not args.no_ref:
            row["faiss"] = run_worker(
                SCRIPT, "faiss", n=n, d=args.d, k=args.k, threads=args.threads, out=out["faiss"]
            )
            row["sklearn"] = run_worker(
                SCRIPT, "sklearn", n=n, d=args.d, k=args.k, threads=args.threads
            )
            row["speedup_vs_faiss"] = ratio(row["ours"], row["faiss"])
            row["speedup_vs_sklearn"] = ratio(row["ours"], row["sklearn"])
            ours, ref = np.load(out["ours"]), np.load(out["faiss"])
            same = np.mean([set(a) == set(b) for a, b in zip(ours["indices"], ref["indices"])])
            row["quality"] = {
                "rows_same_neighbour_set_as_faiss": round(float(same), 5),
                "max_abs_sim_diff": float(np.abs(ours["sims"] - ref["sims"]).max()),
            }
        emit(row)


if __name__ == "__main__":
    import sys

    worker() if "--worker" in sys.argv else main()
