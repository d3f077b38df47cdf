"""``aas evaluate``: retrieval and open-set metrics of a model or of embeddings."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from .._csvcell import read_cell
from .._extras import install_hint
from .._files import write_atomic
from ._common import (
    _add_data_args,
    _add_size_arg,
    _check_out,
    _data_source,
    _embedding_files,
    _load_embeddings,
    _model_input_size,
    _non_negative_int,
    _positive_int,
)


def add_parser(sub):
    p = sub.add_parser(
        "evaluate",
        help="mAP, mINP, CMC (and open-set BAKS, BAUS, AUC-ROC) of a model or of embeddings",
        description=(
            "Evaluates a trained model (--model, needs the [torch] extra) or precomputed "
            "embeddings (--embeddings X.npy, one row per image of the dataset, as written by "
            "'aas embed') on the dataset's splits. --protocol reid: query vs gallery "
            "(or the test split against itself); open-set: the paper's protocol (test images "
            "as queries, a gallery of up to 5 exemplars per identity of 80% of the training "
            "identities)."
        ),
    )
    _add_data_args(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", type=Path, help="a model.pt / checkpoint.pt from 'aas train'")
    src.add_argument("--embeddings", type=Path, help="(n, d) .npy, rows = the dataset's images")
    p.add_argument(
        "--protocol",
        choices=("reid", "open-set"),
        default="reid",
        help="reid: query vs gallery; open-set: the paper's protocol (see above)",
    )
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="open-set: BAUS threshold (default none: BAUS not measured)",
    )
    _add_size_arg(p, "image size (default: the model's training size, else 256 128)")
    p.add_argument("--batch-size", type=_positive_int, default=64, help="images per forward pass")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="open-set hold-out seed")
    p.add_argument(
        "--json",
        type=Path,
        default=None,
        help="also write the metrics here (default: printed only)",
    )
    p.set_defaults(func=run)


def run(args):
    import json

    from .. import datasets
    from ..train.evaluate import evaluate_embeddings

    fmt, data = _data_source(args)
    inputs = [(f"the --{o} file", getattr(args, o)) for o in ("csv", "wildlife", "model")]
    inputs += _embedding_files(args.embeddings, "the --embeddings file", "the --embeddings")
    _check_out(args.json, "--json", inputs)  # before minutes of embedding
    check = args.embeddings is None  # precomputed embeddings need no image files
    if fmt == "csv":
        ds = datasets.image_folder_csv(data, args.root, check_files=check)
    elif fmt == "wildlife":
        ds = datasets.wildlife_metadata(data, args.root, check_files=check)
    else:
        ds = datasets.market1501(data)
    if args.embeddings is not None:
        X = _load_embeddings(args.embeddings, "evaluate")
        ds = _rows_of(args.embeddings, len(X), ds)
    else:
        try:
            from ..train.embed import embed_images
            from ..train.models import load_model
        except ImportError as exc:
            msg = f"--model needs PyTorch: {install_hint('torch')} ({exc})"
            raise ValueError(msg) from None
        model = load_model(args.model)
        size = _model_input_size(model, args.size)
        X = embed_images(model, ds.files, size=size, batch_size=args.batch_size, device=args.device)
    out = evaluate_embeddings(
        X, ds, protocol=args.protocol, threshold=args.threshold, seed=args.seed
    )
    keys = ("mAP", "mINP", "top1", "top3", "top5", "top10", "BAKS", "BAUS", "AUC_ROC")
    shown = ", ".join(f"{k} {100 * out[k]:.2f}%" for k in keys if k in out)
    print(
        f"aas evaluate ({args.protocol}, {out['n_query']} queries, "
        f"{out['n_gallery']} gallery): {shown}"
    )
    if out.get("n_known_queries") == 0:
        print(
            "aas evaluate: note: no query identity is in the open-set gallery (the test "
            "identities are all unseen in training), so BAKS, AUC-ROC and the retrieval "
            "metrics are undefined (nan); only unknown-rejection can be measured (--threshold).",
            file=sys.stderr,
        )
    if args.json is not None:
        text = json.dumps(out, indent=2, sort_keys=True) + "\n"
        try:
            write_atomic(args.json, lambda f: f.write(text.encode("utf-8")))
        except OSError as exc:
            raise ValueError(f"--json: cannot write {str(args.json)!r} ({exc.strerror})") from None
    return 0


def _rows_of(emb_path, n_rows, ds):
    """The dataset's images in the order of the embedding rows.

    'aas embed' writes X.rows.csv (index,path,...) beside X.npy; where it is
    there, rows are matched to images by path, so embeddings made with
    ``--on-error skip`` (fewer rows) or in another order still line up. Without
    it, row i must be image i.
    """
    rows_csv = Path(emb_path).with_name(Path(emb_path).name[: -len(".npy")] + ".rows.csv")
    if not str(emb_path).lower().endswith(".npy") or not rows_csv.is_file():
        if n_rows != len(ds):
            raise ValueError(
                f"--embeddings has {n_rows} rows but the dataset has {len(ds)} images (and no "
                f"{rows_csv.name} from 'aas embed' beside it says which image each row is)"
            )
        return ds
    with open(rows_csv, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "path" not in reader.fieldnames:
            raise ValueError(f"--embeddings: {str(rows_csv)!r} has no 'path' column")
        paths = [read_cell(r["path"] or "") for r in reader]
    if len(paths) != n_rows:
        raise ValueError(
            f"--embeddings: {str(rows_csv)!r} lists {len(paths)} images but the array has "
            f"{n_rows} rows; they do not belong together"
        )
    where = {p: i for i, p in enumerate(ds.paths)}
    missing = [p for p in paths if p not in where]
    if missing:
        raise ValueError(
            f"--embeddings: {len(missing)} of its rows are images the dataset does not list, "
            f"first {missing[0]!r} (from {rows_csv.name}); embed this dataset again"
        )
    if len(set(paths)) != len(paths):
        raise ValueError(f"--embeddings: {str(rows_csv)!r} lists an image twice")
    if len(paths) < len(ds):
        print(
            f"aas evaluate: note: {len(ds) - len(paths)} of the dataset's {len(ds)} images have "
            f"no embedding (left out by 'aas embed'); evaluating the other {len(paths)}",
            file=sys.stderr,
        )
    return ds.subset([where[p] for p in paths])
