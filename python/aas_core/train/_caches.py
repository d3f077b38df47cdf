"""What a run trains on instead of images: the frozen backbone's features
(:mod:`.frozen`) or the activations entering the last blocks (:mod:`.activations`),
and the training images' embedding from either."""

from __future__ import annotations

import shutil
from pathlib import Path

from . import activations as _acts
from . import frozen as _frozen
from ._runtime import autocast as _autocast
from .embed import embed_images


def load_cache(config, model, run_dir, files, query, gallery, precision, device, say):
    """The cache of the run directory for the training (and query, gallery) images,
    computed where missing or stale."""
    sets = {"train": files}
    if query is not None:
        sets["query"] = query.files
        if gallery is not query:
            sets["gallery"] = gallery.files
    size = (config.height, config.width)
    if config.train_blocks is not None:
        say(f"train: training the last {config.train_blocks} of {model.tail.n_blocks} blocks")
        folder = Path(run_dir) / _acts.ACTIVATION_CACHE
        if not folder.exists() and config.feature_cache is not None:
            if not Path(config.feature_cache).is_dir():
                raise ValueError(
                    f"train: 'feature_cache' {config.feature_cache!r} is not a folder; with "
                    "train_blocks it names the 'activations' folder of an earlier run."
                )
            # copied in, so the run directory stays whole; checked below like our own
            shutil.copytree(config.feature_cache, folder)
        return _acts.load_or_compute(
            folder,
            model.tail,
            sets,
            backbone_info=config.backbone_info,
            size=size,
            preprocess=model.preprocess,
            dtype="bf16" if precision == "bf16" else "fp16",
            batch_size=config.batch_size,
            device=device,
            num_workers=config.num_workers,
            autocast=lambda: _autocast(precision, device),
            say=say,
        )
    cache_path = Path(run_dir) / _frozen.FEATURE_CACHE
    if not cache_path.exists() and config.feature_cache is not None:
        if not Path(config.feature_cache).is_file():
            raise ValueError(f"train: 'feature_cache' {config.feature_cache!r} is not a file.")
        shutil.copyfile(config.feature_cache, cache_path)  # checked below like our own
    return _frozen.load_or_compute(
        cache_path,
        model.backbone.trunk,
        sets,
        backbone_info=config.backbone_info,
        size=size,
        batch_size=config.batch_size,
        device=device,
        num_workers=config.num_workers,
        say=say,
    )


def embed_train(model, cache, files, config, device, autocast):
    """The training images' embedding under the model as it is (from the cache if any)."""
    if cache is not None:
        return _frozen.embed_cached(model, cache["train"], device, autocast=autocast)
    size = (config.height, config.width)
    with autocast():
        return embed_images(
            model, files, size=size, batch_size=config.batch_size, device=device, progress=False
        )
