"""``aas annotate``: create or open an annotation store and serve the answering page."""

from __future__ import annotations

from pathlib import Path

from ._common import (
    _BUDGET_HELP,
    _IMAGE_SUFFIXES,
    SAMPLERS,
    _add_calibrate_arg,
    _add_clustering_args,
    _budget,
    _check_calibrate,
    _check_out,
    _check_paths_match,
    _check_rows,
    _clean_path,
    _embedding_files,
    _image_files,
    _load_embeddings,
    _make_sampler,
    _open_store,
    _pair_budget,
    _port,
    _read_paths_csv,
    _require_web,
    _rows_csv,
)


def add_parser(sub):
    ann = sub.add_parser(
        "annotate",
        help="answer 'same / different' for proposed pairs in the browser (needs the [web] extra)",
        description=(
            "Serves a local page that shows the store's queued pairs side by side; a person "
            "answers same (S), different (D) or skip (Space), undoes (U), and reviews answers "
            "that contradict earlier ones. Every answer is written to the SQLite store before "
            "the page moves on. Create a store with --create and --image-list or --from-dir; "
            "queue pairs with 'aas propose X.npy --store STORE', or let --propose run the "
            "sampler whenever the queue is empty."
        ),
    )
    ann.add_argument("--store", type=Path, required=True, help="the annotation store (SQLite)")
    ann.add_argument(
        "--images", type=Path, required=True, help="the folder the image paths are relative to"
    )
    ann.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ann.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests addressed to NAME (a host name or address of this machine; "
        "repeatable); by default only localhost, 127.0.0.1, [::1] and --host",
    )
    ann.add_argument("--port", type=_port, default=8765, help="port (default 8765; 0: any free)")
    ann.add_argument("--annotator", default=None, help="name recorded with answers (default: user)")
    ann.add_argument(
        "--create",
        action="store_true",
        help="create the store (never overwrites an existing file) from --image-list or --from-dir",
    )
    listing = ann.add_mutually_exclusive_group()
    listing.add_argument(
        "--image-list",
        type=Path,
        default=None,
        help="with --create: a text file, one image path per line (relative to --images), "
        "the k-th path = row k of the embeddings (blank lines are ignored); or a CSV with a "
        "'path' column, such as X.rows.csv from 'aas embed' (default: none)",
    )
    listing.add_argument(
        "--from-dir",
        action="store_true",
        help="with --create: every image file under --images, sorted by path",
    )
    ann.add_argument(
        "--embeddings",
        type=Path,
        default=None,
        help="(n, d) .npy, row i = image i: recorded by --create, read by --propose. Where "
        "X.rows.csv from 'aas embed' lies beside it, its paths must be the store's images in "
        "the same order: a store that lists other images, or the same ones in another order, "
        "is refused, never reordered (create it with --image-list X.rows.csv to follow the "
        "embeddings) (default: none)",
    )
    ann.add_argument(
        "--propose",
        action="store_true",
        help="when the queue is empty, run the sampler on the embeddings and the answers so far",
    )
    ann.add_argument(
        "--budget",
        type=_budget,
        default=0.0002,
        help=f"with --propose: pairs per proposal, {_BUDGET_HELP} (default 0.02%%)",
    )
    ann.add_argument("--sampler", choices=SAMPLERS, default="aas", help="default aas")
    ann.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    ann.add_argument(
        "--no-serve",
        action="store_true",
        help="create/check the store and the set-up, print its progress and exit",
    )
    _add_clustering_args(ann)
    _add_calibrate_arg(
        ann,
        "with --propose: start each proposal with near pairs drawn at random (kind "
        "'calibration') until C are answered or waiting, then choose eps from their answers "
        "(default 0: eps from the data alone)",
    )
    ann.set_defaults(func=run)


def run(args):
    from ..annotate._counts import answers_text
    from ..annotate.store import AnnotationStore, StoreLocked

    _check_calibrate(args)
    if args.calibrate and not args.propose:
        raise ValueError(f"--calibrate {args.calibrate} asks its pairs through --propose: add it")
    if not args.images.is_dir():
        raise ValueError(f"--images {str(args.images)!r} is not a folder")
    if not args.create and (args.image_list is not None or args.from_dir):
        raise ValueError("--image-list and --from-dir only go with --create")
    X = None
    if args.create:
        inputs = [("the --image-list file", args.image_list)]
        inputs += _embedding_files(args.embeddings, "the --embeddings file", "the --embeddings")
        if args.store.exists() or args.store.is_symlink():
            raise ValueError(
                f"--store {str(args.store)!r} already exists; --create never overwrites a "
                "file (leave out --create to open it, or name a new store)"
            )
        _check_out(args.store, "--store", inputs)
        paths = _image_list(args)
        if args.embeddings is not None:
            X = _load_embeddings(args.embeddings, "annotate")
            rows = _rows_csv(args.embeddings)
            if rows is not None:  # 'aas embed' said which image each row is: check by path
                listed = "--image-list" if args.image_list is not None else "--from-dir"
                row_paths = _read_paths_csv(rows, "embeddings rows file")
                if len(row_paths) != len(X):
                    raise ValueError(
                        f"{rows.name} lists {len(row_paths)} images but "
                        f"{str(args.embeddings)!r} has {len(X)} rows; they do not belong "
                        "together (embed the images again)"
                    )
                _check_paths_match(args.embeddings, row_paths, paths, listed)
            if len(X) != len(paths):
                raise ValueError(
                    f"embeddings file {str(args.embeddings)!r} has {len(X)} rows but "
                    f"{len(paths)} images were listed (row i must be image i)"
                )
        emb = None if args.embeddings is None else args.embeddings.resolve()
        try:
            store = AnnotationStore.create(args.store, paths, embeddings_path=emb)
        except FileExistsError as exc:
            raise ValueError(str(exc)) from None
        print(f"aas annotate: created {args.store} with {store.n_images} images")
    else:
        store = _open_store(args.store)
    try:
        try:
            store.lock()
        except StoreLocked as exc:
            raise ValueError(str(exc)) from None
        proposer = None
        if args.propose:
            proposer = _proposer(args, store, X)
        p = store.progress()
        print(
            f"aas annotate: {p['images']} images, {p['pairs']} pairs queued, "
            f"{answers_text(p)}, {p['remaining']} to go, {p['conflicts']} conflicts"
        )
        paths = store.image_paths()
        missing = [q for q in paths if not (args.images / q).is_file()]
        if missing:
            print(
                f"aas annotate: {len(missing)} of {len(paths)} images are not under "
                f"{args.images} (e.g. {missing[0]}); the page shows their path instead"
            )
        if args.no_serve:
            return 0
        _require_web("aas annotate")
        from ..annotate.server import serve

        try:
            serve(
                store,
                args.images,
                host=args.host,
                port=args.port,
                proposer=proposer,
                annotator=args.annotator,
                allow_hosts=args.allow_host,
            )
        except ImportError as exc:
            raise ValueError(str(exc)) from None
        except OSError as exc:  # the port is taken, or the address is not ours
            raise ValueError(f"cannot listen on {args.host}:{args.port} ({exc})") from None
    finally:
        store.close()
    return 0


def _image_list(args):
    """The image paths for a new store, relative to --images, in embeddings row order."""
    if args.image_list is not None:
        return _read_image_list(args.image_list)
    if args.from_dir:
        found = _image_files(args.images, "--from-dir")
        if not found:
            raise ValueError(
                f"--from-dir: no image files ({', '.join(sorted(_IMAGE_SUFFIXES))}) under "
                f"{str(args.images)!r}"
            )
        return found
    raise ValueError("--create needs the images: --image-list FILE or --from-dir")


def _read_image_list(path):
    """--image-list: one path per line, or a CSV with a 'path' column (X.rows.csv).

    Each path is checked here, so that a bad one is named by its line in the file.
    """
    from pathlib import PurePosixPath, PureWindowsPath

    name = f"--image-list {str(path)!r}"
    if not path.exists():
        raise ValueError(f"{name} does not exist")
    if path.is_dir():
        raise ValueError(f"{name} is a folder, not a list of images")
    if path.suffix.lower() == ".csv":
        listed = [(k + 2, p) for k, p in enumerate(_read_paths_csv(path, "--image-list"))]
    else:
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{name} cannot be read ({exc})") from None
        listed = [(k + 1, line) for k, line in enumerate(lines)]
    out, seen = [], {}
    for line, text in listed:
        text = text.strip()
        if not text:
            continue  # blank lines are ignored
        posix = text.replace("\\", "/")
        if PurePosixPath(posix).is_absolute() or PureWindowsPath(text).drive:
            raise ValueError(
                f"{name} line {line}: {text!r} is absolute; paths must be relative to --images"
            )
        if ".." in PurePosixPath(posix).parts or "\x00" in text:
            raise ValueError(f"{name} line {line}: {text!r} leaves the --images folder")
        key = _clean_path(text)
        if key in seen:
            raise ValueError(f"{name} lines {seen[key]} and {line} are the same image {key!r}")
        seen[key] = line
        out.append(text)
    return out


def _proposer(args, store, X):
    from ..annotate.server import Proposer

    emb = args.embeddings if args.embeddings is not None else store.embeddings_path
    if emb is None:
        raise ValueError("--propose needs the embeddings: --embeddings X.npy (row i = image i)")
    if X is None:
        X = _load_embeddings(emb, "annotate")
    _check_rows(X, emb, store)
    return Proposer(
        X,
        _make_sampler(args.sampler, args.device),
        name=args.sampler,
        budget=max(1, _pair_budget(args.budget, len(X))),
        seed=args.seed,
        cluster_args={
            "k1": args.k1,
            "k2": args.k2,
            "eps": args.eps,
            "min_samples": args.min_samples,
            "eps_from_answers": args.eps_from_answers,
            "n_threads": args.threads,
            "device": args.device,
        },
        calibrate=args.calibrate,
        on_calibrated=lambda _, choice: print(
            f"aas annotate: calibration: {choice.message}", flush=True
        ),
    )
