"""``aas refine``: identities from the embeddings and every answer (NP3)."""

from __future__ import annotations

from pathlib import Path

from ._common import (
    _add_clustering_args,
    _add_input_args,
    _add_merge_arg,
    _check_out,
    _cluster,
    _load_inputs,
    _write_csv,
)


def add_parser(sub):
    ref = sub.add_parser(
        "refine",
        help="identities from embeddings + answers (NP3) -> index,identity CSV",
        description=(
            "Clusters the embeddings (DBSCAN on the k-reciprocal Jaccard distance, or FINCH), "
            "applies every answer with NP3 and writes index,identity. Every image gets an "
            "identity; a DBSCAN outlier that no answer places is its own identity unless "
            "--keep-outliers writes it as -1. With --store (an 'aas annotate' store) the "
            "answers come from the store and the CSV is image_path,identity."
        ),
    )
    _add_input_args(ref)
    ref.add_argument("--clustering", choices=("dbscan", "finch"), default="dbscan")
    ref.add_argument(
        "--on-conflict",
        choices=("raise", "drop_oldest"),
        default="raise",
        help="contradictory answers: stop with an error (default) or ignore the oldest",
    )
    _add_merge_arg(ref)
    ref.add_argument("--keep-outliers", action="store_true", help="write outliers as -1")
    ref.add_argument("--out", type=Path, default=Path("identities.csv"))
    _add_clustering_args(ref)
    ref.set_defaults(func=run)


def run(args):
    import numpy as np

    from ..refine import np3

    _check_out(args.out, "--out")
    X, constraints, store = _load_inputs(args)
    image_paths = None
    if store is not None:
        image_paths = store.image_paths()
        store.close()
    n = len(X)
    state = _cluster(X, args, constraints)
    base = state.labels_a if args.clustering == "dbscan" else state.labels_b
    labels, dropped = np3(
        base,
        constraints,
        state.X,
        on_conflict=args.on_conflict,
        merge=args.merge,
        return_dropped=True,
    )
    if not args.keep_outliers:
        noise = labels < 0
        labels = labels.copy()
        labels[noise] = labels.max(initial=-1) + 1 + np.arange(int(noise.sum()))
    # identities 0.. in order of each identity's first image
    keep = labels >= 0
    _, first, inv = np.unique(labels[keep], return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    out = np.full(n, -1, np.int64)
    out[keep] = rank[inv]
    if image_paths is None:
        rows = [["index", "identity"], *zip(range(n), out.tolist())]
    else:
        rows = [["image_path", "identity"], *zip(image_paths, out.tolist())]
    _write_csv(args.out, rows, "--out")
    print(
        f"{n} images -> {len(first)} identities ({len(constraints)} answers"
        + (
            f", {len(dropped)} contradictory answer{'s' if len(dropped) > 1 else ''} ignored"
            if len(dropped)
            else ""
        )
        + f"); wrote {args.out}"
    )
    return 0
