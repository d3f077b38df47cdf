"""Exports of a catalogue that other tools read.

- :func:`write_csv`: ``image_path,identity,identity_name,verified,photo_folder``, one
  row per image;
- :func:`write_folders`: one folder per identity holding its images (symbolic
  links, or copies);
- :func:`write_camtrap_media`: a Camtrap DP media table with an
  ``individualID`` column added;
- :func:`write_contact_sheet`: one static HTML page, every identity with its
  images (opens offline, no scripts).

Every file is written whole or not at all (a temporary file, then a rename),
and nothing that exists is ever overwritten except the output files named.
The folders and the page hold only the photos the annotation server would
show (:func:`photos_not_exported` lists the others and why), and every CSV
cell a spreadsheet would run as a formula is written as text
(:mod:`aas_core._csvcell`).
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import os
import posixpath
import re
import shutil
from collections import Counter
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from .._csvcell import read_cell, safe_rows
from .._files import write_atomic
from ..annotate.photos import photo_problems

__all__ = [
    "photos_not_exported",
    "write_camtrap_media",
    "write_contact_sheet",
    "write_csv",
    "write_folders",
]


def _write_text(path, text) -> None:
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def _write_rows(path, rows) -> None:
    """``rows`` to ``path`` as CSV, one at a time (a generator is never held whole)."""

    def write(f):
        text = io.TextIOWrapper(f, encoding="utf-8", newline="")
        try:
            csv.writer(text, lineterminator="\n").writerows(safe_rows(rows))
            text.flush()
        finally:
            text.detach()  # the binary file stays open for write_atomic to sync

    write_atomic(path, write)


CSV_HEADER = ["image_path", "identity", "identity_name", "verified", "photo_folder"]


def write_csv(catalogue, path, images_dir=None) -> Path:
    """``image_path,identity,identity_name,verified,photo_folder`` for every image.

    Every photo's file is ``photo_folder/image_path``, whichever season it came
    from: photo_folder is the absolute path of the folder it was added from
    (``images_dir`` for the run's own photos, default the folder the store
    records; a later season's folder for its photos) and image_path its path
    inside that folder (:meth:`Catalogue.locations`). Two seasons' cameras may
    name files alike: the two columns together name one photo.
    identity is the stable code (an unsorted photo is an identity of one);
    identity_name is empty where the identity has no name (or its name is in
    conflict, see :mod:`.identities`); verified is ``true`` where "same"
    answers join the photo to its identity's reference photo, ``false``
    where only the clustering groups it there. A path or name that a
    spreadsheet would read as a formula (``=``, ``+``, ``-``, ``@``...) is
    written with a ``'`` in front.
    """
    path = Path(path)
    rows = (
        [rel, code, name, "true" if v else "false", folder]
        for (_, code, name, v), (folder, rel) in zip(
            catalogue.rows(), catalogue.locations(images_dir)
        )
    )
    _write_rows(path, [CSV_HEADER, *rows])
    return path


def photos_not_exported(catalogue, images_dir) -> list:
    """[(index, listed path, why)] for the photos the exports leave out.

    These are the photos the annotation server would not show either, by its
    own rule (:func:`aas_core.annotate.photos.photo_problems`): missing, a
    symbolic link that loops or leads nowhere, unreadable, not a file, or not
    an image file type. The folders and the contact sheet skip them, so an
    export never holds (or copies) what the page refuses.
    """
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise ValueError(f"the image folder {str(images_dir)!r} does not exist or is not a folder")
    return photo_problems(catalogue._store, images_dir)


_UNSAFE = re.compile(r"[^\w.\- ]+", re.UNICODE)
# file systems allow 255 bytes per name (not characters); the rest is room to spare
_MAX_NAME_BYTES = 200
_MAX_SUFFIX_BYTES = 16


def _tag(text) -> str:
    return "~" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def _fit(stem, ext="", *, taken=None, key=None) -> str:
    """``stem + ext`` as one file name of at most _MAX_NAME_BYTES UTF-8 bytes, not in ``taken``.

    A name too long is cut on a character boundary and gets ``~`` and 8 hex
    digits of the SHA-256 of ``key`` (default: the full name): two long names
    that begin alike stay apart, and a name is the same in every export. A
    name already in ``taken`` (compared case-folded, for case-insensitive file
    systems) gets the tag as well.
    """
    key = stem + ext if key is None else key
    name = stem + ext
    if len(name.encode("utf-8")) <= _MAX_NAME_BYTES and (
        taken is None or name.casefold() not in taken
    ):
        return name
    tag = _tag(key)
    room = _MAX_NAME_BYTES - len(tag) - len(ext.encode("utf-8"))
    cut = stem.encode("utf-8")[:room].decode("utf-8", "ignore").rstrip(" .")
    return (cut or "_") + tag + ext


def _folder_name(ident) -> str:
    """The identity's folder: its code, plus its name when it has one (file-system safe)."""
    if not ident.named:
        return ident.code
    safe = _UNSAFE.sub("_", ident.name).strip(" .") or "_"
    return _fit(f"{ident.code} {safe}")


def _file_name(rel, taken) -> str:
    """A photo's file name in its identity's folder: its path with ``/`` written ``__``."""
    flat = rel.replace("/", "__")
    ext = PurePosixPath(flat).suffix
    if len(ext.encode("utf-8")) > _MAX_SUFFIX_BYTES:
        ext = ""
    return _fit(flat[: len(flat) - len(ext)], ext, taken=taken, key=rel)


def write_folders(catalogue, images_dir, out_dir, *, copy=False) -> Path:
    """One folder per identity under ``out_dir`` with its images.

    ``out_dir`` must not exist yet (it is built beside it and renamed into
    place, so it appears whole). Each image becomes a symbolic link to the
    original (``copy=True``: a copy); its file name is its path in the image
    folder with ``/`` written ``__``, so two images called ``IMG_0001.JPG``
    from two cameras stay apart. Folder and file names are at most 200 bytes
    (a longer one is cut and ends in ``~`` and 8 hex digits of the full
    name's hash). Photos the annotation server would not show
    (:func:`photos_not_exported`: missing, a link that loops or leads
    nowhere, ...) are neither linked nor copied: ``skipped.txt`` lists them
    with their identity and why.
    """
    images_dir, out_dir = Path(images_dir).resolve(), Path(out_dir)
    if out_dir.exists() or out_dir.is_symlink():
        raise FileExistsError(f"write_folders: {str(out_dir)!r} already exists (never overwritten)")
    if not images_dir.is_dir():
        raise ValueError(f"write_folders: the image folder {str(images_dir)!r} does not exist")
    skip = {k: why for k, _, why in photos_not_exported(catalogue, images_dir)}
    tmp = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=False)
    skipped = []
    try:
        for ident in catalogue.identities:
            folder = tmp / _folder_name(ident)
            folder.mkdir()
            taken = set()
            for k in ident.images.tolist():
                rel = catalogue.image_paths[k]
                if k in skip:
                    skipped.append(f"{rel}\t{ident.code}\t{skip[k]}")
                    continue
                name = _file_name(rel, taken)
                taken.add(name.casefold())
                src = catalogue.image_file(k, images_dir)
                if copy:
                    shutil.copy2(src, folder / name)
                else:
                    os.symlink(src, folder / name)
        if skipped:
            (tmp / "skipped.txt").write_text("\n".join(skipped) + "\n", encoding="utf-8")
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _media_key(cell):
    """A media row's filePath as a path under the photo folder, or None where it leads out
    of it (``..``, an absolute path, a URL)."""
    p = read_cell(cell).strip().replace("\\", "/")
    if p.startswith("/") or re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", p):  # /x, C:/x, https://x
        return None
    p = posixpath.normpath(p)
    return None if p == ".." or p.startswith("../") else p


def write_camtrap_media(catalogue, media_csv, path) -> dict:
    """Copies a Camtrap DP media table, adding ``individualID`` (the identity code).

    Rows are matched to the catalogue's images by their full ``filePath``
    relative to the image folder (``\\`` read as ``/``, ``./`` and ``a/../``
    taken out); a path that leads out of the folder (``..``, an absolute
    path, a URL) matches nothing, and nothing is matched by file name alone
    (two cameras name their photos alike). Unmatched rows keep their
    ``individualID`` (empty if they had none). The table is read and written
    row by row, never held whole. Cells a spreadsheet would run as a formula
    are written as text (see :mod:`aas_core._csvcell`; a table written here
    reads back the same).

    Returns counts: {"rows", "matched", "outside"} (rows whose path leads out
    of the folder). Raises ValueError naming the file (and line) for a table
    without a ``filePath`` column, with a column name twice, or with a row
    of more or fewer fields than the header.
    """
    media_csv, path = Path(media_csv), Path(path)
    where = f"the media table {str(media_csv)!r}"
    code_of_path = {p: code for p, code, _, _ in catalogue.rows()}
    counts = {"rows": 0, "matched": 0, "outside": 0}
    try:
        f = open(media_csv, newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise ValueError(f"{where} does not exist") from None
    except OSError as exc:
        raise ValueError(f"{where} cannot be read ({exc.strerror or exc})") from None
    with f:
        reader = csv.reader(f)
        line = 1  # where the row being read begins

        def rows():
            nonlocal line
            header = next(reader, None)
            if header is None:
                raise ValueError(f"{where} is empty (no header row)")
            twice = sorted(k for k, n in Counter(header).items() if n > 1)
            if twice:
                raise ValueError(
                    f"{where} line 1: the column{'s' if len(twice) > 1 else ''} "
                    f"{', '.join(map(repr, twice))} appear{'' if len(twice) > 1 else 's'} twice; "
                    "one of them would be lost"
                )
            if "filePath" not in header:
                raise ValueError(
                    f"{where} has no filePath column, which rows are matched by "
                    f"(its columns: {', '.join(header) or 'none'})"
                )
            col = header.index("filePath")
            out = header + ([] if "individualID" in header else ["individualID"])
            ident = out.index("individualID")
            yield out
            line = reader.line_num + 1
            for cells in reader:
                if cells:  # a blank line is no row
                    if len(cells) != len(header):
                        raise ValueError(
                            f"{where} line {line}: {len(cells)} field"
                            f"{'s' if len(cells) != 1 else ''}, but its header has "
                            f"{len(header)} columns; quote a value that holds a comma"
                        )
                    counts["rows"] += 1
                    key = _media_key(cells[col])
                    counts["outside"] += key is None
                    code = code_of_path.get(key)
                    counts["matched"] += code is not None
                    cells = [read_cell(c) for c in cells] + [""] * (len(out) - len(cells))
                    if code is not None:
                        cells[ident] = code
                    yield cells
                line = reader.line_num + 1

        try:
            _write_rows(path, rows())
        except UnicodeDecodeError:
            raise ValueError(f"{where} line {line}: not UTF-8 text; save it as UTF-8") from None
        except csv.Error as exc:
            raise ValueError(f"{where} line {line}: {exc}") from None
    return counts


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 1rem 2rem; color: #222; }}
section {{ border-top: 1px solid #ccc; padding: .5rem 0 1rem; }}
h2 {{ font-size: 1rem; margin: .3rem 0; }} h2 small {{ color: #666; font-weight: normal; }}
.sheet {{ display: flex; flex-wrap: wrap; gap: 6px; }}
figure {{ margin: 0; width: 160px; }}
img, .blank {{ width: 160px; height: 120px; object-fit: cover; background: #eee; display: block; }}
figcaption {{ font-size: 11px; color: #555; overflow-wrap: anywhere; }}
.checked {{ color: #1a7f37; }}
.verified img {{ outline: 3px solid #1a7f37; outline-offset: -3px; }}
.status {{ color: #666; font-size: 12px; }}
</style></head><body>
<h1>{title}</h1>
<p>{summary}</p>
{sections}
</body></html>
"""


def write_contact_sheet(catalogue, images_dir, path, *, title="Catalogue of individuals") -> Path:
    """One static HTML page: each identity (name, code, images) with its photos.

    The images are linked by their path relative to the page (URL-encoded:
    ``#``, ``?``, ``%`` and spaces in file names are kept), so keep the page
    and the image folder where they are. A photo the annotation server would not show
    (:func:`photos_not_exported`) appears with why, without a link. No
    scripts, no network.
    """
    path = Path(path)
    page_dir = path.resolve().parent
    root = Path(images_dir).resolve()
    skip = {k: why for k, _, why in photos_not_exported(catalogue, root)}

    def figure(k, verified):
        rel = catalogue.image_paths[k]
        if k in skip:
            return (
                '<figure class="skipped"><div class="blank"></div>'
                f"<figcaption>{html.escape(rel)}: not shown ({html.escape(skip[k])})"
                "</figcaption></figure>"
            )
        # the listed file, not where a link leads: the page shows what the folder holds
        link = os.path.relpath(catalogue.image_file(k, root), page_dir)
        src = html.escape(quote(Path(link).as_posix(), safe="/"), quote=True)
        cls = ' class="verified"' if verified else ""
        return (
            f'<figure{cls}><a href="{src}"><img src="{src}" loading="lazy" alt=""></a>'
            f"<figcaption>{html.escape(rel)}</figcaption></figure>"
        )

    parts, singles = [], []
    for ident in sorted(catalogue.identities, key=lambda i: (-len(i.images), i.number)):
        if len(ident.images) < 2:
            singles.append(ident)
            continue
        figs = [figure(k, v) for k, v in zip(ident.images.tolist(), ident.verified.tolist())]
        head = html.escape(ident.name)
        if ident.named:
            head += f" <small>{html.escape(ident.code)}</small>"
        mark = ' <span class="checked">✓ checked</span>' if ident.checked else ""
        status = (
            f"{ident.status}: {ident.n_verified} of {len(ident.images)} photos joined by answers"
        )
        parts.append(
            f'<section id="{html.escape(ident.code)}"><h2>{head} '
            f"<small>{len(ident.images)} images</small>{mark}</h2>"
            f'<p class="status">{html.escape(status)}</p>'
            f'<div class="sheet">{"".join(figs)}</div></section>'
        )
    if singles:
        figs = [
            figure(i.images[0], False).replace(
                "<figcaption>", f"<figcaption>{html.escape(i.name)} · ", 1
            )
            for i in singles
        ]
        parts.append(
            f'<section id="unsorted"><h2>Unsorted <small>{len(singles)} photos, each an '
            f'identity of its own so far</small></h2><div class="sheet">{"".join(figs)}'
            "</div></section>"
        )
    n_img = len(catalogue.image_paths)
    summary = (
        f"{n_img} images, {len(catalogue.identities) - len(singles)} identities of two or more "
        f"photos, {len(singles)} unsorted; {int(catalogue.verified.sum())} photos joined to "
        "their identity by answers (outlined), the rest grouped by the clustering only"
    )
    if skip:
        summary += f"; {len(skip)} photos not shown (missing, unreadable or not an image)"
    page = _PAGE.format(
        title=html.escape(title), summary=html.escape(summary), sections="\n".join(parts)
    )
    _write_text(path, page)
    return path
