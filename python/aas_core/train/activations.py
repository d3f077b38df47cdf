"""The activation cache of ``aas train --train-blocks N``: what enters the last N blocks.

The stem of the backbone (:class:`~aas_core.train.blocks.BlockSplit`) runs
once on every image and on its mirror image; its output is kept in the run
directory, ``activations/<split>.bin`` (one raw ``(n, 2, C, H, W)`` array per
image set: train, query, gallery) with ``activations/key.json``. The arrays
are memory-mapped, so the cache may be larger than the memory: a batch reads
only its rows. They hold bfloat16 (its bits as int16: numpy has no bfloat16)
when the run computes in bf16, else float16 (three more bits of mantissa;
post-BatchNorm activations are far inside its range, and a value outside it
is refused when caching).

The key records what made the cache (the backbone's identity, input size,
preprocessing, N, the storage type) and the images (path, size and
modification time of every file); the key is written last, so a cache cut
off by a crash is computed again rather than read.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from .._files import write_atomic
from ._runtime import loader_workers, require_torch
from .frozen import _cache_key
from .transforms import ImageTensors, test_transform

torch = require_torch("aas_core.train.activations")

__all__ = ["ACTIVATION_CACHE", "ActivationCache", "Activations", "load_or_compute"]

ACTIVATION_CACHE = "activations"
_STORAGE = {"bf16": np.int16, "fp16": np.float16}


class Activations:
    """One image set's cached activations, ``(n, 2, C, H, W)``; indexing returns float32."""

    def __init__(self, raw, dtype: str):
        self.raw, self.dtype = raw, dtype

    def __len__(self):
        return len(self.raw)

    @property
    def shape(self):
        return self.raw.shape

    def __getitem__(self, key):
        a = np.array(self.raw[key])  # a writable copy: torch refuses read-only arrays
        if self.dtype == "bf16":
            return torch.from_numpy(a).view(torch.bfloat16).float().numpy()
        return a.astype(np.float32)


class ActivationCache:
    """``cache[split]`` is that set's :class:`Activations`."""

    def __init__(self, views: dict, key: dict, folder: Path):
        self.views, self.key, self.folder = views, key, folder

    def __getitem__(self, split):
        return self.views[split]


def _to_storage(t, dtype):
    if dtype == "bf16":
        return t.to(torch.bfloat16).view(torch.int16).cpu().numpy()
    return t.to(torch.float16).cpu().numpy()


def _open(folder: Path, key: dict):
    views = {}
    for name, count in key["counts"].items():
        path = folder / f"{name}.bin"
        shape = (count, 2, *key["shape"])
        want = int(np.prod(shape)) * np.dtype(_STORAGE[key["dtype"]]).itemsize
        if not path.is_file() or path.stat().st_size != want:
            return None
        if count == 0:
            raw = np.zeros(shape, _STORAGE[key["dtype"]])
        else:
            raw = np.memmap(path, dtype=_STORAGE[key["dtype"]], mode="r", shape=shape)
        views[name] = Activations(raw, key["dtype"])
    return ActivationCache(views, key, folder)


def _read_key(folder: Path):
    try:
        with open(folder / "key.json", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def load_or_compute(
    folder,
    split,
    sets: dict,
    *,
    backbone_info,
    size,
    preprocess,
    dtype,
    batch_size,
    device,
    num_workers,
    autocast,
    say,
) -> ActivationCache:
    """The cache in ``folder`` if it matches ``sets``, the backbone, ``split.n`` and
    ``dtype``; else a new one, its size said (and checked against the free disk space)
    before anything is computed.

    ``sets`` maps "train" (and optionally "query", "gallery") to image files;
    ``autocast`` is a callable returning the context the stem runs in.
    """
    folder = Path(folder)
    key = _cache_key(backbone_info, size, sets)
    key.update(train_blocks=split.n, dtype=dtype)
    old = _read_key(folder)
    if old is not None:
        shape = old.pop("shape", None)
        if old == key:
            found = _open(folder, {**key, "shape": shape})
            if found is not None:
                return found
        say(
            f"train: recomputing the activation cache {folder} (the images or the backbone changed)"
        )
        (folder / "key.json").unlink(missing_ok=True)
    with torch.no_grad(), autocast():
        shape = list(split.stem(torch.zeros(1, 3, *size, device=device)).shape[1:])
    key["shape"] = shape
    per_view = int(np.prod(shape)) * 2  # 2 bytes a value, bf16 or fp16
    total = sum(len(files) for files in sets.values()) * 2 * per_view
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    say(
        f"train: caching the activations entering the last {split.n} blocks "
        f"({'x'.join(map(str, shape))} per view, {dtype}) of "
        f"{sum(len(f) for f in sets.values())} images and their mirrors: "
        f"{total / 2**30:.2f} GiB in {folder} ({free / 2**30:.1f} GiB free)"
    )
    if total > free:
        raise ValueError(
            f"train: the activation cache needs {total / 2**30:.2f} GiB but {folder} has "
            f"{free / 2**30:.2f} GiB free; train fewer blocks (train_blocks) or free space."
        )
    transform = test_transform(
        size, mean=preprocess.mean, std=preprocess.std, interpolation=preprocess.interpolation
    )
    for name, files in sets.items():
        path = folder / f"{name}.bin"
        if not files:
            path.write_bytes(b"")
            continue
        tmp = folder / f".{name}.bin.tmp"
        out = np.memmap(tmp, dtype=_STORAGE[dtype], mode="w+", shape=(len(files), 2, *shape))
        loader = torch.utils.data.DataLoader(
            ImageTensors(files, transform),
            batch_size=batch_size,
            shuffle=False,
            num_workers=loader_workers(num_workers),
        )
        with torch.no_grad(), autocast():
            for x, index in loader:
                x = x.to(device)
                a = torch.stack([split.stem(x), split.stem(torch.flip(x, dims=[3]))], 1).float()
                if not torch.isfinite(a).all() or a.abs().max() > 60000:
                    raise ValueError(
                        f"train: the backbone's activations of an image among "
                        f"{files[int(index[0])]}... are not finite or too large to cache."
                    )
                out[index.numpy()] = _to_storage(a, dtype)
        out.flush()
        del out
        os.replace(tmp, path)
    text = json.dumps(key, sort_keys=True)
    write_atomic(folder / "key.json", lambda f: f.write(text.encode("utf-8")))
    return _open(folder, key)
