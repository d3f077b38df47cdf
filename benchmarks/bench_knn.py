"""Exact cosine kNN graph: ours vs faiss-cpu IndexFlatIP (and sklearn brute).

python benchmarks/bench_knn.py --n 10000 30000

Ours runs twice, precision "fp32" (BLAS candidates re-ranked by one fused multiply-add
per element) and --precision (default "auto": the bf16 candidate search where the CPU
has AMX or AVX512-BF16, see aas_core.neighbors.cpu_precision()); each result says which
precision and kernel ran and how many rows its rounding bound sent to the fp32 fallback
(fallback_rows, fallback_share). The two graphs must be the same (lp_vs_fp32
rows_differ 0). --exact-check also builds the fp32 graph of one fused multiply-add per
element (every row through the fp32 fallback; slow) and counts the rows where the bf16
graph differs from it.
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


PRECISIONS = ("auto", "fp32", "bf16")


def worker() -> None:
    a = worker_args({"--precision": {"default": "fp32", "choices": PRECISIONS}})
    X, _ = load_features(a.n, a.d)
    extra = {}
    if a.worker == "ours":
        import aas_core as aas

        with Timer() as t:
            g = aas.knn_graph(X, a.k, n_threads=a.threads, precision=a.precision)
        idx, sims = g.indices, g.sims
        from aas_core._precision import _cpu_bf16_kernel

        extra = {
            "precision": g.precision,
            # the bf16 search's kernel: "amx" (AMX tiles) or "avx512" (AVX512-BF16)
            "kernel": _cpu_bf16_kernel() if g.precision == "bf16" else "blas",
            "widened_rows": g.widened_rows,
            "fallback_rows": g.fallback_rows,
            "fallback_share": round(g.fallback_rows / a.n, 5),
        }
    elif a.worker == "exact":
        # the dot_fma graph: every row through the bf16 path's fp32 fallback
        from aas_core import _core
        from aas_core.neighbors import normalize_rows

        Xn = normalize_rows(X)
        from aas_core._precision import _cpu_bf16_kernel

        kernel = _cpu_bf16_kernel() or "portable"
        with Timer() as t:
            idx, sims, *_ = _core.knn_graph_bf16(Xn, a.k, True, 0, kernel, True, a.threads)
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
    res = t.report(**extra)
    if a.out:
        np.savez(a.out, indices=idx, sims=sims)
    emit(res)


def _differ(a, b) -> dict:
    """How two graphs' rows differ: neighbour lists, neighbour sets, similarities."""
    lists = int((a["indices"] != b["indices"]).any(axis=1).sum())
    sets = sum(set(x) != set(y) for x, y in zip(a["indices"], b["indices"]))
    return {
        "rows_differ": lists,
        "rows_differ_as_sets": int(sets),
        "max_abs_sim_diff": float(np.abs(a["sims"] - b["sims"]).max()),
    }


def main() -> None:
    args = driver_args(
        extra={
            "--precision": {
                "default": "auto",
                "choices": PRECISIONS,
                "help": "the second run of ours (the first is fp32)",
            },
            "--exact-check": {
                "action": "store_true",
                "help": "compare with the one-FMA-per-element fp32 graph (slow)",
            },
        }
    )
    for n in args.n:
        out = {
            name: CACHE / f"knn_{name}_{n}.npz" for name in ("ours", "ours_lp", "faiss", "exact")
        }
        row = header("knn", n, args.d, args.k, args.threads)
        common = dict(n=n, d=args.d, k=args.k, threads=args.threads)
        row["ours"] = run_worker(SCRIPT, "ours", out=out["ours"], precision="fp32", **common)
        row["ours_lp"] = run_worker(
            SCRIPT, "ours", out=out["ours_lp"], precision=args.precision, **common
        )
        row["lp_vs_fp32_seconds"] = round(row["ours_lp"]["seconds"] / row["ours"]["seconds"], 3)
        graphs = {name: np.load(out[name]) for name in ("ours", "ours_lp")}
        row["lp_vs_fp32"] = _differ(graphs["ours_lp"], graphs["ours"])
        if args.exact_check:
            row["exact"] = run_worker(SCRIPT, "exact", out=out["exact"], **common)
            row["lp_vs_exact"] = _differ(graphs["ours_lp"], np.load(out["exact"]))
        if not args.no_ref:
            row["faiss"] = run_worker(SCRIPT, "faiss", out=out["faiss"], **common)
            row["sklearn"] = run_worker(SCRIPT, "sklearn", **common)
            row["speedup_vs_faiss"] = ratio(row["ours"], row["faiss"])
            row["lp_speedup_vs_faiss"] = ratio(row["ours_lp"], row["faiss"])
            row["lp_seconds_over_faiss"] = round(
                row["ours_lp"]["seconds"] / row["faiss"]["seconds"], 3
            )
            row["speedup_vs_sklearn"] = ratio(row["ours"], row["sklearn"])
            ours, ref = graphs["ours"], np.load(out["faiss"])
            same = np.mean([set(a) == set(b) for a, b in zip(ours["indices"], ref["indices"])])
            row["quality"] = {
                "rows_same_neighbour_set_as_faiss": round(float(same), 5),
                "max_abs_sim_diff": float(np.abs(ours["sims"] - ref["sims"]).max()),
            }
        emit(row)


if __name__ == "__main__":
    import sys

    worker() if "--worker" in sys.argv else main()
