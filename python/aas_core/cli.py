"""The ``aas`` command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

__all__ = ["main"]


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text}")
    return value


def _jaccard_eps(text):
    # Jaccard distances lie in [0, 1]; an eps outside it clusters nothing or everything.
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a distance in [0, 1); got {text}")
    return value


def _build_parser():
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="aas",
        description="Ambiguity-aware active learning for re-identification (aas-core).",
    )
    parser.add_argument("--version", action="version", version=f"aas-core {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser(
        "demo",
        help="cluster the built-in synthetic Re-ID data and compare with the true identities",
        description=(
            "Runs kNN graph -> k-reciprocal Jaccard -> DBSCAN, SpCL pseudo-labels and FINCH "
            "on make_reid_blobs (no download) and reports clusters found vs true identities."
        ),
    )
    demo.add_argument("--n", type=_positive_int, default=4000, help="samples (default 4000)")
    demo.add_argument("--d", type=_positive_int, default=2048, help="dimension (default 2048)")
    demo.add_argument("--seed", type=int, default=0, help="data seed (default 0)")
    demo.add_argument("--k1", type=_positive_int, default=30)
    demo.add_argument("--k2", type=_positive_int, default=6)
    demo.add_argument("--eps", type=_jaccard_eps, default=0.6)
    demo.add_argument("--min-samples", type=_positive_int, default=4)
    demo.add_argument("--threads", type=int, default=None, help="threads (default: all CPUs)")
    demo.add_argument(
        "--out",
        type=Path,
        default=Path("demo_out"),
        help="directory for demo_results.json (default ./demo_out)",
    )
    demo.set_defaults(func=_demo)
    return parser


def _demo(args):
    import numpy as np

    from . import datasets, dbscan, finch, k_reciprocal_jaccard, knn_graph, spcl_pseudo_labels
    from .cluster.finch import closest_partition
    from .metrics import clustering

    timings = {}

    def stage(name, fn):
        print(f"  {name:<28}", end="", flush=True)
        t = time.perf_counter()
        out = fn()
        timings[name] = time.perf_counter() - t
        print(f"{timings[name]:7.2f} s")
        return out

    print(f"aas demo: make_reid_blobs(n={args.n}, d={args.d}, seed={args.seed})")
    X, y = stage(
        "generate data", lambda: datasets.make_reid_blobs(args.n, d=args.d, seed=args.seed)
    )
    n_true = len(np.unique(y))
    k1 = min(args.k1, args.n - 1)
    graph = stage(f"kNN graph (k={k1})", lambda: knn_graph(X, k1, n_threads=args.threads))
    # Clustering only needs distances up to eps + the self-paced gap.
    cut = min(1.0, args.eps + 0.1)
    D = stage(
        "k-reciprocal Jaccard",
        lambda: k_reciprocal_jaccard(
            graph, k1=k1, k2=min(args.k2, k1), max_distance=cut, n_threads=args.threads
        ),
    )
    labels_a = stage(
        "DBSCAN",
        lambda: dbscan(D, eps=args.eps, min_samples=args.min_samples, n_threads=args.threads),
    )
    spcl, _ = stage(
        "SpCL pseudo-labels",
        lambda: spcl_pseudo_labels(
            D, eps=args.eps, min_samples=args.min_samples, n_threads=args.threads
        ),
    )
    fin = stage("FINCH", lambda: finch(graph, n_threads=args.threads))

    n_clusters = int(labels_a.max(initial=-1) + 1)
    n_noise = int(np.sum(labels_a < 0))
    level = closest_partition(fin, n_clusters + n_noise)
    labels_b = fin.labels[:, level]

    def scores(labels):
        p, r, f = clustering.pairwise_scores(y, labels)
        return {
            "clusters": int(len(np.unique(labels[labels >= 0])) + np.sum(labels < 0)),
            "pairwise_precision": p,
            "pairwise_recall": r,
            "pairwise_f1": f,
            "ari": clustering.ari(y, labels),
            "nmi": clustering.nmi(y, labels),
        }

    results = {
        "n": args.n,
        "d": args.d,
        "seed": args.seed,
        "true_identities": n_true,
        "dbscan": {**scores(labels_a), "noise_points": n_noise},
        "spcl_pseudo_labels": scores(spcl),
        "finch": {**scores(labels_b), "level": level, "levels": list(map(int, fin.n_clusters))},
        "jaccard_entries_per_row": D.nnz / args.n,
        "seconds": timings,
    }
    print(f"\ntrue identities: {n_true}")
    print(
        f"{'method':<22}{'clusters':>9}{'pair P':>8}{'pair R':>8}{'pair F1':>9}{'ARI':>7}{'NMI':>7}"
    )
    rows = [
        ("DBSCAN (noise=single)", results["dbscan"]),
        ("SpCL pseudo-labels", results["spcl_pseudo_labels"]),
        (f"FINCH level {level}", results["finch"]),
    ]
    for name, s in rows:
        print(
            f"{name:<22}{s['clusters']:>9}{s['pairwise_precision']:>8.3f}"
            f"{s['pairwise_recall']:>8.3f}{s['pairwise_f1']:>9.3f}{s['ari']:>7.3f}{s['nmi']:>7.3f}"
        )
    print(f"DBSCAN noise points: {n_noise};  FINCH partitions: {fin.n_clusters}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "demo_results.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")
    return 0


def main(argv=None):
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError) as exc:
        print(f"aas {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
