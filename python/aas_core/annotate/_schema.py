"""The annotation store's SQL: its tables (schema version 3) and the upgrades from 1 and 2.

Every table a person's work lives in is append-only (triggers refuse UPDATE
and DELETE); the exceptions are ``meta``, ``images.path`` and the
``image_files.mtime_ns`` column, which record where things are now, not what
anyone said. :mod:`aas_core.annotate.store` documents what each table holds.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

SCHEMA_VERSION = 3
FORMAT = "aas-core/annotation-store"
# What a person did in the catalogue, each stored as the answers that carry it out.
OPERATIONS = ("merge", "split", "new_individual")


def _append_only(*tables) -> str:
    return "".join(
        f"CREATE TRIGGER {t}_never_changed BEFORE UPDATE ON {t} "
        f"BEGIN SELECT RAISE(ABORT, 'the {t} table is append-only'); END;\n"
        f"CREATE TRIGGER {t}_never_deleted BEFORE DELETE ON {t} "
        f"BEGIN SELECT RAISE(ABORT, 'the {t} table is append-only'); END;\n"
        for t in tables
    )


_OPERATIONS_TABLE = f"""
CREATE TABLE operations (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ({", ".join(repr(k) for k in OPERATIONS)})),
    detail TEXT NOT NULL DEFAULT '',
    annotator TEXT NOT NULL,
    done_at TEXT NOT NULL
);
""" + _append_only("operations")

# The catalogue's tables of version 2 (operations apart), all append-only.
_CATALOGUE_V2 = """
CREATE TABLE identities (id INTEGER PRIMARY KEY CHECK (id >= 1), created_at TEXT NOT NULL);
CREATE TABLE anchors (
    id INTEGER PRIMARY KEY,
    identity_id INTEGER NOT NULL REFERENCES identities(id),
    image INTEGER NOT NULL REFERENCES images(idx),
    set_at INTEGER NOT NULL,
    UNIQUE (identity_id, set_at, image)
);
CREATE TABLE names (
    id INTEGER PRIMARY KEY,
    identity_id INTEGER NOT NULL REFERENCES identities(id),
    name TEXT NOT NULL,
    annotator TEXT NOT NULL,
    named_at TEXT NOT NULL
);
CREATE TABLE checks (
    id INTEGER PRIMARY KEY,
    identity_id INTEGER NOT NULL REFERENCES identities(id),
    checked INTEGER NOT NULL CHECK (checked IN (0, 1)),
    annotator TEXT NOT NULL,
    checked_at TEXT NOT NULL
);
""" + _append_only("identities", "anchors", "names", "checks")

IMAGE_ROOTS = """
CREATE TABLE image_roots (
    image INTEGER PRIMARY KEY REFERENCES images(idx),
    root TEXT NOT NULL,
    rel TEXT NOT NULL
);
""" + _append_only("image_roots")

# Version 3: photos known by content, names and checks that belong to photos, the
# embeddings a catalogue has used, and a priority in the queue.
_ADDED_V3 = (
    """
CREATE TABLE image_files (
    image INTEGER PRIMARY KEY REFERENCES images(idx),
    size INTEGER NOT NULL CHECK (size >= 0),
    sha256 TEXT NOT NULL,
    mtime_ns INTEGER NOT NULL DEFAULT 0
);
CREATE TRIGGER image_files_content_never_changed BEFORE UPDATE OF image, size, sha256
ON image_files BEGIN SELECT RAISE(ABORT, 'a photo''s recorded size and hash never change'); END;
CREATE TRIGGER image_files_never_deleted BEFORE DELETE ON image_files
BEGIN SELECT RAISE(ABORT, 'the image_files table is append-only'); END;
CREATE TABLE relocations (
    id INTEGER PRIMARY KEY,
    image INTEGER NOT NULL REFERENCES images(idx),
    old_path TEXT NOT NULL,
    new_path TEXT NOT NULL,
    moved_at TEXT NOT NULL
);
CREATE TABLE name_photos (
    name_id INTEGER NOT NULL REFERENCES names(id),
    image INTEGER NOT NULL REFERENCES images(idx),
    PRIMARY KEY (name_id, image)
) WITHOUT ROWID;
CREATE TABLE check_photos (
    check_id INTEGER NOT NULL REFERENCES checks(id),
    image INTEGER NOT NULL REFERENCES images(idx),
    PRIMARY KEY (check_id, image)
) WITHOUT ROWID;
CREATE TABLE operation_photos (
    operation_id INTEGER NOT NULL REFERENCES operations(id),
    image INTEGER NOT NULL REFERENCES images(idx),
    PRIMARY KEY (operation_id, image)
) WITHOUT ROWID;
CREATE TABLE embeddings (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    source TEXT NOT NULL,
    auc REAL,
    detail TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL
);
"""
    + _append_only("relocations", "name_photos", "check_photos", "operation_photos", "embeddings")
    + "CREATE INDEX pairs_by_priority ON pairs(priority, id) WHERE priority > 0;\n"
)

ANSWERS_TABLE = """
CREATE TABLE answers (
    id INTEGER PRIMARY KEY,
    pair_id INTEGER NOT NULL REFERENCES pairs(id),
    answer TEXT NOT NULL CHECK (answer IN ('same', 'different', 'cant_tell', 'skip')),
    annotator TEXT NOT NULL,
    answered_at TEXT NOT NULL,
    replaces INTEGER REFERENCES answers(id),
    operation INTEGER REFERENCES operations(id)
);
"""
ANSWERS_GUARDS = """
CREATE INDEX answers_by_pair ON answers(pair_id);
CREATE TRIGGER answers_are_never_changed BEFORE UPDATE ON answers
BEGIN SELECT RAISE(ABORT, 'answers are append-only: undo or answer again instead'); END;
CREATE TRIGGER answers_are_never_deleted BEFORE DELETE ON answers
BEGIN SELECT RAISE(ABORT, 'answers are append-only: undo or answer again instead'); END;
"""

SCHEMA = (
    """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE images (
    idx INTEGER PRIMARY KEY CHECK (idx >= 0),
    path TEXT NOT NULL UNIQUE
);
CREATE TABLE pairs (
    id INTEGER PRIMARY KEY,
    i INTEGER NOT NULL REFERENCES images(idx),
    j INTEGER NOT NULL REFERENCES images(idx),
    sampler TEXT NOT NULL,
    cycle INTEGER NOT NULL CHECK (cycle >= 0),
    prob REAL,
    pool TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL DEFAULT '',
    added_at TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0 CHECK (priority >= 0),
    CHECK (i < j),
    UNIQUE (i, j)
);
"""
    + ANSWERS_TABLE
    + ANSWERS_GUARDS
    + """
CREATE TABLE undos (
    id INTEGER PRIMARY KEY,
    answer_id INTEGER NOT NULL UNIQUE REFERENCES answers(id),
    annotator TEXT NOT NULL,
    undone_at TEXT NOT NULL
);
CREATE TRIGGER undos_are_never_changed BEFORE UPDATE ON undos
BEGIN SELECT RAISE(ABORT, 'the undo history is append-only'); END;
CREATE TRIGGER undos_are_never_deleted BEFORE DELETE ON undos
BEGIN SELECT RAISE(ABORT, 'the undo history is append-only'); END;
"""
    + _OPERATIONS_TABLE
    + _CATALOGUE_V2
    + IMAGE_ROOTS
    + _ADDED_V3
)

TABLES_V1 = {"schema_version", "meta", "images", "pairs", "answers", "undos"}
TABLES_V2 = TABLES_V1 | {"operations", "identities", "anchors", "names", "checks"}
TABLES = TABLES_V2 | {
    "image_roots",
    "image_files",
    "relocations",
    "name_photos",
    "check_photos",
    "operation_photos",
    "embeddings",
}
# image_roots came late in version 2 (new seasons): a version 2 store may lack it.
REQUIRED = {1: TABLES_V1, 2: TABLES_V2, SCHEMA_VERSION: TABLES}


def statements(script):
    """The statements of an SQL script (triggers' inner ';' kept), for one transaction."""
    out, part = [], ""
    for line in script.strip().splitlines(keepends=True):
        part += line
        if sqlite3.complete_statement(part):
            out.append(part.strip())
            part = ""
    return out


def _backup(conn, path, version) -> None:
    """A copy of the whole store as it is, beside it, before an upgrade changes it."""
    backup = Path(f"{path}.v{version}-backup")
    if backup.exists():
        return
    tmp = backup.with_name(f".{backup.name}.{os.getpid()}.tmp")
    dst = sqlite3.connect(tmp)
    try:
        conn.backup(dst)
    finally:
        dst.close()
    os.replace(tmp, backup)


def _rebuild(conn, table, create_sql, columns) -> None:
    """Replaces ``table`` by ``create_sql`` (a wider CHECK), every row copied as it is."""
    conn.execute(create_sql.replace(f"TABLE {table} (", f"TABLE {table}_new (", 1))
    cols = ", ".join(columns)
    conn.execute(f"INSERT INTO {table}_new ({cols}) SELECT {cols} FROM {table}")
    # DROP TABLE also drops the old table's indexes and triggers.
    conn.execute(f"DROP TABLE {table}")
    conn.execute(f"ALTER TABLE {table}_new RENAME TO {table}")


def _v1_to_v2(conn) -> None:
    """Version 1 to 2: "can't tell" answers and the catalogue's tables."""
    _rebuild(
        conn,
        "answers",
        ANSWERS_TABLE,
        ("id", "pair_id", "answer", "annotator", "answered_at", "replaces"),
    )
    for stmt in statements(
        ANSWERS_GUARDS + _OPERATIONS_TABLE.replace(", 'new_individual'", "") + _CATALOGUE_V2
    ):
        conn.execute(stmt)


def _v2_to_v3(conn) -> None:
    """Content hashes, relocations, names and checks on photos, embeddings, queue priority."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "image_roots" not in tables:
        for stmt in statements(IMAGE_ROOTS):
            conn.execute(stmt)
    table = [s for s in statements(_OPERATIONS_TABLE) if s.startswith("CREATE TABLE")][0]
    _rebuild(conn, "operations", table, ("id", "kind", "detail", "annotator", "done_at"))
    conn.execute(
        "ALTER TABLE pairs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0 CHECK (priority >= 0)"
    )
    for stmt in statements(_append_only("operations") + _ADDED_V3):
        conn.execute(stmt)


def upgrade(conn, path, version, what) -> None:
    """Brings a version 1 or 2 store to the current version, in one transaction.

    A copy of the file as it was is written first (``<store>.v1-backup`` or
    ``.v2-backup``). Every row is kept; the counts are checked before the
    commit, and any failure rolls the whole upgrade back.
    """
    try:
        _backup(conn, path, version)
        counted = ("answers", "operations", "pairs", "names", "checks")
        conn.execute("PRAGMA foreign_keys=OFF")  # while tables are rebuilt
        conn.execute("BEGIN IMMEDIATE")
        try:
            present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            before = {
                t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in counted
                if t in present
            }
            if version == 1:
                _v1_to_v2(conn)
            _v2_to_v3(conn)
            conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
            after = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in before}
            if after != before or conn.execute("PRAGMA foreign_key_check").fetchall():
                raise sqlite3.DatabaseError("the copied rows do not match the originals")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    except (sqlite3.Error, OSError) as exc:
        raise ValueError(
            f"{what} is a version {version} store that this aas-core upgrades to version "
            f"{SCHEMA_VERSION} when it opens it, and the upgrade failed ({exc}); the store "
            "is unchanged (open it with write permission, or use the aas-core that wrote it)."
        ) from None
