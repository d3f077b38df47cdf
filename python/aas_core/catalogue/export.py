"""Exports of a catalogue that other tools read.

- :func:`write_csv`: ``image_path,identity,identity_name``, one row per image;
- :func:`write_folders`: one folder per identity holding its images (symbolic
  links, or copies);
- :func:`write_camtrap_media`: a Camtrap DP media table with an
  ``individualID`` column added;
- :func:`write_contact_sheet`: one static HTML page, every identity with its
  images (opens offline, no scripts).

Every file is written whole or not at all (a temporary file, then a rename),
and nothing that exists is ever overwritten except the output files named.
"""

from __future__ import annotations

import csv
import html
import io
import os
import re
import shutil
from pathlib import Path

from .._files import write_atomic

__all__ = ["write_camtrap_media", "write_contact_sheet", "write_csv", "write_folders"]


def _write_text(path, text) -> None:
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


def _csv_text(rows) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


CSV_HEADER = ["image_path", "identity", "identity_name", "verified"]


def write_csv(catalogue, path) -> Path:
    """``image_path,identity,identity_name,verified`` for every image.

    identity is the stable code (an unsorted photo is an identity of one);
    identity_name is empty where the identity has no name (or its name is in
    conflict, see :mod:`.identities`); verified is ``true`` where "same"
    answers join the photo to its identity's reference photo, ``false``
    where only the clustering groups it there.
    """
    path = Path(path)
    rows = [[p, code, name, "true" if v else "false"] for p, code, name, v in catalogue.rows()]
    _write_text(path, _csv_text([CSV_HEADER, *rows]))
    return path


_UNSAFE = re.compile(r"[^\w.\- ]+", re.UNICODE)


def _folder_name(ident) -> str:
    """The identity's folder: its code, plus its name when it has one (file-system safe)."""
    if not ident.named:
        return ident.code
    safe = _UNSAFE.sub("_", ident.name).strip(" .") or "_"
    return f"{ident.code} {safe}"[:120]


def write_folders(catalogue, images_dir, out_dir, *, copy=False) -> Path:
    """One folder per identity under ``out_dir`` with its images.

    ``out_dir`` must not exist yet (it is built beside it and renamed into
    place, so it appears whole). Each image becomes a symbolic link to the
    original (``copy=True``: a copy); its file name is its path in the image
    folder with ``/`` written ``__``, so two images called ``IMG_0001.JPG``
    from two cameras stay apart. Images missing from ``images_dir`` are
    listed in ``missing.txt`` instead.
    """
    images_dir, out_dir = Path(images_dir).resolve(), Path(out_dir)
    if out_dir.exists() or out_dir.is_symlink():
        raise FileExistsError(f"write_folders: {str(out_dir)!r} already exists (never overwritten)")
    if not images_dir.is_dir():
        raise ValueError(f"write_folders: the image folder {str(images_dir)!r} does not exist")
    tmp = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=False)
    missing = []
    try:
        for ident in catalogue.identities:
            folder = tmp / _folder_name(ident)
            folder.mkdir()
            for k in ident.images.tolist():
                rel = catalogue.image_paths[k]
                src = catalogue.image_file(k, images_dir)
                if not src.is_file():
                    missing.append(f"{rel}\t{ident.code}")
                    continue
                dst = folder / rel.replace("/", "__")
                if copy:
                    shutil.copy2(src, dst)
                else:
                    os.symlink(src, dst)
        if missing:
            (tmp / "missing.txt").write_text("\n".join(missing) + "\n", encoding="utf-8")
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def write_camtrap_media(catalogue, media_csv, path) -> dict:
    """Copies a Camtrap DP media table, adding ``individualID`` (the identity code).

    Rows are matched to the catalogue's images by ``filePath`` (as the
    store lists it, ``\\`` read as ``/``), else by file name when that is
    unique in the catalogue; unmatched rows get an empty ``individualID``.
    Returns counts: {"rows", "matched"}.
    """
    media_csv = Path(media_csv)
    try:
        text = media_csv.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ValueError(f"the media table {str(media_csv)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"the media table {str(media_csv)!r} cannot be read ({exc})") from None
    reader = csv.DictReader(io.StringIO(text))
    fields = reader.fieldnames or []
    if "filePath" not in fields and "fileName" not in fields:
        raise ValueError(
            f"the media table {str(media_csv)!r} has no filePath or fileName column "
            f"(its columns: {', '.join(fields) or 'none'})"
        )
    code_of_path = {p: row[1] for p, row in zip(catalogue.image_paths, catalogue.rows())}
    by_name = {}
    for p in catalogue.image_paths:
        by_name.setdefault(p.rsplit("/", 1)[-1], []).append(p)
    out_fields = fields + ([] if "individualID" in fields else ["individualID"])
    rows, matched = [], 0
    for row in reader:
        key = (row.get("filePath") or "").replace("\\", "/").lstrip("./")
        code = code_of_path.get(key)
        if code is None:
            name = (row.get("fileName") or key.rsplit("/", 1)[-1]).strip()
            hits = by_name.get(name, [])
            code = code_of_path[hits[0]] if len(hits) == 1 else None
        matched += code is not None
        row["individualID"] = code or row.get("individualID") or ""
        rows.append([row.get(f, "") for f in out_fields])
    _write_text(Path(path), _csv_text([out_fields, *rows]))
    return {"rows": len(rows), "matched": matched}


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
img {{ width: 160px; height: 120px; object-fit: cover; background: #eee; display: block; }}
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

    The images are linked by their path relative to the page, so keep the
    page and the image folder where they are (or give ``images_dir`` as the
    folder the page will see). No scripts, no network.
    """
    path = Path(path)
    page_dir = path.resolve().parent

    def figure(k, verified):
        rel = catalogue.image_paths[k]
        link = os.path.relpath(catalogue.image_file(k, images_dir).resolve(), page_dir)
        src = html.escape(Path(link).as_posix(), quote=True)
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
    page = _PAGE.format(
        title=html.escape(title), summary=html.escape(summary), sections="\n".join(parts)
    )
    _write_text(path, page)
    return path
