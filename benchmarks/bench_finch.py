"""FINCH: ours (given the shared kNN graph, and from features) vs finch-clust exact.

finch-clust runs with exact first neighbours (ann_threshold above n) and
without its early exit, so every level is comparable; a second reference run
gives it exact first neighbours from faiss flat (``initial_rank``), which
also works where its own dense path cannot (see DENSE_LIMIT).

    python benchmarks/bench_finch.py --n 10000 30000
"""

from __future__ import annotations

import warnings

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
    same_partition,
    worker_args,
)

SCRIPT = "bench_finch.py"
# finch-clust's exact path computes the dense (n, n) similarity with one numpy
# matmul; numpy 2.4's bundled OpenBLAS 0.3.31 segfaults on it at n = 30000,
# d = 2048 (fine at 24000). Above this size only the faiss-1-NN variant runs.
DENSE_LIMIT = 24000


def graph_path(n: int, d: int, k: int):
    path = CACHE / f"knn_graph_n{n}_d{d}_k{k}.npz"
    if not path.exists():
        import aas_core as aas

        X, _ = load_features(n, d)
        g = aas.knn_graph(X, k)
        np.savez(path, indices=g.indices, sims=g.sims)
    return path


def worker() -> None:
    a = worker_args({"--graph": {"default": None}})
    X, _ = load_features(a.n, a.d)
    if a.worker in ("ours_graph", "ours_features"):
        import aas_core as aas
        from aas_core.cluster.finch import _finch  # finch() plus per-level timings

        inp = X
        if a.worker == "ours_graph":
            saved = np.load(a.graph)
            inp = aas.KNNGraph(saved["indices"], saved["sims"], features=X)
        levels = []
        with Timer() as t:
            res = _finch(inp, n_threads=a.threads, owner="finch", timings=levels)
        labels = res.labels
        emit(
            t.report(
                n_clusters=res.n_clusters, per_level_seconds=[round(s, 3) for _, s, _ in levels]
            )
        )
        if a.out:
            np.save(a.out, labels)
        return
    elif a.worker in ("finch_clust", "finch_clust_faiss1nn"):
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore"
            )  # "pynndescent is not installed": not used in exact mode
            from finch import FINCH
        with Timer() as t:
            initial_rank = None
            if a.worker == "finch_clust_faiss1nn":
                # Exact first neighbours from faiss flat instead of finch-clust's
                # dense sklearn pairwise_distances (see DENSE_LIMIT).
                idx, _ = faiss_rank(X, 2)
                initial_rank = np.where(idx[:, 0] == np.arange(a.n), idx[:, 1], idx[:, 0])
            labels, _, _ = FINCH(
                X,
                initial_rank=initial_rank,
                distance="cosine",
                ensure_early_exit=False,
                ann_threshold=a.n + 1,
                verbose=False,
            )
    else:
        raise SystemExit(f"unknown worker {a.worker}")
    out = t.report(n_clusters=[int(c.max() + 1) for c in labels.T])
    if a.out:
        np.save(a.out, labels)
    emit(out)


def main() -> None:
    args = driver_args()
    for n in args.n:
        graph = graph_path(n, args.d, args.k)
        common = dict(n=n, d=args.d, k=args.k, threads=args.threads)
        row = header("finch", n, args.d, args.k, args.threads)
        row["ours_given_graph"] = run_worker(
            SCRIPT, "ours_graph", graph=graph, out=CACHE / f"finch_ours_{n}.npy", **common
        )
        row["ours_from_features"] = run_worker(SCRIPT, "ours_features", **common)
        if not args.no_ref:
            ref_out = CACHE / f"finch_ref_{n}.npy"
            if n <= DENSE_LIMIT:
                row["finch_clust_exact"] = run_worker(SCRIPT, "finch_clust", out=ref_out, **common)
                row["speedup_vs_finch_clust_exact"] = ratio(
                    row["ours_from_features"], row["finch_clust_exact"]
                )
            row["finch_clust_faiss1nn"] = run_worker(
                SCRIPT, "finch_clust_faiss1nn", out=ref_out, **common
            )
            row["speedup_vs_finch_clust_faiss1nn"] = ratio(
                row["ours_from_features"], row["finch_clust_faiss1nn"]
            )
            ours = np.load(CACHE / f"finch_ours_{n}.npy")
            ref = np.load(CACHE / f"finch_ref_{n}.npy")
            common_levels = min(ours.shape[1], ref.shape[1])
            row["quality"] = {
                "levels_ours_ref": [int(ours.shape[1]), int(ref.shape[1])],
                "identical_common_levels": sum(
                    same_partition(ref[:, p], ours[:, p]) for p in range(common_levels)
                ),
                "common_levels": common_levels,
            }
        emit(row)


if __name__ == "__main__":
    import sys

    worker() if "--worker" in sys.argv else main()
