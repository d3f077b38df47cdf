"""The catalogue's rows in an annotation store: identity numbers, anchors, names, checks.

The store owns the file and its transactions; this module only reads and
appends the catalogue's own tables through them (the store never imports the
catalogue). Every table is append-only: an identity's anchors, name and
checked mark are its latest rows, so every earlier state stays in the file.
"""

from __future__ import annotations

import unicodedata

from ..annotate.store import _check_annotator, _now

__all__ = ["CatalogueRecords", "check_name", "load_records"]

MAX_NAME = 100


class CatalogueRecords:
    """What the store says about identities (a snapshot; see :func:`load_records`).

    anchors : {number: set of image rows}, each identity's latest anchor set
    names : {number: str}, latest names ('' = none)
    checked : {number: bool}
    next_number : int, the number the next new identity gets
    """

    def __init__(self, anchors, names, checked, next_number):
        self.anchors, self.names, self.checked = anchors, names, checked
        self.next_number = next_number


def load_records(store) -> CatalogueRecords:
    anchors = {}
    rows = store._read(
        "SELECT a.identity_id, a.image FROM anchors a JOIN ("
        "  SELECT identity_id, MAX(set_at) AS s FROM anchors GROUP BY identity_id"
        ") last ON last.identity_id = a.identity_id AND last.s = a.set_at"
    )
    for number, image in rows:
        anchors.setdefault(int(number), set()).add(int(image))
    names = {
        int(k): v
        for k, v in store._read(
            "SELECT identity_id, name FROM names WHERE id IN "
            "(SELECT MAX(id) FROM names GROUP BY identity_id)"
        )
    }
    checked = {
        int(k): bool(v)
        for k, v in store._read(
            "SELECT identity_id, checked FROM checks WHERE id IN "
            "(SELECT MAX(id) FROM checks GROUP BY identity_id)"
        )
    }
    top = store._read("SELECT COALESCE(MAX(id), 0) FROM identities")[0][0]
    return CatalogueRecords(anchors, names, checked, int(top) + 1)


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
    """A person's name for an identity: text of at most 100 characters, no control characters."""
    if not isinstance(name, str):
        raise TypeError(f"{owner}: 'name' must be a string; got {type(name).__name__}.")
    name = unicodedata.normalize("NFC", name.strip())
    if len(name) > MAX_NAME:
        raise ValueError(f"{owner}: 'name' must be at most {MAX_NAME} characters; got {len(name)}.")
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        raise ValueError(f"{owner}: 'name' must not contain control characters; got {name!r}.")
    return name


def record_name(store, number, name, annotator=None) -> None:
    annotator = _check_annotator(annotator, "rename")
    store._write(
        lambda conn: conn.execute(
            "INSERT INTO names (identity_id, name, annotator, named_at) VALUES (?, ?, ?, ?)",
            (int(number), name, annotator, _now()),
        )
    )


def record_checked(store, number, checked, annotator=None) -> None:
    annotator = _check_annotator(annotator, "mark_checked")
    store._write(
        lambda conn: conn.execute(
            "INSERT INTO checks (identity_id, checked, annotator, checked_at) VALUES (?, ?, ?, ?)",
            (int(number), int(bool(checked)), annotator, _now()),
        )
    )
