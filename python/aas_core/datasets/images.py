"""Image datasets on disk: one record type and loaders for three formats.

Every loader returns an :class:`ImageDataset`: image paths relative to a
root folder, identity codes (int64, -1 = unknown) with the original identity
names, and, where the format has them, camera ids, split names and other
metadata columns. Nothing is ever silently relabelled or dropped:

- problems with the *table* (a missing or doubled column, a file that is not
  UTF-8, a row with more non-empty cells than the header, as an unquoted
  comma in a name makes, an empty path or identity cell, a camera id that
  is not an integer, the same image listed twice) always raise, naming the
  file and line, because skipping them would hide a labelling mistake;
- problems with one *image* (the file is missing, or with
  ``verify_images=True`` Pillow cannot decode it) raise too by default
  (``on_error="raise"``: FileNotFoundError if a file is missing, else
  ValueError, listing every problem), or with ``on_error="skip"`` the image
  is left out and reported in ``ImageDataset.skipped`` and in
  ``ImageDataset.summary()`` (no warning is emitted).

Pillow is needed only for ``verify_images=True``; install it with
``pip install ".[images]"`` in the aas-core source folder.
"""

from __future__ import annotations

import csv
import io
import os
import re
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .._csvcell import read_cell
from .._extras import install_hint

__all__ = [
    "ImageDataset",
    "SkippedImage",
    "image_folder_csv",
    "market1501",
    "parse_market1501_name",
    "wildlife_metadata",
]

_ON_ERROR = ("raise", "skip")
_MAX_LISTED = 10  # problems listed in an error message


class SkippedImage(NamedTuple):
    """An image left out with ``on_error="skip"``: its path (as listed) and why."""

    path: str
    reason: str


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """Images with identities, as loaded from disk.

    Attributes
    ----------
    paths : tuple of str
        Image paths relative to ``root`` (as written in the source, with "/"
        separators); ``files`` gives the full paths.
    identity : (n,) int64, read-only
        Identity code of each image, an index into ``identity_names``; -1
        means unknown (never the same individual as any other image).
    identity_names : tuple of str
        The original identity labels; code k is ``identity_names[k]``. Names
        that are all integers are ordered by value, others as strings.
    root : pathlib.Path
        Folder the paths are relative to.
    camera : (n,) int64 or None, read-only
        Camera ids, where the source has them.
    split : (n,) str array or None, read-only
        Split names as written in the source ("train", "test", "query", ...).
    extra : mapping of str to (n,) str arrays
        Other metadata columns kept by the loader (for example ``species``).
    skipped : tuple of SkippedImage
        Images left out with ``on_error="skip"``.
    notes : tuple of str
        What the loader did that a user should know (for example junk images
        dropped by the Market-1501 protocol).

    Examples
    --------
    >>> ds = ImageDataset(("a.png", "b.png", "c.png"), np.array([0, 1, -1]), ("cat", "dog"),
    ...                   Path("/data"))
    >>> len(ds), ds.n_identities, ds.files[0].as_posix()
    (3, 2, '/data/a.png')
    >>> ds.subset([1, 2], relabel=True).identity_names
    ('dog',)
    """

    paths: tuple
    identity: np.ndarray
    identity_names: tuple
    root: Path
    camera: np.ndarray | None = None
    split: np.ndarray | None = None
    extra: Mapping = field(default_factory=dict)
    skipped: tuple = ()
    notes: tuple = ()

    def __post_init__(self):
        set_ = object.__setattr__
        n = len(self.paths)
        set_(self, "paths", tuple(str(p) for p in self.paths))
        set_(self, "identity_names", tuple(str(s) for s in self.identity_names))
        set_(self, "root", Path(self.root))
        ident = _frozen(self.identity, np.int64, "identity", n)
        if ident.size and (ident.min() < -1 or ident.max() >= len(self.identity_names)):
            raise ValueError(
                "ImageDataset: 'identity' must hold codes in [-1, len(identity_names)); got "
                f"values in [{int(ident.min())}, {int(ident.max())}] with "
                f"{len(self.identity_names)} names."
            )
        set_(self, "identity", ident)
        if self.camera is not None:
            set_(self, "camera", _frozen(self.camera, np.int64, "camera", n))
        if self.split is not None:
            set_(self, "split", _frozen(self.split, str, "split", n))
        extra = {str(k): _frozen(v, str, f"extra[{k!r}]", n) for k, v in dict(self.extra).items()}
        set_(self, "extra", types.MappingProxyType(extra))
        set_(self, "skipped", tuple(SkippedImage(*s) for s in self.skipped))
        set_(self, "notes", tuple(str(s) for s in self.notes))

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return (
            f"ImageDataset({len(self)} images, {self.n_identities} identities, "
            f"root={str(self.root)!r})"
        )

    @property
    def n_identities(self) -> int:
        """Number of identity names (codes 0..n_identities-1)."""
        return len(self.identity_names)

    @property
    def files(self) -> list:
        """Full paths of the images (``root / path``)."""
        return [self.root / p for p in self.paths]

    def subset(self, index, *, relabel: bool = False) -> ImageDataset:
        """The images selected by ``index`` (integer positions or a boolean mask).

        Identity codes and names are kept, so subsets (query and gallery, say)
        stay comparable; with ``relabel=True`` the codes are renumbered
        0..m-1 over the identities present, in the same order.
        """
        index = np.asarray(index)
        if index.size == 0:
            index = index.astype(np.int64)
        idx = np.arange(len(self))[index]
        if idx.ndim != 1:
            raise ValueError(f"subset: 'index' must select along one axis; got shape {idx.shape}.")
        ident = self.identity[idx]
        names = self.identity_names
        if relabel:
            present = np.unique(ident[ident >= 0])
            codes = np.full(len(names) + 1, -1, dtype=np.int64)  # last entry: -1 stays -1
            codes[present] = np.arange(present.size)
            ident = codes[ident]
            names = tuple(names[k] for k in present)
        return ImageDataset(
            paths=tuple(self.paths[i] for i in idx),
            identity=ident,
            identity_names=names,
            root=self.root,
            camera=None if self.camera is None else self.camera[idx],
            split=None if self.split is None else self.split[idx],
            extra={k: v[idx] for k, v in self.extra.items()},
            skipped=self.skipped,
            notes=self.notes,
        )

    def select_split(self, *names: str, relabel: bool = False) -> ImageDataset:
        """The images whose split is one of ``names`` (see :meth:`subset`)."""
        if self.split is None:
            raise ValueError("select_split: this dataset has no split column.")
        present = sorted(set(self.split.tolist()))
        unknown = sorted(set(names) - set(present))
        if unknown or not names:
            raise ValueError(
                f"select_split: give split names that occur; got {list(names)!r}, the splits "
                f"are {present!r}."
            )
        return self.subset(np.isin(self.split, names), relabel=relabel)

    def summary(self) -> str:
        """A few lines on what was loaded, skipped and noted."""
        n_unknown = int(np.count_nonzero(self.identity < 0))
        lines = [
            f"{len(self)} images of {self.n_identities} identities"
            + (f" ({n_unknown} of unknown identity)" if n_unknown else "")
            + f" under {self.root}"
        ]
        if self.split is not None:
            values, counts = np.unique(self.split, return_counts=True)
            lines.append(
                "splits: " + ", ".join(f"{v or '(none)'}: {c}" for v, c in zip(values, counts))
            )
        if self.camera is not None:
            lines.append(f"cameras: {len(np.unique(self.camera))}")
        lines.extend(self.notes)
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} images:")
            lines.extend(f"  {s.path}: {s.reason}" for s in self.skipped)
        return "\n".join(lines)


def _frozen(values, dtype, name, n):
    a = np.array(values, dtype=dtype)  # always a copy, never the caller's array
    if a.ndim != 1 or len(a) != n:
        raise ValueError(
            f"ImageDataset: {name!r} must be 1-D with one entry per path ({n}); got shape "
            f"{a.shape}."
        )
    a.flags.writeable = False
    return a


# ---- shared plumbing ---------------------------------------------------------


def _check_options(owner, on_error, verify_images, check_files):
    if not isinstance(on_error, str) or on_error not in _ON_ERROR:
        raise ValueError(
            f"The 'on_error' parameter of {owner} must be one of 'raise', 'skip'; got {on_error!r}."
        )
    for name, value in (("verify_images", verify_images), ("check_files", check_files)):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"The {name!r} parameter of {owner} must be a bool; got {value!r}.")
    if verify_images and not check_files:
        raise ValueError(f"{owner}: verify_images=True needs check_files=True.")


def _require_pillow(what: str):
    """Imports PIL.Image, or raises an ImportError that names the extra to install."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError(
            f"{what} needs Pillow, which is not installed; install it with "
            f"{install_hint('images')} (or pip install pillow)."
        ) from exc
    return Image


def _image_problem(path: Path, Image) -> str | None:
    """Why Pillow cannot decode the file, or None if it can."""
    try:
        with Image.open(path) as im:
            im.load()  # decodes the pixels: truncated files fail here, not in open()
    except Exception as exc:  # noqa: BLE001 - any decoder failure means "unreadable"
        return f"unreadable image ({type(exc).__name__}: {exc})"
    return None


class _Row(NamedTuple):
    where: str  # "line 7" or a folder name, for messages
    path: str
    identity: str | None  # None: unknown
    camera: int | None
    split: str | None
    extra: tuple


def _natural_names(names: Iterable[str]) -> list:
    names = sorted(set(names))
    if names and all(re.fullmatch(r"-?\d+", s) for s in names):
        return sorted(names, key=lambda s: (int(s), s))
    return names


def _assemble(
    owner,
    source,
    root,
    rows,
    extra_names,
    *,
    on_error,
    verify_images,
    check_files,
    notes=(),
    skipped=(),
):
    """Checks files, applies on_error and builds the dataset from parsed rows."""
    seen = {}
    for r in rows:
        key = os.path.normcase(os.path.normpath(r.path))
        if key in seen:
            raise ValueError(
                f"{owner}: {source}: {r.where} lists {r.path!r}, already listed at "
                f"{seen[key]}; each image must appear once (with one identity)."
            )
        seen[key] = r.where
    Image = _require_pillow(f"{owner}(verify_images=True)") if verify_images else None
    problems = []
    keep = []
    for r in rows:
        reason = None
        if check_files:
            full = root / r.path
            if not full.is_file():
                reason = f"file not found ({full})"
            elif Image is not None:
                reason = _image_problem(full, Image)
        if reason is None:
            keep.append(r)
        else:
            problems.append((r, reason))
    if problems and on_error == "raise":
        listed = "\n".join(f"  {r.where}: {r.path}: {why}" for r, why in problems[:_MAX_LISTED])
        more = len(problems) - _MAX_LISTED
        msg = (
            f"{owner}: {source}: {len(problems)} of {len(rows)} images cannot be used (pass "
            f"on_error='skip' to leave them out):\n{listed}"
            + (f"\n  ... and {more} more" if more > 0 else "")
        )
        if any(why.startswith("file not found") for _, why in problems):
            raise FileNotFoundError(msg)
        raise ValueError(msg)
    skipped = [*skipped, *(SkippedImage(r.path, why) for r, why in problems)]
    if not keep:
        raise ValueError(
            f"{owner}: {source}: no usable image"
            + (
                f" ({len(skipped)} skipped, first: {skipped[0].path}: {skipped[0].reason})"
                if skipped
                else ""
            )
            + "."
        )
    names = _natural_names(r.identity for r in keep if r.identity is not None)
    code = {s: k for k, s in enumerate(names)}
    identity = np.array([-1 if r.identity is None else code[r.identity] for r in keep], np.int64)
    has_camera = any(r.camera is not None for r in keep)
    has_split = any(r.split is not None for r in keep)
    return ImageDataset(
        paths=tuple(r.path for r in keep),
        identity=identity,
        identity_names=tuple(names),
        root=root,
        camera=np.array([r.camera for r in keep], np.int64) if has_camera else None,
        split=np.array([r.split for r in keep], dtype=str) if has_split else None,
        extra={
            k: np.array([r.extra[j] for r in keep], dtype=str) for j, k in enumerate(extra_names)
        },
        skipped=tuple(skipped),
        notes=tuple(notes),
    )


def _read_table(csv_path, owner):
    """(csv path, header, [(line number, cells)]) of a CSV file with a header row.

    Raises naming the file (and line) if it is not UTF-8, or if a row has more
    non-empty cells than the header has columns: an unquoted comma inside a
    path or a name shifts the cells after it, which would give a wrong label.
    """
    path = Path(csv_path)
    if not path.is_file():
        raise FileNotFoundError(f"{owner}: CSV file not found: {path}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValueError(
            f"{owner}: {path}, line {line}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
            "save the CSV as UTF-8."
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise ValueError(f"{owner}: {path} is empty (no header row).") from None
    except csv.Error as exc:
        raise ValueError(f"{owner}: {path}, line {reader.line_num}: {exc}.") from None
    rows = []
    try:
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            if len(cells) > len(header) and any(c.strip() for c in cells[len(header) :]):
                raise ValueError(
                    f"{owner}: {path}, line {reader.line_num}: {len(cells)} cells, but the header "
                    f"has {len(header)} columns; quote a path or name that holds a comma "
                    '(e.g. "a,b.jpg").'
                )
            # a CSV aas wrote (X.rows.csv) has formula-like cells quoted: read them back
            rows.append((reader.line_num, [read_cell(c) for c in cells]))
    except csv.Error as exc:
        raise ValueError(f"{owner}: {path}, line {reader.line_num}: {exc}.") from None
    return path, [h.strip() for h in header], rows


def _columns(header, required, optional, path, owner):
    """Column positions, matched without regard to case; raises naming missing ones."""
    lower = {}
    for i, h in enumerate(header):
        if h.lower() in lower and h.lower() in (*required, *optional):
            raise ValueError(
                f"{owner}: {path} has the column {h.lower()!r} twice (columns "
                f"{lower[h.lower()] + 1} and {i + 1}); which one to read is ambiguous."
            )
        lower.setdefault(h.lower(), i)
    missing = [c for c in required if c not in lower]
    if missing:
        raise ValueError(
            f"{owner}: {path} lacks the column(s) {', '.join(map(repr, missing))}; its header "
            f"is {header!r} (needed: {', '.join(required)}; optional: {', '.join(optional)})."
        )
    return {c: lower.get(c) for c in (*required, *optional)}


def _cell(cells, i):
    return cells[i].strip() if i is not None and i < len(cells) else ""


def _root(root, csv_path):
    return Path(csv_path).resolve().parent if root is None else Path(root)


def _camera(text, where, path, owner):
    if not re.fullmatch(r"[+-]?\d+", text):
        raise ValueError(f"{owner}: {path}, {where}: 'camera' must be an integer id; got {text!r}.")
    return int(text)


# ---- loaders -------------------------------------------------------------------


def image_folder_csv(
    csv_path, root=None, *, on_error="raise", verify_images=False, check_files=True
) -> ImageDataset:
    """Images listed in a CSV file with columns ``path,identity[,camera][,split]``.

    Parameters
    ----------
    csv_path : str or Path
        The CSV file (UTF-8, a header row; column names are matched without
        regard to case, other columns are ignored).
    root : str or Path, optional
        Folder the paths are relative to; default: the CSV file's folder.
        Absolute paths in the CSV are used as they are.
    on_error : {"raise", "skip"}
        What to do with a missing or (with ``verify_images``) unreadable
        image: raise listing every such image, or leave it out and report it
        in ``skipped``.
    verify_images : bool
        Decode every image with Pillow (slow on large sets; needs the
        ``images`` extra).
    check_files : bool
        Check that every file exists (default); turn off only for paths
        resolved later.

    Identities may be any text: they are mapped to codes 0..m-1 and the text
    is kept in ``identity_names``. An identity of ``-1`` means unknown; an
    empty identity cell is an error (write -1 for unknown). Camera ids must
    be integers; empty split cells become "".

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = Path(tmp, "labels.csv").write_text("path,identity\\na.png,zebra\\nb.png,-1\\n")
    ...     ds = image_folder_csv(Path(tmp, "labels.csv"), check_files=False)
    >>> ds.identity.tolist(), ds.identity_names
    ([0, -1], ('zebra',))
    """
    owner = "image_folder_csv"
    _check_options(owner, on_error, verify_images, check_files)
    path, header, table = _read_table(csv_path, owner)
    col = _columns(header, ("path", "identity"), ("camera", "split"), path, owner)
    rows = []
    for line, cells in table:
        where = f"line {line}"
        p = _cell(cells, col["path"])
        ident = _cell(cells, col["identity"])
        if not p:
            raise ValueError(f"{owner}: {path}, {where}: empty 'path'.")
        if not ident:
            raise ValueError(
                f"{owner}: {path}, {where}: empty 'identity' for {p!r}; write -1 for an image "
                "of unknown identity."
            )
        camera = None
        if col["camera"] is not None:
            camera = _camera(_cell(cells, col["camera"]), where, path, owner)
        split = _cell(cells, col["split"]) if col["split"] is not None else None
        rows.append(_Row(where, p, None if ident == "-1" else ident, camera, split, ()))
    if not rows:
        raise ValueError(f"{owner}: {path} has a header but no rows.")
    return _assemble(
        owner,
        path,
        _root(root, path),
        rows,
        (),
        on_error=on_error,
        verify_images=verify_images,
        check_files=check_files,
    )


# Columns of the wildlife-datasets format kept in ImageDataset.extra.
_WILDLIFE_EXTRA = ("image_id", "species", "dataset", "date", "orientation")


def wildlife_metadata(
    csv_path,
    root=None,
    *,
    species=None,
    dataset=None,
    on_error="raise",
    verify_images=False,
    check_files=True,
) -> ImageDataset:
    """A WildlifeReID-10k / wildlife-datasets metadata CSV.

    The format, as found in the wildlife-datasets project
    (github.com/WildlifeDatasets/wildlife-datasets): ``docs/dataframe.md``
    requires ``image_id``, ``identity`` and ``path`` (relative to the dataset
    root) and lists optional columns such as ``species``, ``date`` and
    ``orientation``; unknown individuals carry the identity ``"unknown"``
    (``WildlifeDataset.unknown_name`` in
    ``wildlife_datasets/datasets/datasets.py``). WildlifeReID-10k's
    ``metadata.csv`` (built by
    ``baselines/WildlifeReID-10k/prepare_wildlife_reid_10k.ipynb``, read by
    ``wildlife_datasets/datasets/wildlife_reid_10k.py``, which adds
    ``image_id`` as the row number) has ``path`` ("images/<dataset>/..."),
    ``identity`` prefixed with the source dataset ("<dataset>_<id>"),
    ``dataset``, ``species``, ``split`` ("train"/"test"), ``date``,
    ``orientation`` and ``cluster_id``.

    Required here: ``path`` and ``identity``. Kept: ``split`` and, in
    ``extra``, whichever of ``image_id``, ``species``, ``dataset``, ``date``,
    ``orientation`` are present. Unknown identity (-1): an empty cell,
    "nan", "none" or "unknown" (any case), and "<dataset>_unknown" /
    "<dataset>_nan" when a ``dataset`` column names the row's dataset (the
    WildlifeReID-10k prefix applied to a missing or unknown identity).

    Parameters
    ----------
    csv_path : str or Path
        The metadata CSV.
    root : str or Path, optional
        Folder the paths are relative to; default: the CSV file's folder.
    species, dataset : str or iterable of str, optional
        Keep only rows of these species / source datasets (matched without
        regard to case or surrounding spaces). Naming a value that no row
        has is an error listing the values present.
    on_error, verify_images, check_files
        As :func:`image_folder_csv`.

    Examples
    --------
    >>> import tempfile
    >>> text = ("path,identity,species,dataset,split\\n"
    ...         "images/A/1.jpg,A_7,lynx,A,train\\n"
    ...         "images/A/2.jpg,A_unknown,lynx,A,test\\n"
    ...         "images/B/1.jpg,B_7,seal,B,train\\n")
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = Path(tmp, "metadata.csv").write_text(text)
    ...     ds = wildlife_metadata(Path(tmp, "metadata.csv"), species="Lynx", check_files=False)
    >>> ds.identity.tolist(), ds.identity_names, ds.split.tolist()
    ([0, -1], ('A_7',), ['train', 'test'])
    """
    owner = "wildlife_metadata"
    _check_options(owner, on_error, verify_images, check_files)
    wanted = {
        "species": _filter_values(species, "species", owner),
        "dataset": _filter_values(dataset, "dataset", owner),
    }
    path, header, table = _read_table(csv_path, owner)
    col = _columns(header, ("path", "identity"), ("split", *_WILDLIFE_EXTRA), path, owner)
    for name, values in wanted.items():
        if values is not None and col[name] is None:
            raise ValueError(
                f"{owner}: a {name!r} filter was given but {path} has no {name!r} column."
            )
    extra_names = tuple(c for c in _WILDLIFE_EXTRA if col[c] is not None)
    present = {"species": set(), "dataset": set()}
    rows = []
    for line, cells in table:
        where = f"line {line}"
        selected = True
        for name, values in wanted.items():
            if values is not None:
                v = _cell(cells, col[name])
                present[name].add(v)
                selected &= v.casefold() in values
        if not selected:
            continue
        p = _cell(cells, col["path"])
        if not p:
            raise ValueError(f"{owner}: {path}, {where}: empty 'path'.")
        ident = _cell(cells, col["identity"])
        ds_name = _cell(cells, col["dataset"]).casefold()
        low = ident.casefold()
        unknown = low in ("", "nan", "none", "unknown") or (
            ds_name and low in (f"{ds_name}_unknown", f"{ds_name}_nan")
        )
        split = _cell(cells, col["split"]) if col["split"] is not None else None
        extra = tuple(_cell(cells, col[c]) for c in extra_names)
        rows.append(_Row(where, p, None if unknown else ident, None, split, extra))
    if not table:
        raise ValueError(f"{owner}: {path} has a header but no rows.")
    for name, values in wanted.items():
        found = {v.casefold() for v in present[name]}
        if values is not None and not values <= found:
            shown = sorted(present[name])[:_MAX_LISTED]
            raise ValueError(
                f"{owner}: no row of {path} has {name} {sorted(values - found)!r}; the values "
                f"present are {shown!r}"
                + (" ..." if len(present[name]) > _MAX_LISTED else "")
                + "."
            )
    return _assemble(
        owner,
        path,
        _root(root, path),
        rows,
        extra_names,
        on_error=on_error,
        verify_images=verify_images,
        check_files=check_files,
    )


def _filter_values(values, name, owner):
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    try:
        out = {str(v).strip().casefold() for v in values}
    except TypeError:
        raise TypeError(
            f"The {name!r} parameter of {owner} must be a string or an iterable of strings; "
            f"got {values!r}."
        ) from None
    if not out:
        raise ValueError(f"The {name!r} parameter of {owner} must not be empty.")
    return out


_MARKET_NAME = re.compile(r"^(-1|\d+)_c(\d+)")
# Market-1501 folders and the split name each one gets.
_MARKET_FOLDERS = (
    ("bounding_box_train", "train"),
    ("bounding_box_test", "gallery"),
    ("query", "query"),
)


def parse_market1501_name(name: str) -> tuple[int, int]:
    """(identity, camera) from a Market-1501 (or DukeMTMC-reID) file name.

    ``PPPP_cCsS_FFFFFF_BB.jpg``: person PPPP (-1 = junk, 0000 = distractor),
    camera C, sequence S, frame F, box B.

    Examples
    --------
    >>> parse_market1501_name("0002_c1s1_000451_03.jpg")
    (2, 1)
    >>> parse_market1501_name("-1_c3s2_012345_01.jpg")
    (-1, 3)
    """
    m = _MARKET_NAME.match(os.path.basename(str(name)))
    if m is None:
        raise ValueError(
            f"parse_market1501_name: {name!r} is not a Market-1501 image name "
            "(expected e.g. 0002_c1s1_000451_03.jpg)."
        )
    return int(m.group(1)), int(m.group(2))


def market1501(root, *, on_error="raise", verify_images=False) -> ImageDataset:
    """The Market-1501 person Re-ID benchmark from its folder layout.

    ``root`` is the folder holding ``bounding_box_train``, ``bounding_box_test``
    and ``query`` (or a folder holding ``Market-1501-v15.09.15`` with them).
    Splits: "train" (bounding_box_train), "gallery" (bounding_box_test) and
    "query". Identity names are the 4-digit person ids of the file names
    (``parse_market1501_name``), one code space over all three folders, so
    query and gallery codes agree; cameras are the file names' camera numbers
    (1-6).

    As torchreid and fast-reid do: **junk** images (person id -1) are dropped
    (counted in ``notes``); **distractors** (person id 0000, gallery only)
    are kept as their own identity "0000", which no query shares, so they
    only ever count as false matches. The retrieval metrics' camera rule
    (``retrieval.evaluate(query_cameras=..., gallery_cameras=...)``) then
    gives the standard protocol. Only ``*.jpg`` files are read (the archive
    holds a ``Thumbs.db`` or two); a ``.jpg`` whose name does not parse is an
    image problem under ``on_error``.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     for f in ("bounding_box_train/0002_c1s1_000451_03.jpg",
    ...               "bounding_box_test/0000_c2s1_000001_01.jpg",
    ...               "bounding_box_test/-1_c2s1_000002_01.jpg",
    ...               "bounding_box_test/0003_c2s1_000003_01.jpg",
    ...               "query/0003_c1s1_000004_01.jpg"):
    ...         Path(tmp, f).parent.mkdir(exist_ok=True)
    ...         _ = Path(tmp, f).write_bytes(b"")
    ...     ds = market1501(tmp)
    >>> ds.identity_names, ds.identity.tolist(), ds.camera.tolist()
    (('0000', '0002', '0003'), [1, 0, 2, 2], [1, 2, 2, 1])
    >>> ds.split.tolist()
    ['train', 'gallery', 'gallery', 'query']
    """
    owner = "market1501"
    _check_options(owner, on_error, verify_images, True)
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"{owner}: folder not found: {base}")
    folders = [f for f, _ in _MARKET_FOLDERS]
    for candidate in (base, base / "Market-1501-v15.09.15"):
        if all((candidate / f).is_dir() for f in folders):
            base = candidate
            break
    else:
        missing = [f for f in folders if not (base / f).is_dir()]
        raise FileNotFoundError(
            f"{owner}: {base} lacks the Market-1501 folder(s) {', '.join(missing)} (expected "
            f"{', '.join(folders)} in it or in its Market-1501-v15.09.15 subfolder)."
        )
    rows, bad, notes = [], [], []
    for folder, split in _MARKET_FOLDERS:
        names = sorted(n for n in os.listdir(base / folder) if n.lower().endswith(".jpg"))
        junk = 0
        for name in names:
            rel = f"{folder}/{name}"
            try:
                pid, cam = parse_market1501_name(name)
            except ValueError:
                bad.append(SkippedImage(rel, "name does not parse as PPPP_cC..."))
                continue
            if pid == -1:
                junk += 1
                continue
            rows.append(_Row(folder, rel, f"{pid:04d}", cam, split, ()))
        if junk:
            notes.append(f"dropped {junk} junk images (person id -1) from {folder}")
    if bad and on_error == "raise":
        listed = "\n".join(f"  {s.path}: {s.reason}" for s in bad[:_MAX_LISTED])
        raise ValueError(
            f"{owner}: {len(bad)} .jpg files in {base} have names that do not parse (pass "
            f"on_error='skip' to leave them out):\n{listed}"
        )
    return _assemble(
        owner,
        base,
        base,
        rows,
        (),
        on_error=on_error,
        verify_images=verify_images,
        check_files=verify_images,  # listed from the folders: they exist
        notes=notes,
        skipped=bad,
    )
