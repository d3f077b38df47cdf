"""``aas train``: SpCL training with active-learning cycles (needs PyTorch)."""

from __future__ import annotations

from pathlib import Path

from .._extras import install_hint
from ._common import (
    _BACKBONE_HELP,
    _BUDGET_HELP,
    _EPS_HELP,
    _add_data_args,
    _add_merge_arg,
    _add_size_arg,
    _budget,
    _check_backbone_name,
    _check_out_folder,
    _data_source,
    _jaccard_eps,
    _learning_rate,
    _noise_share,
    _non_negative_int,
    _positive_int,
    _threads,
)


def add_parser(sub):
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
            "stops at each cycle with exit code 3 until the pairs are answered, then --resume. "
            "With --store RUN/run.sqlite of 'aas catalogue' and no --csv, the catalogue's photos "
            "and answers are the data: every current answer is a constraint at every epoch, "
            "and the run asks nothing unless --sampler is given."
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
        help="iterations per epoch (default 400; with --freeze-backbone or --train-blocks N one "
        "pass over the images)",
    )
    p.add_argument(
        "--freeze-backbone",
        action="store_true",
        help="keep the backbone as pretrained: cache its features once and train only a head "
        "(projection + BN neck) with the same pseudo-labels, cycles and NP3; seconds per epoch "
        "on a CPU",
    )
    p.add_argument(
        "--train-blocks",
        type=_train_blocks,
        default=None,
        metavar="N|all",
        help="train the backbone's last N blocks (and the neck) on the activations entering "
        "them, cached once on disk for every image and its mirror; 0 = --freeze-backbone, "
        "all = the whole network (default)",
    )
    p.add_argument(
        "--precision",
        choices=("auto", "bf16", "fp32"),
        default="auto",
        help="bf16: forward passes under bfloat16 autocast; auto (default): bf16 on a CPU with "
        "native bfloat16 (AVX512-BF16, AMX), fp32 elsewhere and for --freeze-backbone's head",
    )
    p.add_argument(
        "--holdout",
        type=_holdout_share,
        default=0.2,
        help="share of the answers held out to judge each cycle's weights: they are kept only "
        "when they separate the held-out same/different answers surely better (AUC, DeLong's "
        "paired test at the one-sided 5%% level); with fewer than "
        "10 of each held out, --freeze-backbone's head goes on and trained blocks go back; "
        "0 = keep all (default 0.2)",
    )
    p.add_argument(
        "--head-dim",
        type=_positive_int,
        default=None,
        help="with --freeze-backbone: the head's output size (default min(512, the backbone's))",
    )
    p.add_argument("--batch-size", type=_positive_int, default=64, help="images per batch")
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
        default=None,
        help="pair sampler; none = SpCL alone (default aas; none when the data is a "
        "catalogue's --store)",
    )
    p.add_argument(
        "--budget",
        type=_budget,
        default=0.0002,
        help=f"pairs per cycle: {_BUDGET_HELP} (default 0.02%%)",
    )
    p.add_argument("--al-every", type=_positive_int, default=10, help="epochs between cycles")
    p.add_argument("--al-cycles", type=_non_negative_int, default=5, help="active-learning cycles")
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
        "and the run stops until they are answered with 'aas annotate' (exit code 3); "
        "without --csv/--wildlife/--market1501, the store of 'aas catalogue' "
        "(RUN/run.sqlite) is the data: its photos and answers",
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
    p.add_argument("--k1", type=_positive_int, default=30, help="re-ranking k1")
    p.add_argument("--k2", type=_positive_int, default=6, help="re-ranking k2")
    p.add_argument(
        "--seed", type=_non_negative_int, default=0, help="seed of the sampler and the training"
    )
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N")
    p.add_argument(
        "--num-workers", type=_non_negative_int, default=4, help="image-decoding processes"
    )
    p.add_argument("--threads", type=_threads, default=None, help="threads (default: all CPUs)")
    p.set_defaults(func=run)


def run(args):
    inputs = [(f"the --{o} file", getattr(args, o)) for o in ("csv", "wildlife", "weights")]
    _check_out_folder(args.out, "--out", inputs + [("the --store", args.store)])
    try:
        from ..train.driver import TrainConfig, train
    except ImportError as exc:
        msg = f"'aas train' needs PyTorch: {install_hint('torch')} ({exc})"
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
    no_data = args.csv is None and args.wildlife is None and args.market1501 is None
    if args.resume and no_data:
        if stored is None:
            raise ValueError(f"--resume: {str(args.out / 'config.json')!r} does not exist")
        # Only runtime settings may change when no data is given: resume as configured.
        stored.update(device=args.device, num_workers=args.num_workers, threads=args.threads)
        stored["precision"] = args.precision
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
        sampler, store, feature_cache = args.sampler or "aas", args.store, None
        if args.store is not None and no_data:
            fmt, data = "store", str(_catalogue_store(args.store))
            sampler = args.sampler or "none"  # the catalogue asks its own questions
            store = args.store if sampler != "none" else None
            cache = args.store.parent / "features.npz"  # aas_core.catalogue.learn's
            if (args.freeze_backbone or args.train_blocks == 0) and cache.is_file():
                feature_cache = str(cache)
        else:
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
            train_blocks=_blocks_for(args),
            precision=args.precision,
            holdout=args.holdout,
            head_dim=args.head_dim,
            feature_cache=feature_cache,
            batch_size=args.batch_size,
            num_instances=args.num_instances,
            lr=args.lr,
            step_size=args.step_size,
            sampler=sampler,
            budget=args.budget,
            al_every=args.al_every,
            al_cycles=args.al_cycles,
            oracle_noise=args.oracle_noise,
            store=None if store is None else str(store),
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


def _train_blocks(text):
    """--train-blocks: 'all' or an integer >= 0 (checked against the backbone later)."""
    import argparse

    if text.strip().lower() == "all":
        return "all"
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"expected 'all' or a number of blocks >= 0 (0: the head on a frozen backbone); "
            f"got {text!r}"
        )
    return value


def _holdout_share(text):
    import argparse

    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a share in [0, 1); got {text!r}")
    return value


def _blocks_for(args):
    """--train-blocks with --freeze-backbone: they must agree (both mean 'train no block')."""
    n = args.train_blocks
    if args.freeze_backbone and n not in (None, 0):
        raise ValueError(
            f"--train-blocks {n} and --freeze-backbone disagree: --freeze-backbone trains no "
            "block (it is --train-blocks 0); give one of them"
        )
    return None if n == "all" else n


def _catalogue_store(path):
    """--store as the data: an existing store of 'aas catalogue' whose photos are all there."""
    from ..annotate.store import AnnotationStore
    from ..catalogue.embedding import missing_photos, photo_files

    if not path.is_file():
        raise ValueError(
            f"--store {str(path)!r} does not exist: give the store of a catalogue "
            "(RUN/run.sqlite of 'aas catalogue'), or the data with --csv, --wildlife or "
            "--market1501"
        )
    try:
        store = AnnotationStore.open_to_read(path)  # only checked here
    except ValueError as exc:
        raise ValueError(
            str(exc).replace(f"AnnotationStore.open: {str(path)!r}", f"--store {str(path)!r}")
        ) from None
    with store:
        if not store.meta.get("images_root"):
            raise ValueError(
                f"--store {str(path)!r} is not the store of a catalogue (it records no photo "
                "folder): give the training images with --csv, --wildlife or --market1501, or "
                "the RUN/run.sqlite of 'aas catalogue'"
            )
        files = photo_files(store)
        paths = store.image_paths()
    missing = missing_photos(files)
    if missing:
        k = missing[0]
        raise ValueError(
            f"--store {str(path)!r}: {len(missing)} of its {len(files)} photos are missing, "
            f"the first {paths[k]!r} (expected at {str(files[k])!r})"
        )
    return path


def _default_epochs(epochs, stored):
    """--epochs as given; else, on --resume, the stored run's (as --help says); else 50."""
    if epochs is not None:
        return epochs
    if stored is not None and isinstance(stored.get("epochs"), int):
        return stored["epochs"]
    return 50
