"""``aas refine``: identities from the embeddings and every answer (NP3)."""

from __future__ import annotations

from pathlib import Path

from .._labels import outliers_to_singletons
from ._common import (
    _add_calibrate_arg,
    _add_clustering_args,
    _add_input_args,
    _add_merge_arg,
    _check_calibrate,
    _check_out,
    _cluster,
    _input_files,
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
            "answers come from the store. The CSV is image_path,identity where the image "
            "paths are known (the store, or X.rows.csv from 'aas embed' beside X.npy), else "
            "index,identity. Contradictory answers are named as the user finds them: line "
            "of the CSV, or the store's answer id."
        ),
    )
    _add_input_args(ref)
    ref.add_argument(
        "--clustering",
        choices=("dbscan", "finch"),
        default="dbscan",
        help="the clustering the answers refine",
    )
    ref.add_argument(
        "--on-conflict",
        choices=("raise", "drop_oldest"),
        default="raise",
        help="contradictory answers: stop with an error (default) or ignore the oldest",
    )
    _add_merge_arg(ref)
    ref.add_argument("--keep-outliers", action="store_true", help="write outliers as -1")
    ref.add_argument(
        "--out",
        type=Path,
        default=Path("identities.csv"),
        help="the CSV to write: image_path,identity where the paths are known (X.rows.csv "
        "beside the embeddings, or the store), else index,identity",
    )
    _add_clustering_args(ref)
    _add_calibrate_arg(
        ref,
        "choose eps from the answered near pairs that 'aas propose --calibrate C' asked "
        "(pool 'calibration'), as propose does; any C > 0 (default 0: eps from the data)",
    )
    ref.set_defaults(func=run)


def run(args):
    import numpy as np

    from ..annotate._counts import answers_text
    from ..refine import _np3

    _check_calibrate(args)
    _check_out(args.out, "--out", _input_files(args))  # again once the store is open
    inputs = _load_inputs(args)
    X, constraints, names = inputs.X, inputs.constraints, inputs.answer_names
    if inputs.store is not None:  # counted as 'aas catalogue --status' counts them
        counted = inputs.store.progress()
        inputs.store.close()
    else:  # a file of answers holds only same and different
        same = int(constraints.is_must_link.sum())
        counted = {"same": same, "different": len(constraints) - same}
    n = len(X)
    if args.on_conflict == "raise":
        _refuse_contradictions(constraints, names)
    state = _cluster(X, args, constraints, inputs.calibration)
    base = state.labels_a if args.clustering == "dbscan" else state.labels_b
    # the dissolved clusters are said, so that identities vanishing from the output are explained
    labels, dropped, mixed = _np3(
        base,
        constraints,
        state.X,
        on_conflict=args.on_conflict,
        merge=args.merge,
        dissolve=None,
        return_dropped=True,
        n_threads=None,
        owner="np3",
        return_mixed=True,
    )
    mixed = len(mixed)
    if not args.keep_outliers:
        labels = outliers_to_singletons(labels)
    # identities 0.. in order of each identity's first image
    keep = labels >= 0
    _, first, inv = np.unique(labels[keep], return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    out = np.full(n, -1, np.int64)
    out[keep] = rank[inv]
    if inputs.paths is None:
        rows = [["index", "identity"], *zip(range(n), out.tolist())]
    else:
        rows = [["image_path", "identity"], *zip(inputs.paths, out.tolist())]
    _write_csv(args.out, rows, "--out")
    ignored = ""
    if len(dropped):
        shown = ", ".join(names[k] for k in dropped[:5].tolist())
        ignored = (
            f", {len(dropped)} contradictory answer{'s' if len(dropped) > 1 else ''} ignored: "
            f"{shown}{', ...' if len(dropped) > 5 else ''}"
        )
    if mixed:
        ignored += (
            f"; {mixed} cluster{'s' if mixed > 1 else ''} dissolved: 20 or more answers inside, "
            "under 10% 'same' among them or at their images' similarities (a mix of animals; "
            "--merge clusters keeps them)"
        )
    print(
        f"{n} images -> {len(first)} identities, from {answers_text(counted)}{ignored}; "
        f"wrote {args.out}"
    )
    return 0


def _refuse_contradictions(constraints, names):
    """ValueError naming the answers of the first contradiction as the user finds them."""
    found = constraints.conflicts()
    if not found:
        return
    c = found[0]
    pairs = constraints.pairs
    i, j = pairs[c["cannot_link"]].tolist()
    path = c["must_link_path"]
    joined = ", ".join(f"{names[r]} ({pairs[r, 0]}, {pairs[r, 1]})" for r in path)
    raise ValueError(
        f"the answers are inconsistent ({len(found)} contradiction"
        f"{'s' if len(found) > 1 else ''}): {names[c['cannot_link']]} says images {i} and "
        f"{j} differ, but 'same' answers join them: {joined}. Correct one of these answers, "
        "or give --on-conflict drop_oldest to ignore the oldest answer of each contradiction"
    )
