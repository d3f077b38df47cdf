"""Training a head on a frozen backbone (``aas train --freeze-backbone``): the feature cache.

The backbone's pooled features of every image and of its mirror image are
computed once (:func:`~aas_core.train.embed.embed_images` with
``views=True``) and kept in ``features.npz`` in the run directory, so an
epoch only runs the small head -- a projection and SpCL's BN neck
(:class:`~aas_core.train.models.ProjectedBackbone` inside a
:class:`~aas_core.train.models.ReIDModel`) -- on cached vectors: seconds on a
CPU where the whole network takes hours. The driver
(:mod:`aas_core.train.driver`) does everything else exactly as for full
training: the memory bank, the self-paced pseudo-labels, the AL cycles and
NP3.

The cache records what made it (the backbone's weights sha256, input size,
preprocessing, last stride) and the images (path, size and modification time
of every file); a cache that does not match is recomputed, and the driver
says so.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .._files import write_atomic
from .embed import embed_images

__all__ = [
    "FEATURE_CACHE",
    "FeatureCache",
    "cached_embeddings",
    "embed_cached",
    "init_head",
    "load_or_compute",
]

FEATURE_CACHE = "features.npz"
_SPLITS = ("train", "query", "gallery")


class FeatureCache:
    """Cached backbone features: ``views[split]`` is ``(n, 2, d)`` float32 (image, mirror)."""

    def __init__(self, views: dict, key: dict):
        self.views = views
        self.key = key

    def __getitem__(self, split):
        return self.views[split]


def _files_key(files) -> str:
    """sha256 over each file's path, size and modification time (changes mean recompute)."""
    h = hashlib.sha256()
    for f in files:
        st = os.stat(f)
        h.update(f"{os.path.abspath(f)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _cache_key(backbone_info: dict, size, sets: dict) -> dict:
    identity = {k: backbone_info.get(k) for k in ("arch", "weights_sha256", "last_stride")}
    return {
        "backbone": identity,
        "size": list(size),
        "preprocess": backbone_info.get("preprocess"),
        "files": {name: _files_key(files) for name, files in sets.items()},
        "counts": {name: len(files) for name, files in sets.items()},
    }


def _read(path: Path):
    try:
        with np.load(path, allow_pickle=False) as z:
            key = json.loads(str(z["key"]))
            views = {name: z[name] for name in _SPLITS if name in z.files}
        return FeatureCache(views, key)
    except (OSError, ValueError, KeyError):
        return None


def load_or_compute(
    path, trunk, sets: dict, *, backbone_info, size, batch_size, device, num_workers, say
) -> FeatureCache:
    """The feature cache at ``path`` if it matches ``sets`` and the backbone, else a new one.

    ``sets`` maps "train" (and optionally "query", "gallery") to lists of
    image files. A new cache is written atomically (temporary file, rename).
    """
    path = Path(path)
    key = _cache_key(backbone_info, size, sets)
    if path.exists():
        old = _read(path)
        if old is not None and old.key == key:
            return old
        why = "it cannot be read" if old is None else "the images or the backbone changed"
        say(f"train: recomputing the feature cache {path} ({why})")
    views = {}
    for name, files in sets.items():
        say(f"train: caching backbone features of {len(files)} {name} images (and mirrors)")
        views[name] = embed_images(
            trunk,
            files,
            size=size,
            batch_size=batch_size,
            device=device,
            num_workers=num_workers,
            views=True,
        )
    text = json.dumps(key, sort_keys=True)
    write_atomic(path, lambda f: np.savez(f, key=np.array(text), **views))
    return FeatureCache(views, key)


@torch.no_grad()
def init_head(model, train_views: np.ndarray) -> None:
    """Starts the head at the backbone's own geometry.

    The projection takes the top principal directions of the training
    features (mean of the two views, centred), so its output keeps as much of
    the backbone's variance as its size allows (all of it, rotated, when the
    size is the backbone's); the BN neck's running statistics start at the
    projected features' mean and variance, and its scale at their spread, so
    that in eval mode the neck only centres them: the untrained head embeds
    the images as the centred features (projected), not whitened ones.
    Whitening gave every principal direction the same weight, noise included:
    on the dog faces the untrained head's test mAP was 81.7 against the
    backbone's own 86.1, and the keep rule falls back to this start.
    """
    proj = model.backbone.proj
    mean_view = train_views.mean(axis=1)
    x = mean_view.astype(np.float64)
    x -= x.mean(axis=0)
    cov = x.T @ x / max(len(x) - 1, 1)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1][: proj.out_features]
    w = vectors[:, order].T  # (dim, d)
    # eigh's sign is arbitrary: fix it so the result does not depend on the LAPACK build
    w *= np.where(w[np.arange(len(w)), np.abs(w).argmax(axis=1)] < 0, -1.0, 1.0)[:, None]
    proj.weight.copy_(torch.as_tensor(w, dtype=proj.weight.dtype))
    y = torch.as_tensor(mean_view, dtype=proj.weight.dtype) @ proj.weight.t()
    model.neck.running_mean.copy_(y.mean(dim=0))
    model.neck.running_var.copy_(y.var(dim=0, unbiased=True).clamp_min(1e-6))
    model.neck.weight.copy_(torch.sqrt(model.neck.running_var + model.neck.eps))


@torch.no_grad()
def embed_cached(model, views, device, batch_size=None, autocast=None) -> np.ndarray:
    """Unit embeddings of cached views with the model's head in eval mode (flip-averaged).

    ``views`` are features ``(n, 2, d)`` or activations ``(n, 2, C, H, W)``
    (:mod:`aas_core.train.activations`; then batches of 128 by default, as blocks
    run on them); ``autocast``: a callable giving the context of the forward pass.
    """
    import contextlib

    autocast = autocast or contextlib.nullcontext
    if batch_size is None:
        batch_size = 4096 if len(views.shape) == 3 else 128
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    out = []
    try:
        for start in range(0, len(views), batch_size):
            v = torch.as_tensor(views[start : start + batch_size], device=device)
            with autocast():
                a = model(v[:, 0], cached=True).float()
                b = model(v[:, 1], cached=True).float()
            out.append(F.normalize(a + b, dim=1).cpu())
    finally:
        for m, training in modes:
            m.training = training
    if not out:
        return np.empty((0, model.feat_dim), np.float32)
    return torch.cat(out).numpy().astype(np.float32)


def _read_key(path: Path):
    """The key of a cache file (its arrays are not read), or None."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return json.loads(str(z["key"]))
    except (OSError, ValueError, KeyError):
        return None


def _trunk_info(model, size):
    """The backbone_info fields a cache key holds, for a model whose trunk is pretrained as
    recorded (a frozen-head model, or an untrained backbone); None when that cannot be told."""
    from .backbones import file_sha256
    from .models import ProjectedBackbone

    if not isinstance(model.backbone, ProjectedBackbone) and model.checkpoint is not None:
        return None  # a fully trained network: its trunk is not the recorded weights any more
    sha = (model.provenance or {}).get("weights_sha256")
    weights = model.weights
    if sha is None and weights is not None and os.path.isfile(weights):
        sha = file_sha256(weights)
    if sha is None:  # random weights: nothing says two of them are the same
        return None
    return {
        "arch": model.arch,
        "weights_sha256": sha,
        "last_stride": model.last_stride,
        "preprocess": model.preprocess.with_size(size).to_json(),
    }


@torch.no_grad()
def cached_embeddings(model, files, size, caches, device="cpu"):
    """What ``embed_images(model, files, size=size)`` returns, from a feature cache, or None.

    ``caches`` are ``features.npz`` files to try (of ``aas train
    --freeze-backbone`` or :func:`aas_core.catalogue.learn`); one fits when it
    holds exactly ``files`` (as its ``"train"`` set, unchanged on disk) with
    the model's trunk, its weights and preprocessing at ``size``. Then only
    the head runs on the cached features of the images (not their mirrors):
    a frozen-head model's projection and neck, or an untrained backbone's
    neck. None when no cache fits, or when the trunk is not known to be the
    cached one (a fully trained network, random weights).
    """
    from .models import ProjectedBackbone

    info = _trunk_info(model, size)
    if info is None:
        return None
    key = _cache_key(info, size, {"train": list(files)})
    for path in caches:
        path = Path(path)
        if not path.is_file() or _read_key(path) != key:
            continue
        found = _read(path)
        if found is None:
            continue
        views = found["train"]
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        out = []
        try:
            for start in range(0, len(views), 4096):
                v = torch.as_tensor(views[start : start + 4096, 0], device=device)
                if isinstance(model.backbone, ProjectedBackbone):
                    f = model(v, cached=True)
                else:
                    f = model.neck(v)
                out.append(F.normalize(f, dim=1).cpu())
        finally:
            for m, training in modes:
                m.training = training
        return torch.cat(out).numpy().astype(np.float32)
    return None
