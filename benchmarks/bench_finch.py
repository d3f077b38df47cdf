"""FINCH timing per level (DESIGN.md §6): python benchmarks/bench_finch.py N [--d D] [--cache DIR]

Prints one JSON line: the kNN graph time, FINCH given the graph (per level),
and FINCH from features (per level), measured in one process after one
warm-up. With --cache the features and graph are kept as .npy files.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time

import aas_core as aas
import numpy as np
from aas_core.cluster.finch import _finch


def _timed(inp, threads):
    levels = []
    t = time.perf_counter()
    r = _finch(inp, n_threads=threads, owner="finch", timings=levels)
    total = time.perf_counter() - t
    return r, total, [{"level": name, "seconds": round(s, 4), "clusters": c} for name, s, c in levels]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int)
    ap.add_argument("--d", type=int, default=2048)
    ap.add_argument("--k", type=int, default=30)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cache", default=None)
    args = ap.parse_args()
    stem = os.path.join(args.cache, f"finch_{args.n}_{args.d}_") if args.cache else None
    if stem and os.path.exists(stem + "x.npy"):
        X = np.load(stem + "x.npy")
    else:
        X, _ = aas.datasets.make_reid_blobs(args.n, d=args.d, seed=0)
    t = time.perf_counter()
    if stem and os.path.exists(stem + "idx.npy"):
        g = aas.KNNGraph(np.load(stem + "idx.npy"), np.load(stem + "sims.npy"), features=X)
        knn_s = None
    else:
        g = aas.knn_graph(X, args.k, n_threads=args.threads)
        knn_s = time.perf_counter() - t
        if stem:
            np.save(stem + "x.npy", X), np.save(stem + "idx.npy", g.indices)
            np.save(stem + "sims.npy", g.sims)
    _timed(g, args.threads)  # warm-up
    r, graph_s, graph_levels = _timed(g, args.threads)
    r2, feat_s, feat_levels = _timed(X, args.threads)
    assert np.array_equal(r.labels, r2.labels)
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=False).stdout.strip()
    except OSError:
        sha = ""
    print(json.dumps({
        "kernel": "finch", "n": args.n, "d": args.d, "k": args.k,
        "threads": args.threads, "knn_seconds": knn_s,
        "finch_given_graph_seconds": round(graph_s, 4), "given_graph_levels": graph_levels,
        "finch_from_features_seconds": round(feat_s, 4), "from_features_levels": feat_levels,
        "n_clusters": r.n_clusters, "git": sha, "machine": platform.node(),
        "cpus": len(os.sched_getaffinity(0)),
    }))


if __name__ == "__main__":
    main()
