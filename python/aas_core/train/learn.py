"""The torch side of :func:`aas_core.catalogue.learn`: a head on a frozen backbone, trained
on a catalogue's answers.

Everything here is the driver's own (:mod:`aas_core.train.driver`): the model
and its recorded backbone (``_build_model``), the feature cache
(:mod:`aas_core.train.frozen`), and per epoch SpCL's self-paced pseudo-labels
of the memory bank, NP3 with the answers and one pass of cached batches
through the head with the hybrid-memory loss. What it leaves out is what a
catalogue does not need: active-learning cycles, evaluation, checkpoints.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from . import frozen
from ._config import TrainConfig, _build_model
from ._epoch import _cached_batches, _fold_answers, _pseudo_labels, _train_epoch
from ._runtime import resolve_device
from .batches import identity_batches
from .memory import HybridMemory
from .models import ProjectedBackbone, ReIDModel

__all__ = ["feature_head", "fit_head", "learn_embedding"]


class _Features(torch.nn.Module):
    """A stand-in trunk for features computed elsewhere: only its size is used."""

    def __init__(self, feat_dim: int):
        super().__init__()
        self.feat_dim = int(feat_dim)

    def forward(self, x):
        return x


def feature_head(feat_dim: int, head_dim: int, *, seed: int = 0) -> ReIDModel:
    """A head (projection + BN neck) over ``feat_dim`` features, with no image backbone:
    for :func:`fit_head` on features from elsewhere (synthetic ones, say). It cannot be
    saved for ``aas embed`` (there is no backbone to rebuild)."""
    torch.manual_seed(seed)
    return ReIDModel(ProjectedBackbone(_Features(feat_dim), int(head_dim)))


def fit_head(model, views, constraints, config: TrainConfig, *, device="cpu", log=None):
    """Trains ``model``'s head on cached features with the answers; returns its embeddings.

    Parameters
    ----------
    model : ReIDModel with a ProjectedBackbone (``aas train --freeze-backbone``'s)
    views : (n, 2, d) float32, the backbone's features of each image and its mirror
    constraints : PairConstraints over the n images (the answers to train with)
    config : TrainConfig; read: epochs, iters (None: one pass over the images),
        batch_size, num_instances, lr, weight_decay, step_size, gamma,
        momentum, temperature, k1, k2, eps, eps_gap, min_samples, merge, seed,
        threads
    device : str or torch.device
    log : callable(str) or None

    Returns
    -------
    (n, head_dim) float32, unit rows: each image's embedding (image and mirror averaged)

    Notes
    -----
    The head runs on one torch thread (``torch.set_num_threads(1)``, the
    caller's setting restored afterwards): its batches are too small to gain
    from more.
    """
    threads = torch.get_num_threads()
    # The head's batches (64 x d) are too small to gain from threads, and on a busy CPU
    # their synchronisation costs most of the time: on 2 shared cores an epoch over 3,000
    # photos took 4-7 s with 2 torch threads and 0.6-0.8 s with one.
    torch.set_num_threads(1)
    try:
        return _fit_head(model, views, constraints, config, device, log)
    finally:
        torch.set_num_threads(threads)


def _fit_head(model, views, constraints, config, device, log):
    say = log or (lambda *_: None)
    device = resolve_device(device)
    views = np.ascontiguousarray(views, dtype=np.float32)
    n = len(views)
    frozen.init_head(model, views)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, config.step_size, gamma=config.gamma)
    memory = HybridMemory(
        frozen.embed_cached(model, views, device),
        temperature=config.temperature,
        momentum=config.momentum,
    ).to(device)
    iters = config.iters if config.iters is not None else -(-n // config.batch_size)
    spcl_state = None
    for epoch in range(config.epochs):
        t = time.perf_counter()
        X = memory.features.detach().cpu().numpy()
        _, labels, spcl_state = _pseudo_labels(X, constraints, config, spcl_state)
        if len(constraints):
            labels = _fold_answers(labels, constraints, X, config.merge)
        memory.set_labels(labels)
        batches = identity_batches(
            labels,
            batch_size=config.batch_size,
            num_instances=config.num_instances,
            iters=iters,
            seed=config.seed,
            epoch=epoch,
        )
        model.train()
        model.backbone.trunk.eval()  # frozen: its BatchNorm statistics stay as pretrained
        loader = _cached_batches(views, batches, config.seed, epoch)
        losses = _train_epoch(model, memory, optimizer, loader, device, cached=True)
        scheduler.step()
        sizes = np.bincount(np.unique(labels, return_inverse=True)[1])
        say(
            f"learn: epoch {epoch + 1}/{config.epochs}, loss {np.mean(losses):.3f}, "
            f"{int((sizes > 1).sum())} clusters, {time.perf_counter() - t:.1f} s"
        )
    model.eval()
    return frozen.embed_cached(model, views, device)


def learn_embedding(
    run_dir,
    files,
    constraints,
    *,
    store_path,
    backbone=None,
    arch=None,
    weights=None,
    size=None,
    head_dim=None,
    epochs=8,
    seed=0,
    k1=30,
    k2=6,
    eps="auto",
    merge="clusters",
    batch_size=64,
    device="cpu",
    n_threads=None,
    num_workers=0,
    log=None,
):
    """Backbone + head trained on ``constraints``.

    Returns ``(model, embeddings, seconds_features, config)``: the trained
    ReIDModel, its (n, head_dim) embeddings of ``files``, the seconds spent on
    the backbone's features (reading the cache, or computing it) and the
    resolved config as a dict (for ``save_model(..., extra={"config": ...})``).

    The backbone's features of ``files`` (and mirrors) come from
    ``run_dir/features.npz`` when it matches them and the backbone, else
    they are computed and cached there (:func:`frozen.load_or_compute`, the
    cache ``aas train --freeze-backbone`` keeps). The config is the one
    ``aas train --store STORE --freeze-backbone`` would use.
    """
    say = log or (lambda *_: None)
    config = TrainConfig(
        data=str(store_path),
        data_format="store",
        backbone=backbone,
        arch=arch,
        weights=None if weights is None else str(weights),
        height=None if size is None else int(size[0]),
        width=None if size is None else int(size[1]),
        freeze_backbone=True,
        head_dim=head_dim,
        epochs=epochs,
        batch_size=batch_size,
        k1=k1,
        k2=k2,
        eps=eps,
        merge=merge,
        sampler="none",
        seed=seed,
        device=str(device),
        num_workers=num_workers,
        threads=n_threads,
        progress=False,
    )
    model, config = _build_model(config)
    dev = resolve_device(config.device)
    t = time.perf_counter()
    cache = frozen.load_or_compute(
        Path(run_dir) / frozen.FEATURE_CACHE,
        model.backbone.trunk,
        {"train": list(files)},
        backbone_info=config.backbone_info,
        size=(config.height, config.width),
        batch_size=config.batch_size,
        device=dev,
        num_workers=config.num_workers,
        say=say,
    )
    seconds_features = time.perf_counter() - t
    X = fit_head(model, cache["train"], constraints, config, device=dev, log=log)
    model.to("cpu")
    return model, X, seconds_features, config.to_json()
