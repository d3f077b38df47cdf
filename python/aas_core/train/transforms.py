"""Image loading and the train/test transforms of SpCL, without torchvision.

Pillow reads and resizes, numpy does the rest, and every random draw comes
from a ``numpy.random.Generator`` passed in: with :class:`ImageTensors` each
image of each epoch gets its own generator seeded by ``(seed, epoch, index)``,
so augmentations are reproducible and do not depend on the DataLoader's
worker count or order.

The recipe (SpCL's ``examples/spcl_train_usl.py``): resize to (H, W)
bilinearly, horizontal flip with probability 0.5, zero padding of 10 pixels
then a random (H, W) crop, conversion to [0, 1], normalisation with the
ImageNet mean and standard deviation, and random erasing (Zhong et al.,
"Random Erasing Data Augmentation", AAAI 2020) with probability 0.5.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._runtime import require_torch

torch = require_torch("aas_core.train.transforms")

__all__ = [
    "DEFAULT_SIZE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "EvalTransform",
    "ImageTensors",
    "Preprocess",
    "TrainTransform",
    "load_image",
    "test_transform",
    "train_transform",
]

# The input size when neither the caller nor the backbone says (SpCL's, for persons).
DEFAULT_SIZE = (256, 128)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bilinear", "bicubic")

# Random erasing (Zhong et al. 2020, Alg. 1): area fraction and aspect-ratio range.
_ERASE_AREA = (0.02, 0.4)
_ERASE_RATIO = 0.3
_ERASE_ATTEMPTS = 100


def _pillow(what):
    from ..datasets.images import _require_pillow

    return _require_pillow(what)


def load_image(path):
    """Reads an image file as an RGB ``PIL.Image.Image`` (decoded, file closed).

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a file (the message names it).
    ValueError
        If Pillow cannot decode it (the message names the path and Pillow's
        reason).

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     Image.new("L", (4, 3)).save(Path(tmp, "a.png"))
    ...     im = load_image(Path(tmp, "a.png"))
    >>> im.mode, im.size
    ('RGB', (4, 3))
    """
    Image = _pillow("load_image")
    path = Path(os.fspath(path))
    if not path.is_file():
        raise FileNotFoundError(f"load_image: image file not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()  # decode now: truncated files fail here, and the file is closed after
            if im.mode == "P" and "transparency" in im.info:
                im = im.convert("RGBA")  # Pillow asks for this route for palette transparency
            return im.convert("RGB")
    except Exception as exc:  # noqa: BLE001 - any decoder failure means "unreadable"
        raise ValueError(
            f"load_image: cannot read the image {path} ({type(exc).__name__}: {exc})"
        ) from None


# ---- argument checks ---------------------------------------------------------------


def _check_size(size, owner):
    ok = (
        isinstance(size, (tuple, list))
        and len(size) == 2
        and all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in size)
    )
    if not ok:
        raise TypeError(
            f"The 'size' parameter of {owner} must be a (height, width) pair of ints; got {size!r}."
        )
    if min(size) < 1:
        raise ValueError(
            f"The 'size' parameter of {owner} must be a (height, width) pair of ints >= 1; "
            f"got {tuple(size)!r}."
        )
    return int(size[0]), int(size[1])


def _check_prob(name, p, owner):
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"The {name!r} parameter of {owner} must be a float; got {p!r}.")
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(
            f"The {name!r} parameter of {owner} must be a probability in [0, 1]; got {p!r}."
        )
    return float(p)


def _check_channels(name, values, owner, *, positive):
    try:
        arr = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise ValueError(
            f"The {name!r} parameter of {owner} must be 3 finite floats (one per RGB "
            f"channel); got {values!r}."
        )
    if positive and np.any(arr <= 0):
        raise ValueError(f"The {name!r} parameter of {owner} must be > 0; got {values!r}.")
    return arr.astype(np.float32)


def _check_rng(rng, owner):
    if rng is None:
        return np.random.default_rng()
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"The 'rng' parameter of {owner} must be a numpy.random.Generator or None; "
            f"got {type(rng).__name__}."
        )
    return rng


def _check_interpolation(value, owner):
    if value not in INTERPOLATIONS:
        raise ValueError(
            f"The 'interpolation' parameter of {owner} must be one of {INTERPOLATIONS}; got "
            f"{value!r}."
        )
    return value


@dataclass(frozen=True)
class Preprocess:
    """How a backbone wants its images: input size, normalisation and resampling.

    Every backbone made by :mod:`aas_core.train.models` or
    :mod:`aas_core.train.backbones` carries one as ``.preprocess``; embedding
    and training read it, so a network always sees images the way its weights
    were trained (EfficientNet-Lite: [-1, 1] inputs; timm models: their
    pretrained config; ResNets: ImageNet statistics).

    Attributes
    ----------
    size : (height, width) or None
        The input size; None leaves it to the caller (256x128 by default).
    mean, std : 3 floats
        Per-channel normalisation of the [0, 1] pixel values.
    interpolation : {"bilinear", "bicubic"}
        Pillow's resampling filter for the resize.

    Examples
    --------
    >>> Preprocess((224, 224), (0.5,) * 3, (0.5,) * 3).to_json()["size"]
    [224, 224]
    """

    size: tuple | None = None
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    interpolation: str = "bilinear"

    def __post_init__(self):
        owner = "Preprocess"
        if self.size is not None:
            object.__setattr__(self, "size", _check_size(self.size, owner))
        _check_channels("mean", self.mean, owner, positive=False)
        _check_channels("std", self.std, owner, positive=True)
        # kept as given (float64), so records show 127/255 rather than its float32 rounding
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        _check_interpolation(self.interpolation, owner)

    def with_size(self, size) -> Preprocess:
        """The same preprocessing at another input size."""
        return Preprocess(size, self.mean, self.std, self.interpolation)

    def to_json(self) -> dict:
        """Plain values: ``{"size": [h, w] or None, "mean": [...], "std": [...], ...}``."""
        return {
            "size": None if self.size is None else list(self.size),
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
        }

    @classmethod
    def from_json(cls, d) -> Preprocess:
        """The inverse of :meth:`to_json`; raises ValueError for anything else."""
        if not isinstance(d, dict) or set(d) - {"size", "mean", "std", "interpolation"}:
            raise ValueError(f"Preprocess.from_json: not a preprocessing record: {d!r}.")
        try:
            size = d.get("size")
            return cls(
                None if size is None else tuple(size),
                tuple(d.get("mean", IMAGENET_MEAN)),
                tuple(d.get("std", IMAGENET_STD)),
                d.get("interpolation", "bilinear"),
            )
        except TypeError as exc:
            raise ValueError(f"Preprocess.from_json: {exc}") from None


# ---- transforms ----------------------------------------------------------------------


class EvalTransform:
    """Resize (bilinear) -> [0, 1] -> normalise; see :func:`test_transform`."""

    def __init__(self, size, mean, std, interpolation="bilinear"):
        self.size, self.mean, self.std = size, mean, std
        self.interpolation = interpolation

    def _tensor(self, img, flip=False):
        Image = _pillow("transforms")
        if not isinstance(img, Image.Image):
            raise TypeError(
                f"{type(self).__name__} takes a PIL image (see load_image); got "
                f"{type(img).__name__}."
            )
        if img.mode != "RGB":
            img = img.convert("RGB")
        h, w = self.size
        if img.size != (w, h):
            resample = Image.BICUBIC if self.interpolation == "bicubic" else Image.BILINEAR
            img = img.resize((w, h), resample)
        x = np.asarray(img, dtype=np.float32)  # (H, W, 3) in [0, 255]
        if flip:
            x = x[:, ::-1]
        return x

    def _finish(self, x):
        # x: (H, W, 3) in [0, 255] -> (3, H, W), normalised
        x = (x * np.float32(1 / 255) - self.mean) / self.std
        return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)

    def __call__(self, img, rng=None):
        """``(3, H, W)`` float32 tensor of ``img``; ``rng`` is accepted and unused."""
        return torch.from_numpy(self._finish(self._tensor(img)))

    def __repr__(self):
        return (
            f"{type(self).__name__}(size={self.size}, mean={tuple(self.mean.tolist())}, "
            f"std={tuple(self.std.tolist())}, interpolation={self.interpolation!r})"
        )


class TrainTransform(EvalTransform):
    """SpCL's training augmentation; see :func:`train_transform`."""

    def __init__(self, size, mean, std, flip_p, pad, erase_p, interpolation="bilinear"):
        super().__init__(size, mean, std, interpolation)
        self.flip_p, self.pad, self.erase_p = flip_p, pad, erase_p

    def __call__(self, img, rng=None):
        """``(3, H, W)`` float32 tensor of an augmented ``img``; draws only from ``rng``."""
        rng = _check_rng(rng, "TrainTransform")
        h, w = self.size
        x = self._tensor(img, flip=bool(rng.random() < self.flip_p))
        if self.pad:
            p = self.pad
            top, left = (int(v) for v in rng.integers(0, 2 * p + 1, size=2))
            padded = np.zeros((h + 2 * p, w + 2 * p, 3), dtype=np.float32)
            padded[p : p + h, p : p + w] = x
            x = padded[top : top + h, left : left + w]
        x = self._finish(x)
        if rng.random() < self.erase_p:
            self._erase(x, rng)
        return torch.from_numpy(x)

    def _erase(self, x, rng):
        """Random erasing in place on the normalised (3, H, W) array; at most one rectangle."""
        _, h, w = x.shape
        area = h * w
        log_lo, log_hi = math.log(_ERASE_RATIO), math.log(1.0 / _ERASE_RATIO)
        for _ in range(_ERASE_ATTEMPTS):
            target = rng.uniform(*_ERASE_AREA) * area
            ratio = math.exp(rng.uniform(log_lo, log_hi))
            eh = int(round(math.sqrt(target * ratio)))
            ew = int(round(math.sqrt(target / ratio)))
            if 0 < eh < h and 0 < ew < w:
                top = int(rng.integers(0, h - eh + 1))
                left = int(rng.integers(0, w - ew + 1))
                x[:, top : top + eh, left : left + ew] = self.mean[:, None, None]
                return

    def __repr__(self):
        return (
            super().__repr__()[:-1]
            + f", flip_p={self.flip_p}, pad={self.pad}, erase_p={self.erase_p})"
        )


def test_transform(
    size=(256, 128), *, mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bilinear"
) -> EvalTransform:
    """The test-time transform: resize, scale to [0, 1], normalise.

    Returns a callable ``t(img, rng=None) -> torch.FloatTensor (3, H, W)``
    (``rng`` is unused: the transform is deterministic).

    Parameters
    ----------
    size : (height, width)
        Output size; default 256x128 (persons; 224x224 for animals).
    mean, std : 3 floats
        Per-channel normalisation of the [0, 1] values.
    interpolation : {"bilinear", "bicubic"}
        Resampling filter of the resize.

    Examples
    --------
    >>> from PIL import Image
    >>> t = test_transform((8, 4))
    >>> t(Image.new("RGB", (10, 20), (255, 0, 0))).shape
    torch.Size([3, 8, 4])
    """
    owner = "test_transform"
    return EvalTransform(
        _check_size(size, owner),
        _check_channels("mean", mean, owner, positive=False),
        _check_channels("std", std, owner, positive=True),
        _check_interpolation(interpolation, owner),
    )


test_transform.__test__ = False  # not a test, should a test module import it by name


def train_transform(
    size=(256, 128),
    *,
    flip_p=0.5,
    pad=10,
    erase_p=0.5,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    interpolation="bilinear",
) -> TrainTransform:
    """SpCL's training augmentation as a callable ``t(img, rng=None) -> (3, H, W) tensor``.

    In order: resize to ``size`` (``interpolation``, bilinear by default); mirror left-right with
    probability ``flip_p``; pad ``pad`` zero (black) pixels on every side and
    crop a random ``size`` window back out; scale to [0, 1] and normalise
    with ``mean`` and ``std``; then with probability ``erase_p`` erase one
    random rectangle (random erasing, Zhong et al. 2020): up to 100 attempts
    draw an area of U(0.02, 0.4) times the image and an aspect ratio
    (height / width) log-uniform in (0.3, 1/0.3); the first rectangle that
    fits is filled, else nothing is erased.

    The erased rectangle is filled with the per-channel value ``mean`` *in
    the normalised image*, as SpCL's ``RandomErasing(mean=normalizer.mean)``
    does: that is the pixel value mean + std * mean (about 0.6 grey), not the
    mean colour (which would be 0 after normalisation). We keep this quirk so
    training matches SpCL. (SpCL draws the aspect ratio uniformly in
    (0.3, 3.33); we draw it log-uniformly, as torchvision's RandomErasing,
    so tall and wide rectangles are equally likely.)

    All randomness comes from ``rng`` (a fresh unseeded generator if None):
    the same seeded generator state gives the same output.

    Examples
    --------
    >>> from PIL import Image
    >>> t = train_transform((16, 8), pad=2)
    >>> img = Image.new("RGB", (8, 16), (0, 128, 255))
    >>> a = t(img, np.random.default_rng(0))
    >>> bool(torch.equal(a, t(img, np.random.default_rng(0)))), tuple(a.shape)
    (True, (3, 16, 8))
    """
    owner = "train_transform"
    size = _check_size(size, owner)
    if isinstance(pad, bool) or not isinstance(pad, numbers.Integral) or pad < 0:
        raise ValueError(f"The 'pad' parameter of {owner} must be an int >= 0; got {pad!r}.")
    return TrainTransform(
        size,
        _check_channels("mean", mean, owner, positive=False),
        _check_channels("std", std, owner, positive=True),
        _check_prob("flip_p", flip_p, owner),
        int(pad),
        _check_prob("erase_p", erase_p, owner),
        _check_interpolation(interpolation, owner),
    )


# ---- dataset -------------------------------------------------------------------------


def _check_seed(name, value, owner):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"The {name!r} parameter of {owner} must be an int >= 0; got {value!r}.")
    return int(value)


class ImageTensors(torch.utils.data.Dataset):
    """Images from files, transformed: a ``torch.utils.data.Dataset``.

    ``dataset[i]`` is ``(tensor, i)``, or ``(tensor, i, label)`` when
    ``labels`` are given: the row index ``i`` always comes back, so a batch
    can be matched to its rows (memory bank, pseudo-labels) whatever the
    sampler; ``label`` is ``int(labels[i])``. The DataLoader's default
    collate turns ``i`` and ``label`` into int64 tensors.

    Item ``i`` is transformed with ``numpy.random.default_rng([seed, epoch,
    i])``: reproducible, and independent of the order in which items are
    drawn and of the number of DataLoader workers. Call :meth:`set_epoch`
    before each epoch for fresh augmentations. (With ``persistent_workers=
    True`` the workers keep the epoch their copy had: recreate the
    DataLoader's iterator, the default, so they see the new one.)

    Parameters
    ----------
    files : sequence of str or Path
        Image files (see :func:`load_image` for the errors).
    transform : callable
        ``transform(img, rng) -> tensor``, e.g. :func:`train_transform`.
    seed : int >= 0
    labels : sequence of int, optional
        One per file.

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     Image.new("RGB", (8, 16)).save(Path(tmp, "a.png"))
    ...     ds = ImageTensors([Path(tmp, "a.png")], test_transform((16, 8)), labels=[7])
    ...     x, i, label = ds[0]
    >>> tuple(x.shape), i, label
    ((3, 16, 8), 0, 7)
    """

    def __init__(self, files, transform, *, seed=0, labels=None):
        owner = "ImageTensors"
        if isinstance(files, (str, os.PathLike)):
            raise TypeError(
                f"The 'files' parameter of {owner} must be a sequence of paths; got one path."
            )
        self.files = [Path(os.fspath(f)) for f in files]
        if not callable(transform):
            raise TypeError(f"The 'transform' parameter of {owner} must be callable.")
        self.transform = transform
        self.seed = _check_seed("seed", seed, owner)
        self.epoch = 0
        if labels is not None:
            lab = np.asarray(labels)
            if (
                lab.ndim != 1
                or len(lab) != len(self.files)
                or not np.issubdtype(lab.dtype, np.integer)
            ):
                raise ValueError(
                    f"The 'labels' parameter of {owner} must be 1-D integers, one per file "
                    f"({len(self.files)}); got shape {lab.shape} and dtype {lab.dtype}."
                )
            labels = lab.astype(np.int64)  # a copy: the caller's array is never kept
        self.labels = labels

    def set_epoch(self, epoch: int) -> None:
        """Sets the epoch that seeds the augmentations."""
        self.epoch = _check_seed("epoch", epoch, "ImageTensors.set_epoch")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        i = int(i)
        if not 0 <= i < len(self.files):
            raise IndexError(f"ImageTensors: index {i} out of range [0, {len(self.files)}).")
        rng = np.random.default_rng([self.seed, self.epoch, i])
        x = self.transform(load_image(self.files[i]), rng)
        if self.labels is None:
            return x, i
        return x, i, int(self.labels[i])
