"""The bf16 kNN's fallback share (rows its rounding bound does not certify, recomputed in
fp32) on make_reid_blobs and on members of aas_core.datasets.GENERATOR_SUITE, with the
rows where its graph differs from the one-FMA-per-element fp32 graph (every row through
the fallback: must be 0) and from the BLAS fp32 graph (float rounding at near-ties).
One process, side by side; seconds are for ratios only on a shared machine.

    python benchmarks/bench_knn_fallback.py --n 10000
"""

from __future__ import annotations

import time

from _common import driver_args, emit, header, load_features

SUITE = ("zipf0.5-20-d512", "anisotropic")


def _differ(a_idx, a_sims, b_idx, b_sims) -> dict:
    return {
        "rows_differ": int((a_idx != b_idx).any(axis=1).sum()),
        "sims_differ_rows": int((a_sims != b_sims).any(axis=1).sum()),
    }


def main() -> None:
    args = driver_args(extra={"--suite": {"nargs": "*", "default": list(SUITE)}})
    import aas_core as aas
    from aas_core import _core
    from aas_core._precision import _cpu_bf16_kernel
    from aas_core.datasets import make_suite_member
    from aas_core.neighbors import normalize_rows

    kernel = _cpu_bf16_kernel()
    if kernel is None:
        raise SystemExit("this CPU has no AMX or AVX512-BF16: the bf16 search does not run here")
    for n in args.n:
        sets = {f"make_reid_blobs(d={args.d})": load_features(n, args.d)[0]}
        for name in args.suite:
            sets[name] = make_suite_member(name, n=n, seed=0)[0]
        for name, X in sets.items():
            X = normalize_rows(X)
            row = header("knn_fallback", n, X.shape[1], args.k, args.threads)
            row["data"] = name
            t0 = time.perf_counter()
            f = aas.knn_graph(X, args.k, precision="fp32", n_threads=args.threads)
            row["fp32_seconds"] = round(time.perf_counter() - t0, 3)
            t0 = time.perf_counter()
            g = aas.knn_graph(X, args.k, precision="bf16", n_threads=args.threads)
            row["bf16_seconds"] = round(time.perf_counter() - t0, 3)
            row["precision"], row["kernel"] = g.precision, kernel
            row["widened_rows"], row["fallback_rows"] = g.widened_rows, g.fallback_rows
            row["fallback_share"] = round(g.fallback_rows / n, 5)
            idx, sims, *_ = _core.knn_graph_bf16(X, args.k, True, 0, kernel, True, args.threads)
            row["vs_exact_fp32"] = _differ(g.indices, g.sims, idx, sims)
            row["vs_blas_fp32"] = _differ(g.indices, g.sims, f.indices, f.sims)
            emit(row)


if __name__ == "__main__":
    main()
