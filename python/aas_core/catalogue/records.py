"""The catalogue's rows in an annotation store: identity numbers, anchors, names, checks.

The store owns the file and its transactions; this module only reads and
appends the catalogue's own tables through them (the store never imports the
catalogue). Every table is append-only: an identity's anchors, name and
checked mark are its latest rows, so every earlier state stays in the file.
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np

from ..annotate._answers import _check_annotator
from ..annotate._base import _now

__all__ = ["CatalogueRecords", "check_name", "load_records"]

MAX_NAME = 100
# Anchors recorded per identity: enough for it to claim its cluster again, few enough that
# an edit of a huge identity rewrites O(1) rows, not every photo's (see anchor_sample).
MAX_ANCHORS = 256
# what reads as an identity code: the catalogue page's merge box takes letters, a hyphen and
# digits ("NY-0007", "ab-7") or digits alone for an identity's number; "ny 7" looks like one
_CODE_LIKE = re.compile(r"(?:[a-z]+-|ny[-\s]*)?[0-9]+", re.IGNORECASE)


def _as_read(name) -> str:
    """``name`` as a person reads it: full-width letters and digits as plain ones, every
    dash or minus sign as ``-``, so "ＮＹ–０００７" is seen to be a code."""
    folded = unicodedata.normalize("NFKC", name)
    return "".join(
        "-" if unicodedata.category(ch) == "Pd" or ch == "\u2212" else ch for ch in folded
    )


class CatalogueRecords:
    """What the store says about identities (a snapshot; see :func:`load_records`).

    anchors : {number: set of image rows}, each identity's latest anchor set
    names : {number: str}, latest names ('' = none)
    name_photos : {number: set of image rows}, the photos the latest name was given to
        (for a name given before names belonged to photos: the identity's anchors)
    checked : {number: bool}
    check_photos : {number: set of image rows}, the photos of the latest check
    next_number : int, the number the next new identity gets
    """

    def __init__(self, anchors, names, name_photos, checked, check_photos, next_number):
        self.anchors, self.names, self.name_photos = anchors, names, name_photos
        self.checked, self.check_photos = checked, check_photos
        self.next_number = next_number


def _latest_with_photos(store, table, key, photos_table, photo_key, anchors):
    """{number: value} and {number: photos} of each identity's latest row of ``table``."""
    rows = store._read(
        f"SELECT id, identity_id, {key} FROM {table} WHERE id IN "
        f"(SELECT MAX(id) FROM {table} GROUP BY identity_id)"
    )
    values = {int(k): v for _, k, v in rows}
    number_of = {int(row_id): int(k) for row_id, k, _ in rows}
    photos = {k: set() for k in values}
    given = store._read(
        f"SELECT {photo_key}, image FROM {photos_table} WHERE {photo_key} IN "
        f"(SELECT MAX(id) FROM {table} GROUP BY identity_id)"
    )
    for row_id, image in given:
        photos[number_of[int(row_id)]].add(int(image))
    missing = [k for k, p in photos.items() if not p]
    if missing:  # recorded before names and checks belonged to photos: the identity's anchors
        for k, p in _full_anchors(store, missing, anchors).items():
            photos[k].update(p)
    return values, photos


def _full_anchors(store, numbers, latest) -> dict:
    """Each identity's latest anchor set that held all its photos: the latest one larger
    than MAX_ANCHORS (written before anchors were sampled) if any, else the latest."""
    sets = {}
    marks = ", ".join("?" * len(numbers))
    for k, batch, image in store._read(
        f"SELECT identity_id, set_at, image FROM anchors WHERE identity_id IN ({marks})",
        [int(k) for k in numbers],
    ):
        sets.setdefault(int(k), {}).setdefault(int(batch), set()).add(int(image))
    out = {}
    for k in numbers:
        big = [b for b, imgs in sets.get(k, {}).items() if len(imgs) > MAX_ANCHORS]
        out[k] = sets[k][max(big)] if big else set(latest.get(k, ()))
    return out


def anchor_sample(images) -> np.ndarray:
    """The anchors recorded for an identity of ``images`` (ascending int64 rows): all of
    them up to MAX_ANCHORS, else the MAX_ANCHORS with the smallest fixed hash of their row.

    A hash, not the first rows, so the sample is spread over the identity, and a fixed
    one, so it changes only where the identity's photos change: splitting 100 photos out
    of 20,000 rewrites the sample only if one of the 256 left, and then 256 rows.
    """
    images = np.asarray(images, np.int64)
    if len(images) <= MAX_ANCHORS:
        return images
    z = images.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)  # splitmix64's finaliser
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return np.sort(images[np.argpartition(z, MAX_ANCHORS)[:MAX_ANCHORS]])


def load_records(store) -> CatalogueRecords:
    anchors = {}
    rows = store._read(
        "SELECT a.identity_id, a.image FROM anchors a JOIN ("
        "  SELECT identity_id, MAX(set_at) AS s FROM anchors GROUP BY identity_id"
        ") last ON last.identity_id = a.identity_id AND last.s = a.set_at"
    )
    for number, image in rows:
        anchors.setdefault(int(number), set()).add(int(image))
    names, name_photos = _latest_with_photos(
        store, "names", "name", "name_photos", "name_id", anchors
    )
    checked, check_photos = _latest_with_photos(
        store, "checks", "checked", "check_photos", "check_id", anchors
    )
    checked = {k: bool(v) for k, v in checked.items()}
    top = store._read("SELECT COALESCE(MAX(id), 0) FROM identities")[0][0]
    return CatalogueRecords(anchors, names, name_photos, checked, check_photos, int(top) + 1)


def record_anchors(store, new, changed) -> list:
    """Appends new identities (lists of image rows) and new anchor sets, in one transaction.

    ``changed`` maps existing numbers to their current images. Returns the
    numbers given to ``new``, in order.
    """
    if not new and not changed:
        return []

    def write(conn):
        now = _now()
        batch = conn.execute("SELECT COALESCE(MAX(set_at), 0) + 1 FROM anchors").fetchone()[0]
        first = conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM identities").fetchone()[0]
        numbers = list(range(first, first + len(new)))
        conn.executemany(
            "INSERT INTO identities (id, created_at) VALUES (?, ?)", [(k, now) for k in numbers]
        )
        rows = [(k, int(i), batch) for k, images in zip(numbers, new) for i in images]
        rows += [(k, int(i), batch) for k, images in changed.items() for i in images]
        conn.executemany("INSERT INTO anchors (identity_id, image, set_at) VALUES (?, ?, ?)", rows)
        return numbers

    return store._write(write)


def check_name(name, owner) -> str:
    """A person's name for an identity: text of at most 100 characters, no control characters,
    and nothing that reads as an identity code (``NY-0007``, ``AB-7``, ``7``, also written
    with other dashes or full-width characters)."""
    if not isinstance(name, str):
        raise TypeError(f"{owner}: 'name' must be a string; got {type(name).__name__}.")
    name = unicodedata.normalize("NFC", name.strip())
    if len(name) > MAX_NAME:
        raise ValueError(f"{owner}: 'name' must be at most {MAX_NAME} characters; got {len(name)}.")
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        raise ValueError(f"{owner}: 'name' must not contain control characters; got {name!r}.")
    if _CODE_LIKE.fullmatch(_as_read(name)):
        raise ValueError(
            f"{owner}: 'name' {name!r} reads as an identity code (NY-0007, AB-7, or a number), "
            "which the page and the merge box take for another identity; choose a name with "
            "letters (not letters, a dash and a number)."
        )
    return name


def record_name(store, number, name, photos, annotator=None) -> None:
    """Appends a name for identity ``number`` given to ``photos`` (its images now)."""
    _record(store, "names", "name", "name_photos", "name_id", number, name, photos, annotator)


def record_checked(store, number, checked, photos, annotator=None) -> None:
    """Appends a checked mark (or its removal) for identity ``number`` over ``photos``."""
    _record(
        store,
        "checks",
        "checked",
        "check_photos",
        "check_id",
        number,
        int(bool(checked)),
        photos,
        annotator,
    )


def _record(store, table, column, photos_table, photo_key, number, value, photos, annotator):
    annotator = _check_annotator(annotator, "rename" if table == "names" else "mark_checked")
    at = "named_at" if table == "names" else "checked_at"

    def write(conn):
        row = conn.execute(
            f"INSERT INTO {table} (identity_id, {column}, annotator, {at}) VALUES (?, ?, ?, ?)",
            (int(number), value, annotator, _now()),
        ).lastrowid
        conn.executemany(
            f"INSERT INTO {photos_table} ({photo_key}, image) VALUES (?, ?)",
            [(row, int(i)) for i in sorted(set(int(i) for i in photos))],
        )

    store._write(write)
