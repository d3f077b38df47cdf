"""DBSCAN on the sparse Jaccard graph: ours vs sklearn (same graph, one run).

The graph is ours k_reciprocal_jaccard(X, max_distance=0.7) on make_reid_blobs,
prepared once and cached. sklearn gets the same CSR (metric="precomputed";
absent entries are not neighbours for it either) and, as SpCL feeds it, the
dense matrix (absent = 1).

    python benchmarks/bench_dbscan.py --n 10000 30000
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from _common import (
    CACHE,
    Timer,
    driver_args,
    emit,
    header,
    ratio,
    run_worker,
    same_partition,
    worker_args,
)

SCRIPT = "bench_dbscan.py"
EPS, MIN_SAMPLES = 0.6, 4


def graph_path(n: int, d: int, k: int) -> str:
    path = CACHE / f"jaccard_graph_n{n}_d{d}_k{k}.npz"
    if not path.exists():
        import aas_core as aas
        from _common import load_features

        X, _ = load_features(n, d)
        D = aas.k_reciprocal_jaccard(X, k1=k, max_distance=0.7)
        sp.save_npz(path, sp.csr_matrix(D), compressed=False)
    return path


def worker() -> None:
    a = worker_args({"--graph": {"required": True}})
    D = sp.csr_array(sp.load_npz(a.graph))
    if a.worker == "ours":
        import aas_core as aas

        with Timer() as t:
            labels = aas.dbscan(D, eps=EPS, min_samples=MIN_SAMPLES, n_threads=a.threads)
    elif a.worker in ("sklearn", "sklearn_dense"):
        from sklearn.cluster import DBSCAN

        if a.worker == "sklearn_dense":
            import aas_core as aas

            D = aas.to_dense_distance(D)
        with Timer() as t:
            labels = (
                DBSCAN(eps=EPS, min_samples=MIN_SAMPLES, metric="precomputed", n_jobs=a.threads)
                .fit(D)
                .labels_
            )
    else:
        raise SystemExit(f"unknown worker {a.worker}")
    res = t.report(n_clusters=int(labels.max() + 1), n_noise=int((labels < 0).sum()))
    if a.out:
        np.save(a.out, labels)
    emit(res)


def main() -> None:
    from aas_core._labels import outliers_to_singletons

    args = driver_args()
    for n in args.n:
        graph = graph_path(n, args.d, args.k)
        common = dict(n=n, d=args.d, k=args.k, threads=args.threads, graph=graph)
        row = header("dbscan", n, args.d, args.k, args.threads)
        row["eps"], row["min_samples"] = EPS, MIN_SAMPLES
        row["ours"] = run_worker(SCRIPT, "ours", out=CACHE / f"dbscan_ours_{n}.npy", **common)
        if not args.no_ref:
            row["sklearn_sparse"] = run_worker(
                SCRIPT, "sklearn", out=CACHE / f"dbscan_ref_{n}.npy", **common
            )
            row["sklearn_dense"] = run_worker(SCRIPT, "sklearn_dense", **common)
            row["speedup_vs_sklearn_sparse"] = ratio(row["ours"], row["sklearn_sparse"])
            row["speedup_vs_sklearn_dense"] = ratio(row["ours"], row["sklearn_dense"])
            ours = np.load(CACHE / f"dbscan_ours_{n}.npy")
            ref = np.load(CACHE / f"dbscan_ref_{n}.npy")
            row["quality"] = {
                "identical_labels": bool(np.array_equal(ours, ref)),
                "same_noise": bool(np.array_equal(ours < 0, ref < 0)),
                "same_partition": same_partition(
                    outliers_to_singletons(ours), outliers_to_singletons(ref)
                ),
            }
        emit(row)


if __name__ == "__main__":
    import sys

    worker() if "--worker" in sys.argv else main()
