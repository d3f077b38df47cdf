"""``aas embed``: images -> L2-normalised embeddings with a pretrained or trained network."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from ._common import (
    _BACKBONE_HELP,
    _IMAGE_SUFFIXES,
    _add_size_arg,
    _check_backbone_name,
    _check_out,
    _image_files,
    _model_input_size,
    _non_negative_int,
    _positive_int,
)


def add_parser(sub):
    emb = sub.add_parser(
        "embed",
        help="images -> L2-normalised embeddings .npy with a backbone (needs the [torch] extra)",
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
        "--precision",
        choices=("auto", "bf16", "fp32"),
        default="fp32",
        help="bf16: the model runs under bfloat16 autocast (faster on a CPU with AVX512-BF16 or "
        "AMX, embeddings within about 1e-2); auto: bf16 where the CPU has it; fp32 (default, "
        "the embeddings of earlier versions)",
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
    emb.set_defaults(func=run)


def run(args):
    try:
        return _run_embed(args)
    except (OSError, ImportError) as exc:  # missing files, no torch: a message, not a traceback
        raise ValueError(str(exc)) from None


def _check_embed_args(args):
    if args.out.suffix.lower() != ".npy":
        raise ValueError(f"--out must name a .npy file; got {str(args.out)!r}")
    _check_outputs(args)
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


def _check_outputs(args):
    """X.npy, X.rows.csv and X.provenance.json: each a new or regular file, none an input."""
    from .._files import embedding_paths

    inputs = [
        (f"the --{option} file", getattr(args, option))
        for option in ("csv", "wildlife", "weights", "model")
    ]
    npy, *beside = embedding_paths(args.out)
    _check_out(npy, "--out", inputs)
    for path in beside:
        _check_out(path, "--out", inputs, via=args.out)


def _embed_model(args):
    from ..train._names import DEFAULT_BACKBONE
    from ..train.models import ReIDModel, load_model

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


def provenance(model, size, *, flip, device, batch_size, num_workers, seconds, n) -> dict:
    """What an embedding was made with, as X.provenance.json records it (plain values)."""
    import datetime

    import torch

    from .. import __version__
    from ..train.embed import model_record

    return {
        "aas_core": __version__,
        "torch": torch.__version__,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": model_record(model),
        "preprocess": dict(
            model.preprocess.with_size(size).to_json(),
            resize="the whole image to size (no crop), then (x / 255 - mean) / std",
        ),
        "flip": bool(flip),
        "device": str(device),
        "batch_size": batch_size,
        "num_workers": num_workers,
        "seconds": round(seconds, 3),
        "images_per_second": round(n / max(seconds, 1e-9), 2),
    }


def _run_embed(args):
    from ..train._runtime import autocast, require_torch, resolve_device, resolve_precision

    _check_embed_args(args)
    require_torch("aas embed")
    device = resolve_device(args.device)  # fails now, not after reading the dataset

    from ..train.embed import default_num_workers, embed_images, save_embeddings

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
    precision = resolve_precision(args.precision, device)
    t0 = time.perf_counter()
    with autocast(precision, device):
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
    record = provenance(
        model,
        size,
        flip=args.flip,
        device=device,
        batch_size=batch_size,
        num_workers=workers,
        seconds=seconds,
        n=len(ds.files),
    )
    record["precision"] = precision
    record["data"] = {
        "source": source,
        "root": os.path.abspath(ds.root),
        "skipped": len(ds.skipped),
    }
    names = [ds.identity_names[c] if c >= 0 else "" for c in ds.identity.tolist()]
    cameras = None if ds.camera is None else ds.camera.tolist()
    out, rows, meta = save_embeddings(args.out, X, list(ds.paths), names, record, cameras=cameras)
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
    from ..datasets import image_folder_csv, market1501, wildlife_metadata

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
    import numpy as np

    from ..datasets import ImageDataset, SkippedImage
    from ..datasets.images import _image_problem, _require_pillow

    if not root.is_dir():
        raise ValueError(f"--images {str(root)!r} is not a folder")
    found = _image_files(root, "--images")
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
