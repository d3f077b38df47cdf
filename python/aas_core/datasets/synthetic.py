"""Synthetic Re-ID data: embeddings with look-alike identities
and a tiny image dataset for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._validation import check_float, check_int
from .images import _require_pillow, image_folder_csv

__all__ = ["make_reid_blobs", "make_reid_images"]

# Variance shares of the generator: an identity centre is 40% its group's
# direction and 60% its own; a sample is 8% its identity centre, 92% noise.
_GROUP_SHARE = 0.4
_CENTRE_SHARE = 0.08


def _unit_gaussian(rng, shape, dtype=np.float32):
    v = rng.standard_normal(shape, dtype=dtype)
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    return v


def make_reid_blobs(n, *, d=2048, ids_per_group=8, seed=0):
    """L2-normalised embeddings of ~n/8 identities in look-alike groups.

    Identity sizes are multinomial (n draws over n/8 identities, so about
    Poisson with mean 8; identities drawn zero times are dropped, and a few are
    singletons). Identities come in groups of ``ids_per_group`` that share a
    direction g: centre c = normalise(√0.4·g + √0.6·own), sample =
    normalise(√0.08·c + √0.92·noise), all directions Gaussian. Samples are
    shuffled so that row order carries no identity information.

    Parameters
    ----------
    n : int
        Number of samples (>= 1).
    d : int
        Dimension (>= 1).
    ids_per_group : int
        Identities per look-alike group (>= 1).
    seed : int
        Seed of the one numpy Generator used (the global RNG is never touched).

    Returns
    -------
    X : (n, d) float32, unit rows
    y : (n,) int64 identity labels 0..m-1

    Examples
    --------
    >>> X, y = make_reid_blobs(64, d=16, seed=0)
    >>> X.shape, X.dtype, y.dtype
    ((64, 16), dtype('float32'), dtype('int64'))
    """
    owner = "make_reid_blobs"
    n = check_int("n", n, low=1, owner=owner)
    d = check_int("d", d, low=1, owner=owner)
    ids_per_group = check_int("ids_per_group", ids_per_group, low=1, owner=owner)
    seed = check_int("seed", seed, low=0, owner=owner)
    rng = np.random.default_rng(seed)

    n_ids = max(1, round(n / 8))
    sizes = rng.multinomial(n, np.full(n_ids, 1.0 / n_ids))
    sizes = sizes[sizes > 0]
    n_ids = len(sizes)
    n_groups = -(-n_ids // ids_per_group)

    groups = _unit_gaussian(rng, (n_groups, d))
    own = _unit_gaussian(rng, (n_ids, d))
    group_of_id = np.arange(n_ids) // ids_per_group
    centres = np.sqrt(_GROUP_SHARE) * groups[group_of_id] + np.sqrt(1 - _GROUP_SHARE) * own
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    y = np.repeat(np.arange(n_ids, dtype=np.int64), sizes)
    X = _unit_gaussian(rng, (n, d))  # the noise, filled in place below
    X *= np.float32(np.sqrt(1 - _CENTRE_SHARE))
    X += np.float32(np.sqrt(_CENTRE_SHARE)) * centres[y]
    X /= np.linalg.norm(X, axis=1, keepdims=True)

    order = rng.permutation(n)
    return np.ascontiguousarray(X[order]), y[order]


# ---- a tiny synthetic image dataset --------------------------------------------

_SHAPES = ("ellipse", "rectangle", "triangle", "diamond", "cross")
_PATTERNS = ("solid", "hstripes", "vstripes", "diagonal", "checker", "dots")


def _hsv_to_rgb(h, s, v):
    """One HSV colour (each in [0, 1]) as float RGB in [0, 255]."""
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array(rgb) * 255.0


def _render(shape, pattern, freq, colours, aspect, jitter, background, size, rng):
    """One RGB image (uint8, h x w x 3) of a patterned shape on a noisy background."""
    h, w = size
    dy, dx, scale, brightness = jitter
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    ry = 0.32 * h * scale
    rx = ry * aspect * w / h
    u = (x - (0.5 + dx) * w) / rx
    v = (y - (0.5 + dy) * h) / ry
    if shape == "ellipse":
        inside = u * u + v * v <= 1
    elif shape == "rectangle":
        inside = (np.abs(u) <= 0.85) & (np.abs(v) <= 0.85)
    elif shape == "triangle":
        inside = (v <= 0.9) & (np.abs(u) <= (v + 0.9) / 1.8)
    elif shape == "diamond":
        inside = np.abs(u) + np.abs(v) <= 1.1
    else:  # cross
        inside = ((np.abs(u) <= 0.35) & (np.abs(v) <= 1)) | ((np.abs(v) <= 0.35) & (np.abs(u) <= 1))
    if pattern == "solid":
        second = np.zeros_like(inside)
    elif pattern == "hstripes":
        second = np.sin(np.pi * freq * v) > 0
    elif pattern == "vstripes":
        second = np.sin(np.pi * freq * u) > 0
    elif pattern == "diagonal":
        second = np.sin(np.pi * freq * (u + v) / 1.5) > 0
    elif pattern == "checker":
        second = (np.floor(freq * u / 2) + np.floor(freq * v / 2)) % 2 == 1
    else:  # dots
        fu, fv = (freq * u / 2) % 1 - 0.5, (freq * v / 2) % 1 - 0.5
        second = fu * fu + fv * fv < 0.09
    img = np.empty((h, w, 3))
    img[...] = background
    img[inside & ~second] = colours[0]
    img[inside & second] = colours[1]
    img *= brightness
    img += rng.normal(0.0, 8.0, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_reid_images(
    out_dir,
    n_identities,
    per_identity,
    *,
    size=(64, 64),
    n_cameras=2,
    test_fraction=0.5,
    seed=0,
    overwrite=False,
):
    """Writes a tiny synthetic Re-ID image dataset (PNG files + ``labels.csv``).

    Each identity is a coloured shape (ellipse, rectangle, triangle, diamond
    or cross) with a pattern (solid, stripes in three directions, checker or
    dots) in two colours of its own; each image of it shifts the shape (up to
    ±10% of the image), scales it (±15%), changes the brightness (±20%), adds
    Gaussian pixel noise (σ = 8 of 255) and sits on its camera's background
    tint. Identities differ in several attributes at once, yet two may share a
    shape or a pattern, so telling them apart takes colour and pattern
    together. No download; deterministic for a given seed.

    Layout: ``out_dir/images/<identity>/<identity>_c<camera>_<k>.png`` and
    ``out_dir/labels.csv`` with columns ``path,identity,camera,split``.
    Identities are numbered 0..n_identities-1. A seeded ``test_fraction`` of
    them is the test set: its first image (k = 0) of each identity is a
    "query", the others are "gallery"; the remaining identities are "train".
    Image k of identity i is taken by camera (i + k) mod n_cameras.

    Parameters
    ----------
    out_dir : str or Path
        Created if missing; must be empty unless ``overwrite=True``.
    n_identities, per_identity : int >= 1
        Identities, and images of each.
    size : (height, width)
        Image size in pixels, each >= 8.
    n_cameras : int >= 1
        Cameras (background tints).
    test_fraction : float in [0, 1]
        Share of identities in the test set (rounded half up).
    seed : int >= 0
        Seed of the one numpy Generator used.
    overwrite : bool
        Write into a non-empty ``out_dir`` (existing files of the same names
        are replaced; others are left alone).

    Returns
    -------
    ImageDataset
        The written dataset, loaded with :func:`image_folder_csv`.

    Raises
    ------
    ImportError
        If Pillow is missing (``pip install ".[images]"`` in the aas-core source folder).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     ds = make_reid_images(tmp, 4, 3, size=(16, 16), seed=0)
    ...     sorted(set(ds.split.tolist())), len(ds), ds.n_identities
    (['gallery', 'query', 'train'], 12, 4)
    """
    owner = "make_reid_images"
    n_identities = check_int("n_identities", n_identities, low=1, owner=owner)
    per_identity = check_int("per_identity", per_identity, low=1, owner=owner)
    n_cameras = check_int("n_cameras", n_cameras, low=1, owner=owner)
    seed = check_int("seed", seed, low=0, owner=owner)
    test_fraction = check_float("test_fraction", test_fraction, low=0.0, high=1.0, owner=owner)
    try:
        h, w = (check_int("size", s, low=8, owner=owner) for s in size)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ValueError) and "'size'" in str(exc):
            raise
        raise TypeError(
            f"The 'size' parameter of {owner} must be a (height, width) pair of ints >= 8; "
            f"got {size!r}."
        ) from None
    if not isinstance(overwrite, (bool, np.bool_)):
        raise TypeError(f"The 'overwrite' parameter of {owner} must be a bool; got {overwrite!r}.")
    Image = _require_pillow(owner)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{owner}: 'out_dir' is not a folder: {out}")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{owner}: 'out_dir' is not empty: {out} (pass overwrite=True to write into it)."
        )

    rng = np.random.default_rng(seed)
    golden = 0.6180339887498949
    hue0 = rng.random()
    ids = []
    for i in range(n_identities):
        hue = (hue0 + i * golden) % 1.0
        colours = (
            _hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.75, 1.0)),
            _hsv_to_rgb(
                (hue + rng.uniform(0.25, 0.75)) % 1.0, rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0)
            ),
        )
        ids.append(
            (
                _SHAPES[rng.integers(len(_SHAPES))],
                _PATTERNS[rng.integers(len(_PATTERNS))],
                rng.uniform(2.0, 5.0),
                colours,
                rng.uniform(0.6, 1.0),
            )
        )
    backgrounds = [rng.uniform(40, 200) + rng.uniform(-25, 25, size=3) for _ in range(n_cameras)]
    n_test = int(np.floor(test_fraction * n_identities + 0.5))
    is_test = np.zeros(n_identities, dtype=bool)
    is_test[rng.permutation(n_identities)[:n_test]] = True

    lines = ["path,identity,camera,split"]
    for i, (shape, pattern, freq, colours, aspect) in enumerate(ids):
        folder = out / "images" / f"{i:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(per_identity):
            cam = (i + k) % n_cameras
            jitter = (
                rng.uniform(-0.1, 0.1),
                rng.uniform(-0.1, 0.1),
                rng.uniform(0.85, 1.15),
                rng.uniform(0.8, 1.2),
            )
            pixels = _render(
                shape, pattern, freq, colours, aspect, jitter, backgrounds[cam], (h, w), rng
            )
            rel = f"images/{i:04d}/{i:04d}_c{cam}_{k:03d}.png"
            Image.fromarray(pixels).save(out / rel)
            split = ("query" if k == 0 else "gallery") if is_test[i] else "train"
            lines.append(f"{rel},{i},{cam},{split}")
    csv_path = out / "labels.csv"
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return image_folder_csv(csv_path)
