"""Images -> L2-normalised embeddings with a model (the engine of ``aas embed``)."""

from __future__ import annotations

import numbers
import os
import sys
import time

import numpy as np

from .._files import embedding_paths, save_embeddings  # torch-free; kept importable here
from .._validation import _available_cpus
from ._runtime import loader_workers, require_torch, resolve_device
from .transforms import DEFAULT_SIZE, ImageTensors, Preprocess, test_transform

torch = require_torch("aas_core.train.embed")

__all__ = [
    "default_num_workers",
    "embed_images",
    "embedding_paths",
    "model_record",
    "save_embeddings",
]


class _ProgressBar:
    """``[#####.....] 120/400 images  35.2 img/s`` on one stderr line, redrawn at most 10x/s."""

    def __init__(self, total, enabled, stream=None, width=30):
        self.total, self.enabled, self.width = max(int(total), 1), enabled, width
        self.stream = sys.stderr if stream is None else stream
        self.done = 0
        self.start = self.last = time.perf_counter()

    def update(self, k):
        self.done += k
        now = time.perf_counter()
        if self.enabled and (now - self.last >= 0.1 or self.done >= self.total):
            self.last = now
            filled = int(self.width * self.done / self.total)
            rate = self.done / max(now - self.start, 1e-9)
            self.stream.write(
                f"\r  embedding [{'#' * filled}{'.' * (self.width - filled)}] "
                f"{self.done}/{self.total} images {rate:7.1f} img/s"
            )
            self.stream.flush()

    def close(self):
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def _check_pos_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(
            f"The {name!r} parameter of embed_images must be an int >= {low}; got {value!r}."
        )
    return int(value)


def _single_device(model):
    devices = {t.device for t in (*model.parameters(), *model.buffers())}
    if len(devices) > 1:
        raise ValueError(
            "embed_images: the model's parameters lie on several devices "
            f"({', '.join(sorted(map(str, devices)))}); move it to one first."
        )
    return next(iter(devices), None)


def embed_images(
    model,
    files,
    *,
    size=None,
    batch_size=64,
    device="auto",
    num_workers=0,
    flip=False,
    progress=None,
    preprocess=None,
    views=False,
) -> np.ndarray:
    """Embeds image files with ``model``: row i of the result is ``files[i]``.

    Each image is read (:func:`~aas_core.train.transforms.load_image`),
    resized to ``size`` and normalised as the model's weights expect
    (:func:`~aas_core.train.transforms.test_transform` with the model's
    ``preprocess``), the model runs in eval mode under
    ``torch.inference_mode()``, and each output row is L2-normalised.

    Parameters
    ----------
    model : torch.nn.Module
        A :class:`~aas_core.train.models.ReIDModel`, or any module mapping a
        ``(B, 3, H, W)`` batch to ``(B, d)`` features.
    files : sequence of str or Path
    size : (height, width) or None
        Input size. None: the size of ``preprocess`` (a pretrained
        backbone's own, or a trained model's training size), else 256x128.
    batch_size : int >= 1
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``
        (:func:`~aas_core.train._runtime.resolve_device`).
    num_workers : int >= 0
        DataLoader worker processes that read images (0: in this process).
    flip : bool
        Test-time flip: the features of each image and of its mirror image
        (as the model returns them; a ReIDModel in eval mode returns them
        L2-normalised) are averaged, then the mean is L2-normalised, as
        fast-reid's flip test does.
    progress : bool or None
        Draw a progress bar on stderr; None: only when stderr is a terminal.
    preprocess : Preprocess or None
        Mean, std and resampling of the images (and their size if ``size``
        is None). None: the model's ``preprocess`` attribute (every model
        of :mod:`aas_core.train.models` has one), else ImageNet statistics.
    views : bool
        Return the raw features (as the model returns them, not normalised)
        of each image and of its mirror image, ``(n, 2, d)``, instead: what
        a frozen backbone's feature cache holds. ``flip`` is then ignored.

    Returns
    -------
    (n, d) float32 ndarray, rows of unit length

    Raises
    ------
    FileNotFoundError, ValueError
        If an image is missing or unreadable; the message names its path
        (check the dataset first, e.g. with ``verify_images=True``).
    ValueError
        If the model returns NaN or inf features for an image (broken
        weights); the message names the image.

    Notes
    -----
    The model's train/eval mode (of every submodule) is restored afterwards.
    If it lives on another device it is moved to ``device`` for the run and
    moved back (its parameter objects stay the same); nothing else of the
    caller's is changed.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> from aas_core.train.models import ReIDModel
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     files = [Path(tmp, f"{k}.png") for k in range(3)]
    ...     for k, f in enumerate(files):
    ...         Image.new("RGB", (16, 32), (80 * k, 0, 0)).save(f)
    ...     X = embed_images(ReIDModel.from_spec("tiny"), files, size=(64, 32), device="cpu")
    >>> X.shape, X.dtype, bool(np.allclose(np.linalg.norm(X, axis=1), 1))
    ((3, 64), dtype('float32'), True)
    """
    owner = "embed_images"
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"The 'model' parameter of {owner} must be a torch.nn.Module; got "
            f"{type(model).__name__}."
        )
    if isinstance(files, (str, os.PathLike)):
        raise TypeError(f"The 'files' parameter of {owner} must be a sequence of paths; got one.")
    files = list(files)
    batch_size = _check_pos_int("batch_size", batch_size, 1)
    num_workers = _check_pos_int("num_workers", num_workers, 0)
    if not isinstance(flip, (bool, np.bool_)):
        raise TypeError(f"The 'flip' parameter of {owner} must be a bool; got {flip!r}.")
    if not isinstance(views, (bool, np.bool_)):
        raise TypeError(f"The 'views' parameter of {owner} must be a bool; got {views!r}.")
    if progress is not None and not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"The 'progress' parameter of {owner} must be a bool or None.")
    if preprocess is None:
        preprocess = getattr(model, "preprocess", None)
        if not isinstance(preprocess, Preprocess):
            preprocess = Preprocess()
    elif not isinstance(preprocess, Preprocess):
        raise TypeError(
            f"The 'preprocess' parameter of {owner} must be a Preprocess or None; got "
            f"{type(preprocess).__name__}."
        )
    if size is None:
        size = preprocess.size or DEFAULT_SIZE
    transform = test_transform(  # checks size
        size, mean=preprocess.mean, std=preprocess.std, interpolation=preprocess.interpolation
    )
    dev = resolve_device(device)
    if not files:
        feat_dim = getattr(model, "feat_dim", None)
        if isinstance(feat_dim, int):
            return np.empty((0, 2, feat_dim) if views else (0, feat_dim), np.float32)
        raise ValueError(f"The 'files' parameter of {owner} must not be empty.")

    loader = torch.utils.data.DataLoader(
        ImageTensors(files, transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=loader_workers(num_workers),
        pin_memory=dev.type == "cuda",
    )
    if progress is None:
        progress = bool(getattr(sys.stderr, "isatty", lambda: False)())
    bar = _ProgressBar(len(files), bool(progress))
    modes = [(m, m.training) for m in model.modules()]
    home = _single_device(model)
    # Our own convolutional backbones run 1.5-1.8x faster on the CPU with channels-last
    # input (oneDNN's depthwise and 1x1 kernels); a foreign module might .view() its maps,
    # so only those that declare it get it.
    inner = getattr(model, "backbone", model)
    channels_last = dev.type == "cpu" and getattr(inner, "channels_last_ok", False)
    out = None
    try:
        if home is not None and home != dev:
            model.to(dev)
        model.eval()
        with torch.inference_mode():
            for x, index in loader:
                x = x.to(dev, non_blocking=True)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                f = _features(model, x)
                if views:
                    f = torch.stack([f, _features(model, torch.flip(x, dims=[3]))], dim=1)
                elif flip:
                    f = (f + _features(model, torch.flip(x, dims=[3]))) / 2
                rows = index.numpy()
                f = f.float()
                finite = torch.isfinite(f.flatten(1)).all(dim=1).cpu().numpy()
                if not finite.all():
                    bad = [str(files[i]) for i in rows[~finite]]
                    raise ValueError(
                        f"{owner}: the model returned NaN or inf features for "
                        f"{len(bad)} of {len(rows)} images of a batch, first {bad[0]} (its "
                        "weights may hold NaN/inf, e.g. from a diverged training run, or its "
                        "activations overflow)."
                    )
                if not views:
                    f = torch.nn.functional.normalize(f, dim=1)
                if out is None:
                    out = np.empty((len(files), *f.shape[1:]), np.float32)
                out[rows] = f.cpu().numpy()
                bar.update(len(rows))
    except (ValueError, OSError) as exc:
        clean = _from_worker(exc)
        if clean is None:
            raise
        raise clean from None
    finally:
        bar.close()
        for m, training in modes:
            m.training = training
        if home is not None and home != dev:
            model.to(home)
    return out


def _from_worker(exc):
    """An image error raised in a DataLoader worker, without torch's wrapping.

    torch re-raises it in this process as the same type with the message
    "Caught ValueError in DataLoader worker process 0. Original Traceback ..."
    ending in the original "ValueError: <message>"; returns the exception with
    just that message (it names the image), or None for any other error.
    """
    text = str(exc)
    if "DataLoader worker" not in text or "Original Traceback" not in text:
        return None
    last = text.rstrip().splitlines()[-1]
    prefix = f"{type(exc).__name__}: "
    if not last.startswith(prefix):
        return None
    try:
        return type(exc)(last[len(prefix) :])
    except Exception:  # noqa: BLE001 - an exception type with another signature
        return None


def _features(model, x):
    f = model(x)
    if not isinstance(f, torch.Tensor) or f.ndim != 2 or f.shape[0] != x.shape[0]:
        shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
        raise ValueError(
            f"embed_images: the model must map a (B, 3, H, W) batch to (B, d) features; for "
            f"{tuple(x.shape)} it returned {shape}."
        )
    return f


# ---- what an embedding was made with, and writing it -----------------------------------


def default_num_workers(device) -> int:
    """Image-decoding worker processes for :func:`embed_images`: on the CPU half the
    CPUs (at most 4; the model needs the rest), on a GPU up to 8."""
    cpus = _available_cpus()
    if str(device).startswith("cuda"):
        return max(1, min(8, cpus))
    return max(1, min(4, cpus // 2))


def model_record(model) -> dict:
    """Plain values saying which network (and which weights files) made an embedding.

    Keys: ``arch``, ``feat_dim``, ``last_stride``, ``backbone`` (the
    pretrained name or None) and, where the model came from files,
    ``weights`` / ``checkpoint`` / ``torchscript`` with their sha256. A
    pretrained backbone adds ``source`` (where its weights come from); a
    trained checkpoint adds ``initialised_from`` (the backbone it started
    from: name, source, weights file and sha256).
    """
    from .backbones import file_sha256

    inner = getattr(model, "module", model)
    rec = {
        "arch": getattr(inner, "arch", None),
        "feat_dim": getattr(inner, "feat_dim", None),
        "last_stride": getattr(inner, "last_stride", None),
        "backbone": getattr(inner, "backbone_name", None),
    }
    provenance = getattr(inner, "provenance", None) or {}
    checkpoint = getattr(inner, "checkpoint", None)
    if checkpoint is not None and provenance:
        rec["initialised_from"] = {k: v for k, v in provenance.items() if k != "preprocess"}
    elif provenance.get("source"):
        rec["source"] = provenance["source"]
    known = {}
    if provenance.get("weights") and provenance.get("weights_sha256"):
        known[os.path.abspath(provenance["weights"])] = provenance["weights_sha256"]
    files = (
        ("weights", None if checkpoint else getattr(inner, "weights", None)),
        ("checkpoint", checkpoint),
        ("torchscript", getattr(getattr(inner, "backbone", None), "torchscript_path", None)),
    )
    for key, value in files:
        if value is None:
            continue
        path = os.path.abspath(os.fspath(value))
        rec[key] = path
        if os.path.isfile(path):
            rec[f"{key}_sha256"] = known.get(path) or file_sha256(path)
    return rec
