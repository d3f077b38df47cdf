"""The SQLite annotation store: durable answers, undo history, conflicts, bad files."""

import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aas_core import PairConstraints
from aas_core.annotate import (
    SCHEMA_VERSION,
    AlreadyAnswered,
    AnnotationStore,
    NothingToUndo,
    StoreLocked,
    UnknownPair,
    load_constraints,
)

PATHS = [f"ind{k // 2}/img{k}.jpg" for k in range(8)]


@pytest.fixture
def store(tmp_path):
    s = AnnotationStore.create(tmp_path / "run.sqlite", PATHS, embeddings_path="X.npy")
    yield s
    s.close()


def _raw(path):
    """A plain sqlite3 connection, as another program would open the file."""
    return closing(sqlite3.connect(path, isolation_level=None))


def test_create_writes_a_versioned_wal_store_and_open_reads_it_back(tmp_path):
    path = tmp_path / "run.sqlite"
    with AnnotationStore.create(path, ["a\\b.jpg", "./c.png", "d/e.jpg"]) as s:
        assert s.n_images == 3
        assert s.image_paths() == ["a/b.jpg", "c.png", "d/e.jpg"]
    with AnnotationStore.open(path) as s:
        assert s.meta["format"] == "aas-core/annotation-store"
        assert s.embeddings_path is None and s.next_pair() is None
        assert s.progress() == {
            "images": 3,
            "pairs": 0,
            "answered": 0,
            "same": 0,
            "different": 0,
            "cant_tell": 0,
            "skipped": 0,
            "remaining": 0,
            "conflicts": 0,
            "undone": 0,
            "edits": 0,
            "edit_answers": 0,
        }
        assert s._read("PRAGMA journal_mode")[0][0] == "wal"
        assert s._read("PRAGMA synchronous")[0][0] == 2  # FULL: each answer reaches the disk
    with _raw(path) as c:
        assert c.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    # only the store and its lock/WAL side files; no temporary file left behind
    assert {p.name for p in tmp_path.iterdir()} <= {
        "run.sqlite",
        "run.sqlite-wal",
        "run.sqlite-shm",
    }


def test_create_never_overwrites(tmp_path):
    path = tmp_path / "run.sqlite"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="already exists"):
        AnnotationStore.create(path, PATHS)
    assert path.read_bytes() == b"precious"
    AnnotationStore.create(tmp_path / "new.sqlite", PATHS).close()
    with pytest.raises(FileExistsError, match="never overwritten"):
        AnnotationStore.create(tmp_path / "new.sqlite", ["x.jpg", "y.jpg"])
    with AnnotationStore.open(tmp_path / "new.sqlite") as s:
        assert s.image_paths() == PATHS


def test_create_works_without_hard_links(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise PermissionError("this file system has no hard links")

    monkeypatch.setattr("os.link", no_links)
    AnnotationStore.create(tmp_path / "run.sqlite", PATHS).close()
    with AnnotationStore.open(tmp_path / "run.sqlite") as s:
        assert s.image_paths() == PATHS
    with pytest.raises(FileExistsError):
        AnnotationStore.create(tmp_path / "run.sqlite", PATHS)
    assert [p.name for p in tmp_path.iterdir() if "creating" in p.name] == []


@pytest.mark.parametrize(
    "paths, exc, match",
    [
        (["a.jpg"], ValueError, "at least 2 images"),
        (["a.jpg", "/etc/passwd"], ValueError, "row 1 is absolute"),
        (["a.jpg", "C:\\x.jpg"], ValueError, "row 1 is absolute"),
        (["a.jpg", "../b.jpg"], ValueError, r"row 1 .* leaves the image folder"),
        (["a.jpg", "x/../../b.jpg"], ValueError, "leaves the image folder"),
        (["a.jpg", ""], ValueError, "row 1 must be a non-empty path"),
        (["a.jpg", "./a.jpg"], ValueError, "rows 0 and 1 are the same image"),
        (["a.jpg", 3], TypeError, "row 1 must be a path string"),
        ("a.jpg", TypeError, "sequence of paths"),
    ],
)
def test_create_rejects_bad_image_lists(tmp_path, paths, exc, match):
    with pytest.raises(exc, match=match):
        AnnotationStore.create(tmp_path / "run.sqlite", paths)
    assert not (tmp_path / "run.sqlite").exists()


def test_missing_empty_foreign_corrupt_and_future_files_fail_clearly(tmp_path, store):
    with pytest.raises(ValueError, match="does not exist"):
        AnnotationStore.open(tmp_path / "nope.sqlite")
    assert not (tmp_path / "nope.sqlite").exists()  # opening never creates a file
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    with pytest.raises(ValueError, match="not an SQLite file.*empty"):
        AnnotationStore.open(empty)
    text = tmp_path / "notes.sqlite"
    text.write_text("i,j,same\n0,1,same\n")
    with pytest.raises(ValueError, match="not an SQLite file"):
        AnnotationStore.open(text)
    # a foreign SQLite database: refused, and not modified (no WAL switch, nothing written)
    foreign = tmp_path / "foreign.sqlite"
    with _raw(foreign) as c:
        c.execute("CREATE TABLE photos (id INTEGER, name TEXT)")
    before = foreign.read_bytes()
    with pytest.raises(
        ValueError, match=r"not an aas-core annotation store \(its tables: photos\)"
    ):
        AnnotationStore.open(foreign)
    assert foreign.read_bytes() == before
    # another schema version: refused, never migrated
    store.close()
    future = tmp_path / "future.sqlite"
    future.write_bytes(store.path.read_bytes())
    with _raw(future) as c:
        c.execute("UPDATE schema_version SET version = 4")
    with pytest.raises(ValueError, match="schema version 4; this aas-core reads versions 1 to 3"):
        AnnotationStore.open(future)
    # a damaged file: a clear error, not a crash in the middle of a session
    broken = tmp_path / "broken.sqlite"
    data = bytearray(store.path.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # the first page's b-tree header and cells
    broken.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        AnnotationStore.open(broken)
    with pytest.raises(ValueError, match="does not exist .*folder"):
        AnnotationStore.open(tmp_path)


def test_add_pairs_queues_each_unordered_pair_once(store):
    pairs = np.array([[1, 0], [2, 3], [0, 1], [4, 5]])
    keep = pairs.copy()
    assert store.add_pairs(pairs, sampler="aas", cycle=0, prob=[0.5, np.nan, 0.5, 0.1]) == 3
    assert np.array_equal(pairs, keep)  # the caller's array is not written
    assert store.add_pairs([[3, 2], [6, 7]], sampler="random", cycle=1) == 1
    got = [
        (p["pair_id"], p["i"], p["j"], p["sampler"], p["cycle"], p["prob"]) for p in store.pairs()
    ]
    assert got == [
        (1, 0, 1, "aas", 0, 0.5),
        (2, 2, 3, "aas", 0, None),
        (3, 4, 5, "aas", 0, 0.1),
        (4, 6, 7, "random", 1, None),
    ]
    assert store.next_cycle() == 2
    assert store.add_pairs(np.empty((0, 2), np.int64), sampler="aas", cycle=2) == 0


@pytest.mark.parametrize(
    "pairs, kwargs, exc, match",
    [
        ([[0, 8]], {}, ValueError, r"row 0 is \(0, 8\); image indices must be in \[0, 8\)"),
        ([[-1, 2]], {}, ValueError, "must be in"),
        ([[3, 3]], {}, ValueError, "pairs image 3 with itself"),
        ([[0.0, 1.0]], {}, TypeError, "integer image indices"),
        ([0, 1], {}, ValueError, r"shape \(m, 2\)"),
        ([[0, 1]], {"sampler": ""}, ValueError, "'sampler' must be a non-empty string"),
        ([[0, 1]], {"cycle": -1}, ValueError, "'cycle' must be an int >= 0"),
        ([[0, 1]], {"prob": [0.1, 0.2]}, ValueError, "'prob' must have one entry per pair"),
    ],
)
def test_add_pairs_rejects_bad_input(store, pairs, kwargs, exc, match):
    args = {"sampler": "aas", "cycle": 0, **kwargs}
    with pytest.raises(exc, match=match):
        store.add_pairs(pairs, **args)
    assert store.pairs() == []


def test_answers_undo_and_the_queue(store):
    store.add_pairs([[0, 1], [2, 3], [4, 5]], sampler="aas", cycle=0)
    assert store.next_pair()["pair_id"] == 1
    a = store.answer(1, "same", annotator="ann")
    assert (a["answer"], a["pair_id"], a["unchanged"], a["replaces"]) == ("same", 1, False, None)
    assert store.next_pair()["pair_id"] == 2
    store.answer(2, "skip", annotator="ann")
    store.answer(3, "different", annotator="bob")
    assert store.next_pair() is None
    p = store.progress()
    assert (p["answered"], p["same"], p["different"], p["skipped"], p["remaining"]) == (
        2,
        1,
        1,
        1,
        0,
    )
    assert store.constraints().pairs.tolist() == [[0, 1], [4, 5]]  # skip is no constraint
    # each person's undo takes back their own latest answer, never another's
    assert store.undo(annotator="ann")["pair_id"] == 2
    assert store.next_pair()["pair_id"] == 2  # resumes at the undone pair
    assert store.undo(annotator="ann")["pair_id"] == 1
    with pytest.raises(NothingToUndo, match="by 'ann'"):
        store.undo(annotator="ann")
    assert store.undo(annotator="bob")["pair_id"] == 3
    with pytest.raises(NothingToUndo, match="nothing to undo"):
        store.undo()
    before = store.answers(history=True)
    with pytest.raises(NothingToUndo):
        store.undo()  # undo past the beginning changes nothing
    assert store.answers(history=True) == before
    assert [a["undone"] for a in before] == [True, True, True]  # undone, never deleted
    assert store.progress()["undone"] == 3 and store.next_pair()["pair_id"] == 1


def test_same_answer_twice_is_one_row_and_a_different_one_needs_replace(store):
    store.add_pairs([[0, 1], [1, 2]], sampler="aas", cycle=0)
    first = store.answer(1, "same")
    again = store.answer(1, "same")
    assert again["unchanged"] and again["answer_id"] == first["answer_id"]
    with pytest.raises(AlreadyAnswered, match="pair 1 already has the answer 'same'") as exc:
        store.answer(1, "different")
    assert exc.value.current["answer_id"] == first["answer_id"]
    assert len(store.answers(history=True)) == 1
    store.answer(2, "same")
    changed = store.answer(1, "different", replace=True)
    assert changed["replaces"] == first["answer_id"]
    # the changed answer takes its place in the order of when it was given
    c = store.constraints()
    assert c.pairs.tolist() == [[1, 2], [0, 1]] and c.is_must_link.tolist() == [True, False]
    hist = store.answers(history=True)
    assert [(h["answer"], h["current"], h["undone"]) for h in hist] == [
        ("same", False, False),
        ("same", True, False),
        ("different", True, False),
    ]
    # undoing the change brings the earlier answer back
    store.undo()
    assert store.pair(1)["answer"]["answer"] == "same"
    assert store.constraints().pairs.tolist() == [[0, 1], [1, 2]]


@pytest.mark.parametrize(
    "pair_id, answer, exc, match",
    [
        (99, "same", UnknownPair, "unknown pair id 99"),
        (
            1,
            "maybe",
            ValueError,
            "'answer' must be one of 'same', 'different', 'cant_tell', 'skip'",
        ),
        ("1", "same", TypeError, "'pair_id' must be an int"),
        (True, "same", TypeError, "'pair_id' must be an int"),
        (2**63, "same", UnknownPair, "unknown pair id 9223372036854775808"),
        (-(2**63) - 1, "same", UnknownPair, "unknown pair id -9223372036854775809"),
    ],
)
def test_bad_answers_write_nothing(store, pair_id, answer, exc, match):
    store.add_pairs([[0, 1]], sampler="aas", cycle=0)
    with pytest.raises(exc, match=match):
        store.answer(pair_id, answer)
    assert store.answers(history=True) == []


def test_pair_ids_beyond_64_bits_are_unknown_pairs_not_overflow_errors(store):
    with pytest.raises(UnknownPair, match="unknown pair id 9223372036854775808"):
        store.pair(2**63)


@pytest.mark.parametrize(
    "annotator, exc, match",
    [
        ("a" * 201, ValueError, "at most 200 characters"),
        ("ann\x00", ValueError, "no NUL character"),
        ("\ud800", ValueError, "valid Unicode"),  # a lone surrogate (JSON "\\ud800")
        (5, TypeError, "must be a string; got int"),
    ],
)
def test_bad_annotator_names_write_nothing(store, annotator, exc, match):
    store.add_pairs([[0, 1]], sampler="aas", cycle=0)
    store.answer(1, "same")
    with pytest.raises(exc, match=match):
        store.answer(1, "different", annotator=annotator, replace=True)
    with pytest.raises(exc, match=match):
        store.undo(annotator=annotator)
    assert [(h["answer"], h["undone"]) for h in store.answers(history=True)] == [("same", False)]


def test_conflicts_name_the_earlier_answers(store):
    store.add_pairs([[0, 1], [1, 2], [0, 2], [3, 4]], sampler="aas", cycle=0)
    store.answer(1, "same")
    store.answer(2, "same")
    assert store.conflicts() == []
    store.answer(3, "different")  # 0~1~2 says same
    [c] = store.conflicts()
    assert (c["pair_id"], c["answer"], c["implied"]) == (3, "different", "same")
    assert [b["pair_id"] for b in c["because"]] == [1, 2]
    assert store.progress()["conflicts"] == 1
    # changing an earlier answer resolves it; the history keeps both
    store.answer(2, "different", replace=True)
    assert store.conflicts() == [] and store.constraints().is_consistent
    assert len(store.answers(history=True)) == 4


def test_answers_are_append_only_in_the_file_itself(store):
    store.add_pairs([[0, 1]], sampler="aas", cycle=0)
    store.answer(1, "same")
    store.undo()
    with _raw(store.path) as c:
        for sql in ("DELETE FROM answers", "UPDATE answers SET answer='skip'", "DELETE FROM undos"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                c.execute(sql)


def test_every_answer_is_committed_before_answer_returns(store):
    store.add_pairs([[0, 1], [2, 3]], sampler="aas", cycle=0)
    store.answer(1, "same")
    store.answer(2, "different")
    # another process sees both at once, while this store is still open
    with _raw(store.path) as c:
        rows = c.execute("SELECT pair_id, answer FROM answers ORDER BY id").fetchall()
    assert rows == [(1, "same"), (2, "different")]


def test_pair_constraints_load_from_a_store(store):
    store.add_pairs([[0, 1], [2, 3], [1, 2]], sampler="aas", cycle=0)
    store.answer(1, "same")
    store.answer(2, "different")
    store.answer(3, "skip")
    c = PairConstraints.from_store(store.path)
    assert c.n == 8 and c.pairs.tolist() == [[0, 1], [2, 3]]
    assert c.is_must_link.tolist() == [True, False]
    assert load_constraints(store.path).pairs.tolist() == c.pairs.tolist()
    with pytest.raises(ValueError, match="not an SQLite file"):
        PairConstraints.from_store(__file__)


def test_one_server_per_store(store, tmp_path):
    store.lock()
    other = AnnotationStore.open(store.path)
    with pytest.raises(
        StoreLocked, match=r"already in use by another aas annotate or aas catalogue server \(pid"
    ):
        other.lock()
    # the second process may still read (aas refine) and the first keeps working
    assert other.progress()["images"] == 8
    store.close()  # releases the lock
    other.lock()
    other.close()


def test_one_server_per_store_also_through_another_name(store, tmp_path):
    # a symlink, a path with '..' and a hard link (even in another folder) name the same file
    link = tmp_path / "link.sqlite"
    link.symlink_to(store.path)
    (tmp_path / "elsewhere").mkdir()
    hard = tmp_path / "elsewhere" / "hard.sqlite"
    os.link(store.path, hard)
    store.lock()
    (tmp_path / "sub").mkdir(exist_ok=True)
    for name in (link, tmp_path / "sub" / ".." / "run.sqlite", hard):
        with AnnotationStore.open(name) as other:
            with pytest.raises(StoreLocked, match=f"already in use .*pid {os.getpid()}"):
                other.lock()
    store.close()
    with AnnotationStore.open(hard) as other:  # free again once the holder closes
        other.lock()


def test_what_another_connection_writes_is_seen_at_once(store):
    store.add_pairs([[0, 1], [1, 2], [0, 2]], sampler="aas", cycle=0)
    assert store.progress()["answered"] == 0  # computed (and cached) here
    with AnnotationStore.open(store.path) as other:
        other.answer(1, "same")
        other.answer(2, "same")
        other.answer(3, "different")
        other.undo()
    p = store.progress()
    assert (p["answered"], p["undone"], p["conflicts"]) == (2, 1, 0)
    assert store.constraints().pairs.tolist() == [[0, 1], [1, 2]]
    c = store.constraints()
    c.add_cannot_link([[5, 6]])  # a copy: the store's own view is unchanged
    assert len(store.constraints()) == 2


# ---- a refused store is never changed; a write-ahead log is never thrown away ----------------


def _crashed_store(path):
    """A store whose last 3 answers sit only in its -wal, as after kill -9 (another process)."""
    code = (
        "import os, sys\n"
        "from aas_core.annotate import AnnotationStore\n"
        "s = AnnotationStore.create(sys.argv[1], [f'img{i}.jpg' for i in range(40)])\n"
        "s.add_pairs([[i, i + 1] for i in range(30)], sampler='aas', cycle=0)\n"
        "s.close()\n"
        "s = AnnotationStore.open(sys.argv[1])\n"
        "for pid in (1, 2, 3):\n"
        "    s.answer(pid, 'same')\n"
        "os._exit(0)\n"
    )
    import aas_core

    env = dict(os.environ, PYTHONPATH=str(Path(aas_core.__file__).parents[1]))
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, env=env)
    assert Path(f"{path}-wal").stat().st_size > 0


def _digest(path):
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_an_intact_store_with_a_write_ahead_log_opens_with_every_answer(tmp_path):
    from aas_core.annotate.store import wal_frames

    path = tmp_path / "w.sqlite"
    _crashed_store(path)
    valid, committed = wal_frames(f"{path}-wal")
    assert valid == committed > 0
    with AnnotationStore.open(path) as s:
        assert [a["pair_id"] for a in s.answers()] == [1, 2, 3]


def test_a_damaged_store_is_refused_and_left_as_it_was(tmp_path):
    path = tmp_path / "w.sqlite"
    _crashed_store(path)
    with open(path, "r+b") as f:  # the red team's damage: 8 bytes at offset 16384
        f.seek(16384)
        f.write(b"\xff" * 8)
    before = (_digest(path), _digest(f"{path}-wal"))
    with pytest.raises(
        ValueError,
        match="corrupt .*Nothing was changed; its write-ahead log "
        "holds [0-9]+ committed frames .*kept.*\\.recover",
    ):
        AnnotationStore.open(path)
    assert (_digest(path), _digest(f"{path}-wal")) == before


def test_a_garbage_write_ahead_log_is_refused_not_discarded(tmp_path):
    path = tmp_path / "w.sqlite"
    _crashed_store(path)
    wal = Path(f"{path}-wal")
    size = wal.stat().st_size
    wal.write_bytes(os.urandom(size))
    before = (_digest(path), _digest(wal))
    with pytest.raises(ValueError, match=f"write-ahead log .* \\({size} bytes\\) is not valid"):
        AnnotationStore.open(path)
    assert (_digest(path), _digest(wal)) == before
    # a cut-off header and a wrong header checksum too
    wal.write_bytes(Path(wal).read_bytes()[:20])
    with pytest.raises(ValueError, match="header is cut short"):
        AnnotationStore.open(path)
    _crashed_store(tmp_path / "v.sqlite")
    real = bytearray(Path(f"{tmp_path / 'v.sqlite'}-wal").read_bytes())
    real[8] ^= 1  # the page size: the header checksum no longer matches
    wal.write_bytes(bytes(real))
    with pytest.raises(ValueError, match="checksum is wrong"):
        AnnotationStore.open(path)


# ---- answers in constant time: the cached state follows the store answer by answer -----------


def _fresh_view(path):
    with AnnotationStore.open(path) as s:
        return s.answers(), s.conflicts(), s.progress(), s.constraints().pairs.tolist()


def test_an_answer_reads_only_the_new_rows(tmp_path):
    n = 60
    s = AnnotationStore.create(tmp_path / "big.sqlite", [f"i{k}.jpg" for k in range(n)])
    pairs = [[i, j] for i in range(n) for j in range(i + 1, n)][:400]
    s.add_pairs(pairs, sampler="t", cycle=0)
    for pid in range(1, 301):
        s.answer(pid, "same" if pid % 3 else "different")
    s.progress()
    rows_read = []
    real = s._read

    def counting(sql, args=()):
        out = real(sql, args)
        rows_read.append(len(out))
        return out

    s._read = counting
    s.answer(301, "same")
    s.progress(), s.conflict_of(301), s.next_pair()
    # the change key, the one new answer, the pair count, the next pair: never all 300
    assert sum(rows_read) <= 8, rows_read
    s.close()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(1, 12), st.booleans()), max_size=40))
def test_the_cached_state_equals_a_fresh_read(tmp_path_factory, ops):
    path = tmp_path_factory.mktemp("ops") / "ops.sqlite"
    s = AnnotationStore.create(path, [f"i{k}.jpg" for k in range(8)])
    other = AnnotationStore.open(path)  # another connection writes too (another tab, process)
    s.add_pairs([[i, j] for i in range(8) for j in range(i + 1, 8)][:12], sampler="t", cycle=0)
    for op, pid, flag in ops:
        who = other if flag else s
        try:
            if op == 0:
                who.answer(pid, "same")
            elif op == 1:
                who.answer(pid, "different", replace=flag)
            elif op == 2:
                who.answer(pid, "skip")
            else:
                who.undo()
        except (AlreadyAnswered, NothingToUndo):
            pass
        assert (s.answers(), s.conflicts(), s.progress(), s.constraints().pairs.tolist()) == (
            _fresh_view(path)
        )
        nxt = s.next_pair()
        unanswered = {p["pair_id"] for p in s.pairs()} - {a["pair_id"] for a in s.answers()}
        assert (nxt["pair_id"] if nxt else None) == (min(unanswered) if unanswered else None)
    other.close()
    s.close()


def test_cant_tell_settles_the_pair_without_being_a_constraint(store):
    store.add_pairs([[0, 1], [2, 3], [0, 2]], sampler="aas", cycle=0)
    store.answer(1, "cant_tell", annotator="ann")
    store.answer(2, "same", annotator="ann")
    # not asked again, not a constraint, counted on its own
    assert store.next_pair()["pair_id"] == 3
    assert store.constraints().pairs.tolist() == [[2, 3]]
    p = store.progress()
    assert (p["answered"], p["cant_tell"], p["skipped"], p["remaining"]) == (1, 1, 0, 1)
    assert [a["answer"] for a in store.answers()] == ["cant_tell", "same"]
    # it can be changed like any answer, and undone
    with pytest.raises(AlreadyAnswered):
        store.answer(1, "different")
    store.answer(1, "different", replace=True)
    assert store.constraints().cannot_link.tolist() == [[0, 1]]
    store.undo()
    assert store.answers()[0]["answer"] == "cant_tell" and len(store.constraints()) == 1


# The schema of aas-core's first stores (version 1), as they exist on users' disks.
_V1_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE images (idx INTEGER PRIMARY KEY CHECK (idx >= 0), path TEXT NOT NULL UNIQUE);
CREATE TABLE pairs (
    id INTEGER PRIMARY KEY, i INTEGER NOT NULL REFERENCES images(idx),
    j INTEGER NOT NULL REFERENCES images(idx), sampler TEXT NOT NULL,
    cycle INTEGER NOT NULL CHECK (cycle >= 0), prob REAL, pool TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL DEFAULT '', added_at TEXT NOT NULL, CHECK (i < j), UNIQUE (i, j)
);
CREATE TABLE answers (
    id INTEGER PRIMARY KEY, pair_id INTEGER NOT NULL REFERENCES pairs(id),
    answer TEXT NOT NULL CHECK (answer IN ('same', 'different', 'skip')),
    annotator TEXT NOT NULL, answered_at TEXT NOT NULL, replaces INTEGER REFERENCES answers(id)
);
CREATE INDEX answers_by_pair ON answers(pair_id);
CREATE TABLE undos (
    id INTEGER PRIMARY KEY, answer_id INTEGER NOT NULL UNIQUE REFERENCES answers(id),
    annotator TEXT NOT NULL, undone_at TEXT NOT NULL
);
CREATE TRIGGER answers_are_never_changed BEFORE UPDATE ON answers
BEGIN SELECT RAISE(ABORT, 'answers are append-only: undo or answer again instead'); END;
CREATE TRIGGER answers_are_never_deleted BEFORE DELETE ON answers
BEGIN SELECT RAISE(ABORT, 'answers are append-only: undo or answer again instead'); END;
INSERT INTO schema_version VALUES (1);
INSERT INTO meta VALUES ('format', 'aas-core/annotation-store'), ('created_at', 'x'),
    ('created_by', 'ann'), ('embeddings_path', '');
INSERT INTO images VALUES (0, 'a.jpg'), (1, 'b.jpg'), (2, 'c.jpg'), (3, 'd.jpg');
INSERT INTO pairs VALUES (1, 0, 1, 'aas', 0, 0.5, '', '', 't'),
    (2, 1, 2, 'aas', 0, NULL, '', '', 't'), (3, 2, 3, 'aas', 0, NULL, '', '', 't'),
    (4, 0, 3, 'nis', 1, NULL, '', '', 't');
INSERT INTO answers VALUES (1, 1, 'same', 'ann', 't1', NULL),
    (2, 2, 'different', 'ann', 't2', NULL), (3, 3, 'skip', 'bob', 't3', NULL),
    (4, 2, 'same', 'bob', 't4', 2), (5, 4, 'different', 'ann', 't5', NULL);
INSERT INTO undos VALUES (1, 5, 'ann', 't6');
"""


def test_a_version_1_store_is_upgraded_in_place_and_keeps_every_answer(tmp_path):
    path = tmp_path / "old.sqlite"
    with _raw(path) as c:
        c.executescript(_V1_SCHEMA)
    with AnnotationStore.open(path) as s:
        history = s.answers(history=True)
        assert [(a["answer_id"], a["answer"], a["replaces"], a["undone"]) for a in history] == [
            (1, "same", None, False),
            (2, "different", None, False),
            (3, "skip", None, False),
            (4, "same", 2, False),
            (5, "different", None, True),
        ]
        assert s.constraints().must_link.tolist() == [[0, 1], [1, 2]]
        assert s.next_pair()["pair_id"] == 4  # its answer was undone
        s.answer(4, "cant_tell")  # what version 1 could not hold
        assert s.progress()["cant_tell"] == 1
    with _raw(path) as c:
        assert c.execute("SELECT version FROM schema_version").fetchall() == [(3,)]
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            c.execute("UPDATE answers SET answer = 'same' WHERE id = 2")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            c.execute("DELETE FROM answers")
        assert c.execute("PRAGMA foreign_key_check").fetchall() == []
    # the untouched version 1 file is kept beside it
    backup = tmp_path / "old.sqlite.v1-backup"
    with _raw(backup) as c:
        assert c.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
        assert c.execute("SELECT COUNT(*) FROM answers").fetchall() == [(5,)]
    with AnnotationStore.open(path) as s:  # opening again changes nothing more
        assert len(s.answers(history=True)) == 6


def test_a_version_1_store_that_cannot_be_written_is_left_as_it_is(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root can write read-only files")
    path = tmp_path / "old.sqlite"
    with _raw(path) as c:
        c.executescript(_V1_SCHEMA)
    path.chmod(0o444)
    before = path.read_bytes()
    # refused as read-only before an upgrade is tried
    with pytest.raises(ValueError, match="is read-only .*nothing was changed"):
        AnnotationStore.open(path)
    assert path.read_bytes() == before


def test_a_failed_upgrade_rolls_back_to_the_version_1_store(tmp_path, monkeypatch):
    from aas_core.annotate import _schema

    path = tmp_path / "old.sqlite"
    with _raw(path) as c:
        c.executescript(_V1_SCHEMA)

    def failing(script):  # fails after the answers table was already rebuilt
        raise sqlite3.OperationalError("disk I/O error (injected)")

    monkeypatch.setattr(_schema, "statements", failing)
    with pytest.raises(ValueError, match=r"version 1 store .*upgrade failed \(disk I/O error"):
        AnnotationStore.open(path)
    with _raw(path) as c:
        assert c.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
        rows = c.execute("SELECT id, answer FROM answers ORDER BY id").fetchall()
        assert rows == [(1, "same"), (2, "different"), (3, "skip"), (4, "same"), (5, "different")]
        names = {r[0] for r in c.execute("SELECT name FROM sqlite_master")}
        assert "answers_new" not in names and "answers_are_never_changed" in names
    monkeypatch.undo()
    with AnnotationStore.open(path) as s:
        assert len(s.answers(history=True)) == 5


# The schema of version 2 stores (aas-core before content hashes and queue priorities).
_V2_SCHEMA = """
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
    CHECK (i < j),
    UNIQUE (i, j)
);

CREATE TABLE answers (
    id INTEGER PRIMARY KEY,
    pair_id INTEGER NOT NULL REFERENCES pairs(id),
    answer TEXT NOT NULL CHECK (answer IN ('same', 'different', 'cant_tell', 'skip')),
    annotator TEXT NOT NULL,
    answered_at TEXT NOT NULL,
    replaces INTEGER REFERENCES answers(id),
    operation INTEGER REFERENCES operations(id)
);

CREATE INDEX answers_by_pair ON answers(pair_id);
CREATE TRIGGER answers_are_never_changed BEFORE UPDATE ON answers
BEGIN SELECT RAISE(ABORT, 'answers are append-only: undo or answer again instead'); END;
CREATE TRIGGER answers_are_never_deleted BEFORE DELETE ON answers
BEGIN SELECT RAISE(ABORT, 'answers are append-only: undo or answer again instead'); END;

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

CREATE TABLE operations (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('merge', 'split')),
    detail TEXT NOT NULL DEFAULT '',
    annotator TEXT NOT NULL,
    done_at TEXT NOT NULL
);
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
CREATE TABLE image_roots (
    image INTEGER PRIMARY KEY REFERENCES images(idx),
    root TEXT NOT NULL,
    rel TEXT NOT NULL
);
CREATE TRIGGER operations_never_changed BEFORE UPDATE ON operations
BEGIN SELECT RAISE(ABORT, 'the operations table is append-only'); END;
CREATE TRIGGER operations_never_deleted BEFORE DELETE ON operations
BEGIN SELECT RAISE(ABORT, 'the operations table is append-only'); END;
CREATE TRIGGER identities_never_changed BEFORE UPDATE ON identities
BEGIN SELECT RAISE(ABORT, 'the identities table is append-only'); END;
CREATE TRIGGER identities_never_deleted BEFORE DELETE ON identities
BEGIN SELECT RAISE(ABORT, 'the identities table is append-only'); END;
CREATE TRIGGER anchors_never_changed BEFORE UPDATE ON anchors
BEGIN SELECT RAISE(ABORT, 'the anchors table is append-only'); END;
CREATE TRIGGER anchors_never_deleted BEFORE DELETE ON anchors
BEGIN SELECT RAISE(ABORT, 'the anchors table is append-only'); END;
CREATE TRIGGER names_never_changed BEFORE UPDATE ON names
BEGIN SELECT RAISE(ABORT, 'the names table is append-only'); END;
CREATE TRIGGER names_never_deleted BEFORE DELETE ON names
BEGIN SELECT RAISE(ABORT, 'the names table is append-only'); END;
CREATE TRIGGER checks_never_changed BEFORE UPDATE ON checks
BEGIN SELECT RAISE(ABORT, 'the checks table is append-only'); END;
CREATE TRIGGER checks_never_deleted BEFORE DELETE ON checks
BEGIN SELECT RAISE(ABORT, 'the checks table is append-only'); END;
CREATE TRIGGER image_roots_never_changed BEFORE UPDATE ON image_roots
BEGIN SELECT RAISE(ABORT, 'the image_roots table is append-only'); END;
CREATE TRIGGER image_roots_never_deleted BEFORE DELETE ON image_roots
BEGIN SELECT RAISE(ABORT, 'the image_roots table is append-only'); END;
"""

_V2_ROWS = """
INSERT INTO schema_version VALUES (2);
INSERT INTO meta VALUES ('format', 'aas-core/annotation-store'), ('created_at', 't'),
    ('created_by', 'ann'), ('embeddings_path', '');
INSERT INTO images VALUES (0, 'a.jpg'), (1, 'b.jpg'), (2, 'c.jpg'), (3, 'd.jpg');
INSERT INTO pairs VALUES (1, 0, 1, 'aas', 0, 0.5, 'os', 'b1', 't'),
    (2, 1, 2, 'catalogue', 0, NULL, '', 'merge', 't'), (3, 2, 3, 'aas', 0, NULL, '', '', 't');
INSERT INTO operations VALUES (1, 'merge', 'NY-0001 + NY-0002', 'ann', 't');
INSERT INTO answers VALUES (1, 1, 'same', 'ann', 't1', NULL, NULL),
    (2, 2, 'same', 'ann', 't2', NULL, 1), (3, 3, 'cant_tell', 'bob', 't3', NULL, NULL);
INSERT INTO identities VALUES (1, 't'), (2, 't');
INSERT INTO anchors VALUES (1, 1, 0, 1), (2, 1, 1, 1), (3, 2, 2, 1);
INSERT INTO names VALUES (1, 1, 'Leo', 'ann', 't');
INSERT INTO checks VALUES (1, 2, 1, 'ann', 't');
"""


def test_a_version_2_store_is_upgraded_to_3_and_keeps_every_row(tmp_path):
    path = tmp_path / "v2.sqlite"
    with _raw(path) as c:
        c.executescript(_V2_SCHEMA + _V2_ROWS)
    with AnnotationStore.open(path) as s:
        assert [a["answer"] for a in s.answers()] == ["same", "same", "cant_tell"]
        assert s.constraints().must_link.tolist() == [[0, 1], [1, 2]]
        assert [p["priority"] for p in s.pairs()] == [0, 0, 0]
        s.add_pairs([[0, 3]], sampler="season", cycle=1, priority=5)
        assert s.next_pair()["i"] == 0 and s.next_pair()["j"] == 3  # asked first
        rec = s.apply_operation("new_individual", [[0, 3]], ["different"])
        assert rec["answers"] == 1
        s.undo()  # the edit goes back as a whole
        assert len(s.answers()) == 3
    with _raw(path) as c:
        assert c.execute("SELECT version FROM schema_version").fetchall() == [(3,)]
        assert c.execute("SELECT kind FROM operations ORDER BY id").fetchall() == [
            ("merge",),
            ("new_individual",),
        ]
        assert c.execute("SELECT name FROM names").fetchall() == [("Leo",)]
        assert c.execute("SELECT COUNT(*) FROM anchors").fetchall() == [(3,)]
        assert c.execute("PRAGMA foreign_key_check").fetchall() == []
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            c.execute("DELETE FROM operations")
        triggers = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
        for t in ("operations", "image_roots", "name_photos", "embeddings"):
            assert {f"{t}_never_changed", f"{t}_never_deleted"} <= triggers
    backup = tmp_path / "v2.sqlite.v2-backup"
    with _raw(backup) as c:
        assert c.execute("SELECT version FROM schema_version").fetchall() == [(2,)]


def test_a_version_2_store_from_before_new_seasons_gets_image_roots_on_opening(tmp_path):
    path = tmp_path / "v2.sqlite"
    with _raw(path) as c:  # as the first version 2 stores were written
        c.executescript(_V2_SCHEMA + _V2_ROWS)
        for t in ("image_roots_never_changed", "image_roots_never_deleted"):
            c.execute(f"DROP TRIGGER {t}")
        c.execute("DROP TABLE image_roots")
    with AnnotationStore.open(path) as s:
        assert s.image_roots() == {} and len(s.answers()) == 3
    with _raw(path) as c:
        names = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
        assert {"image_roots_never_changed", "image_roots_never_deleted"} <= names


def test_photos_are_recorded_by_content_once_and_re_mapped_with_their_history(store, tmp_path):
    from aas_core.annotate.store import FileDigest, file_digest

    folder = tmp_path / "photos"
    for k, p in enumerate(PATHS):
        (folder / p).parent.mkdir(parents=True, exist_ok=True)
        (folder / p).write_bytes(b"photo %d" % k * (k + 1))
    big = folder / "big.jpg"
    big.write_bytes(os.urandom(3 * (1 << 20) + 5))  # several chunks
    import hashlib

    assert file_digest(big).sha256 == hashlib.sha256(big.read_bytes()).hexdigest()
    assert file_digest(big).size == big.stat().st_size
    with pytest.raises(IsADirectoryError):
        file_digest(folder)
    assert store.files() == {}
    assert store.record_files({k: folder / p for k, p in enumerate(PATHS)}) == 8
    assert store.record_files({0: folder / PATHS[0]}) == 0  # the same content: nothing new
    with pytest.raises(ValueError, match="image 0 already has a recorded content"):
        store.record_files({0: folder / PATHS[1]})
    d = store.files()[3]
    assert d.size == 28 and d == file_digest(folder / PATHS[3])
    with pytest.raises(ValueError, match="no image 8"):
        store.record_files({8: folder / PATHS[0]})
    with pytest.raises(TypeError, match="FileDigest"):
        store.record_files({1: (1, "x", 0)})
    store.set_file_times({3: 42})
    assert store.files()[3] == FileDigest(d.size, d.sha256, 42)
    with _raw(store.path) as c, pytest.raises(sqlite3.IntegrityError, match="never change"):
        c.execute("UPDATE image_files SET sha256 = 'x' WHERE image = 3")
    # two photos that swapped names, and one moved into another folder
    assert store.relocate({0: PATHS[1], 1: PATHS[0], 2: "new/img2.jpg"}, mtimes={2: 7}) == 3
    assert store.image_paths()[:3] == [PATHS[1], PATHS[0], "new/img2.jpg"]
    moves = store.relocations()
    assert [(m["image"], m["old_path"], m["new_path"]) for m in moves] == [
        (0, PATHS[0], PATHS[1]),
        (1, PATHS[1], PATHS[0]),
        (2, PATHS[2], "new/img2.jpg"),
    ]
    assert store.files()[2].mtime_ns == 7
    with pytest.raises(ValueError, match="share one path"):
        store.relocate({3: PATHS[4]})
    with pytest.raises(ValueError, match="leaves the image folder"):
        store.relocate({3: "../x.jpg"})
    assert store.image_paths()[3] == PATHS[3] and len(store.relocations()) == 3
    # photos of another folder: the absolute path of the file, subfolders kept when they are
    other = tmp_path / "2025"
    (other / "cam1").mkdir(parents=True)
    (other / "cam1" / "a.jpg").write_bytes(b"new")
    (k,) = store.add_images(
        ["cam1/a.jpg"], root=other, tag="2025", files=[file_digest(other / "cam1/a.jpg")]
    )
    assert store.files()[k].size == 3
    with pytest.raises(ValueError, match="absolute path"):
        store.relocate({k: "cam1/a.jpg"})
    store.relocate({k: tmp_path / "moved" / "2025" / "cam1" / "a.jpg"})
    assert store.image_roots()[k] == (str(tmp_path / "moved" / "2025"), "cam1/a.jpg")
    store.relocate({k: tmp_path / "flat" / "b.jpg"})
    assert store.image_roots()[k] == (str(tmp_path / "flat"), "b.jpg")
    assert store.image_file(k, folder) == tmp_path / "flat" / "b.jpg"
    assert store.image_paths()[k] == "2025/cam1/a.jpg"  # the listed name stays
