"""FINCH's exact first neighbours among cluster means: fp32 (BLAS tiles, what finch runs
on a CPU without AVX512-BF16) vs the bf16 candidate search (knn_graph's precision="bf16"
path, what it runs with it), level by level on the means FINCH itself reaches from a
kNN graph; side by side in one process.

    python benchmarks/bench_finch_means.py --n 30000
"""

from __future__ import annotations

import time

import numpy as np

from _common import driver_args, emit, header, load_features


def main() -> None:
    args = driver_args()
    import aas_core as aas
    from aas_core import _core
    from aas_core._precision import _cpu_bf16_kernel
    from aas_core.cluster.finch import _first_neighbours_from_graph
    from aas_core.neighbors import _knn_blas, cpu_precision

    kernel = _cpu_bf16_kernel()
    for n in args.n:
        X, _ = load_features(n, args.d)
        g = aas.knn_graph(X, args.k, n_threads=args.threads)
        X, kappa = _first_neighbours_from_graph(g, "bench")
        labels, count = _core.finch_link(np.ascontiguousarray(kappa))
        src, weights, rows_of = X, np.ones(X.shape[0]), labels
        row = header("finch_means", n, args.d, args.k, args.threads)
        row["precision"], row["kernel"], row["levels"] = cpu_precision(), kernel, []
        while count > 1:
            means, norms = _core.cluster_directions(src, weights, rows_of, count, args.threads)
            t0 = time.perf_counter()
            fp32 = _knn_blas(means, 1, False, args.threads)[0][:, 0]
            level = {"means": int(count), "fp32_seconds": round(time.perf_counter() - t0, 4)}
            if kernel is not None and count > 2:
                t0 = time.perf_counter()
                idx, _, widened, fallback = _core.knn_graph_bf16(
                    means, 1, False, 0, kernel, False, args.threads
                )
                level["bf16_seconds"] = round(time.perf_counter() - t0, 4)
                level["widened_rows"], level["fallback_rows"] = int(widened), int(fallback)
                level["first_neighbours_differ"] = int((idx[:, 0] != fp32).sum())
            row["levels"].append(level)
            merged, new = _core.finch_link(np.ascontiguousarray(fp32))
            if new == 1 or new >= count:
                break
            src, weights, rows_of, count = means, norms, merged, int(new)
        row["fp32_total"] = round(sum(lv["fp32_seconds"] for lv in row["levels"]), 3)
        if kernel is not None:
            row["bf16_total"] = round(sum(lv.get("bf16_seconds", 0) for lv in row["levels"]), 3)
        emit(row)


if __name__ == "__main__":
    main()
