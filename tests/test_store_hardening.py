"""The annotation store where things go wrong: a lock no one else can touch, a damaged
write-ahead log refused with its counts, read-only stores read as they are, a full disk named
(issue 23, points 2, 3 and 7)."""

import contextlib
import csv
import hashlib
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import aas_core
from aas_core.annotate import AnnotationStore, StoreFull, StoreLocked, StoreReadOnly
from aas_core.annotate.store import wal_scan
from aas_core.cli import main

ENV = dict(os.environ, PYTHONPATH=str(Path(aas_core.__file__).parents[1]))


def _child(code, *args, check=True, **env):
    """Runs ``code`` in another Python process (this aas_core), with extra environment."""
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        env=dict(ENV, **env),
        check=check,
        capture_output=True,
        text=True,
    )


def _digests(*paths):
    return [
        hashlib.sha256(Path(p).read_bytes()).hexdigest() if Path(p).exists() else None
        for p in paths
    ]


def _files(path):
    return [path, Path(f"{path}-wal"), Path(f"{path}-shm")]


@contextlib.contextmanager
def _read_only(path):
    """Makes a file or folder unwritable for this process: its permissions for a user, the
    immutable flag for root (whom permissions do not stop); skips where neither works."""
    path = Path(path)
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    done = (
        shutil.which("chattr")
        and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0
    )
    if not done:
        pytest.skip("root ignores permissions, and chattr +i cannot be set here")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def _store(path, n_images=8, pairs=((0, 1), (2, 3), (4, 5))):
    s = AnnotationStore.create(path, [f"img{k}.jpg" for k in range(n_images)])
    s.add_pairs(list(pairs), sampler="t", cycle=0)
    return s


# ---- 2. a lock no one else can touch -------------------------------------------------------


def test_a_symlink_at_the_old_temp_name_is_never_written_through(tmp_path, monkeypatch):
    shared = tmp_path / "shared-tmp"
    shared.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(shared))
    path = tmp_path / "run.sqlite"
    target = tmp_path / "precious.txt"
    target.write_text("precious")
    with _store(path) as s:
        st = os.stat(path)
        planted = shared / f"aas-annotate-{st.st_dev}-{st.st_ino}.lock"
        planted.symlink_to(target)
        s.lock()  # neither blocked by the planted name nor writing through it
        s.answer(1, "same")
    assert target.read_text() == "precious" and planted.is_symlink()
    assert sorted(p.name for p in shared.iterdir()) == [planted.name]


def test_a_symlink_at_the_lock_file_beside_the_store_is_refused_never_followed(tmp_path):
    path = tmp_path / "run.sqlite"
    target = tmp_path / "precious.txt"
    target.write_text("precious")
    side = tmp_path / "run.sqlite.lock"
    side.symlink_to(target)
    with _store(path) as s:
        with pytest.raises(ValueError, match="is a symbolic link, not the store's lock file"):
            s.lock()
        assert target.read_text() == "precious"
        side.unlink()
        side.symlink_to(tmp_path / "missing.txt")  # a dangling link is not created through
        with pytest.raises(ValueError, match="symbolic link"):
            s.lock()
        assert not (tmp_path / "missing.txt").exists()
        side.unlink()
        with AnnotationStore.open(path) as other:  # the refused tries left nothing held
            other.lock()


def test_the_lock_file_is_the_users_own_and_only_such_a_file_is_written(tmp_path):
    path = tmp_path / "run.sqlite"
    with _store(path) as s:
        s.lock()
        side = tmp_path / "run.sqlite.lock"
        assert side.stat().st_mode & 0o777 == 0o600
        assert side.read_text().startswith(f"pid {os.getpid()} since ")
    # a lock file that is another name of some file is locked but never truncated
    other = tmp_path / "other.txt"
    other.write_text("keep me")
    side.unlink()
    os.link(other, side)
    with AnnotationStore.open(path) as s:
        s.lock()
        assert other.read_text() == "keep me"
    side.unlink()
    os.mkfifo(side)  # a FIFO: refused at once, never waited on
    with AnnotationStore.open(path) as s:
        with pytest.raises(ValueError, match="not a regular file"):
            s.lock()


_HOLD = """
import sys, time
from aas_core.annotate import AnnotationStore
s = AnnotationStore.open(sys.argv[1]).lock()
print("locked", flush=True)
time.sleep(120)
"""


def test_a_hard_link_under_another_tmpdir_is_refused_and_a_killed_holder_releases(tmp_path):
    path = tmp_path / "run.sqlite"
    _store(path).close()
    (tmp_path / "elsewhere").mkdir()
    hard = tmp_path / "elsewhere" / "hard.sqlite"
    os.link(path, hard)
    for t in ("tmp-a", "tmp-b"):
        (tmp_path / t).mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path)],
        env=dict(ENV, TMPDIR=str(tmp_path / "tmp-a")),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        refused = _child(
            "import sys\n"
            "from aas_core.annotate import AnnotationStore, StoreLocked\n"
            "s = AnnotationStore.open(sys.argv[1])\n"
            "try:\n"
            "    s.lock()\n"
            "except StoreLocked as exc:\n"
            "    print(exc)\n",
            hard,
            TMPDIR=str(tmp_path / "tmp-b"),
        ).stdout
        assert (
            f"already in use by another aas annotate or aas catalogue server (pid "
            f"{holder.pid}" in refused
        )
        with AnnotationStore.open(hard) as s:  # in this process too, by the other name
            with pytest.raises(StoreLocked, match=f"pid {holder.pid}"):
                s.lock()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    with AnnotationStore.open(hard) as s:  # the operating system dropped the dead one's lock
        s.lock()
        s.answer(1, "same")


def test_sqlite_reads_and_writes_while_the_store_file_is_locked(tmp_path):
    path = tmp_path / "run.sqlite"
    with _store(path) as s:
        s.lock()
        s.answer(1, "same")
        # another process writes (aas propose --store) and reads beside the server
        out = _child(
            "import sys\n"
            "from aas_core.annotate import AnnotationStore\n"
            "with AnnotationStore.open(sys.argv[1]) as o:\n"
            "    o.add_pairs([[6, 7]], sampler='t', cycle=1)\n"
            "    o.answer(2, 'different')\n"
            "    print(o.progress()['answered'])\n",
            path,
        ).stdout
        assert out.strip() == "2"
        assert s.progress()["answered"] == 2 and len(s.pairs()) == 4
        s.answer(4, "same")
        with AnnotationStore.open(path) as reader:
            assert reader.progress()["answered"] == 3


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux's /proc/locks")
def test_closing_one_store_keeps_the_sqlite_locks_of_another_on_the_same_file(tmp_path):
    # Closing any descriptor of a file drops all of the process's fcntl locks on it; the
    # shared lock of a WAL connection is what keeps another process from deleting the log.
    path = tmp_path / "run.sqlite"
    a = _store(path)
    a.answer(1, "same")
    st = os.stat(path)
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"

    def posix_locks():
        return [
            line
            for line in Path("/proc/locks").read_text().splitlines()
            if " POSIX " in line and where in line and f" {os.getpid()} " in line
        ]

    assert posix_locks()
    b = AnnotationStore.open(path)
    b.lock()
    b.close()
    assert posix_locks(), "closing the other store dropped this one's SQLite lock"
    a.close()


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_stores_closed_or_dropped_give_back_their_locks_and_descriptors(tmp_path):
    import gc

    path = tmp_path / "run.sqlite"
    _store(path).close()
    baseline = len(os.listdir("/proc/self/fd"))
    kept = AnnotationStore.open(path)  # open all along: descriptors wait for it
    for _ in range(5):
        AnnotationStore.open(path).close()
    dropped = AnnotationStore.open(path).lock()
    del dropped  # never closed: collected, it lets go of the lock at once
    gc.collect()
    with AnnotationStore.open(path) as s:
        s.lock()
    kept.close()
    assert len(os.listdir("/proc/self/fd")) == baseline


# ---- 3. a write-ahead log checked frame by frame -------------------------------------------

_CRASH = """
import os, signal, sys
from aas_core.annotate import AnnotationStore
path, n = sys.argv[1], int(sys.argv[2])
s = AnnotationStore.create(path, [f'img{k}.jpg' for k in range(300)])
s.add_pairs([[k, k + 1] for k in range(200)], sampler='aas', cycle=0)
s.close()
s = AnnotationStore.open(path)
for pid in range(1, n + 1):
    s.answer(pid, 'same')
if len(sys.argv) > 3:  # a checkpoint, then more answers: the log restarts over old frames
    import sqlite3
    c = sqlite3.connect(path)
    assert c.execute('PRAGMA wal_checkpoint').fetchone()[0] == 0
    c.close()
    for pid in range(n + 1, n + 1 + int(sys.argv[3])):
        s.answer(pid, 'same')
os.kill(os.getpid(), signal.SIGKILL)  # before any checkpoint: the answers are in the -wal
"""


def _crashed(path, n=120, more=None):
    args = [path, n] + ([more] if more is not None else [])
    r = _child(_CRASH, *args, check=False)
    assert r.returncode == -signal.SIGKILL, r.stderr
    return Path(f"{path}-wal")


@pytest.fixture(scope="module")
def crashed(tmp_path_factory):
    """A store whose 120 acknowledged answers sit in its -wal, as after kill -9."""
    path = tmp_path_factory.mktemp("crashed") / "run.sqlite"
    wal = _crashed(path)
    scan = wal_scan(wal)
    assert scan.valid == scan.committed == scan.frames > 200 and not scan.damage
    return path


def _copy(crashed, tmp_path):
    for f in _files(crashed):
        if f.exists():
            shutil.copy2(f, tmp_path / f.name)
    return tmp_path / crashed.name


def _answers(path):
    with AnnotationStore.open(path) as s:
        return [a["pair_id"] for a in s.answers()]


def _refused(path, match, *, readonly=(False, True)):
    """Both ways of opening refuse, with ``match``, and change no byte of the files."""
    before = _digests(*_files(path))
    for ro in readonly:
        with pytest.raises(ValueError, match=match) as e:
            AnnotationStore.open(path, readonly=ro)
        assert _digests(*_files(path)) == before
    assert Path(f"{path}-wal").stat().st_size > 0
    return str(e.value)


def test_the_crashed_store_opens_with_all_120_answers(crashed, tmp_path):
    assert _answers(_copy(crashed, tmp_path)) == list(range(1, 121))


def test_a_wal_damaged_inside_a_middle_frame_is_refused_with_a_salvage_that_works(
    crashed, tmp_path
):
    path = _copy(crashed, tmp_path)
    wal = Path(f"{path}-wal")
    scan = wal_scan(wal)
    frame = 24 + scan.page_size
    with open(wal, "r+b") as f:  # the red team's damage: 64 bytes inside frame 81
        f.seek(32 + 80 * frame + 24 + 1000)
        f.write(b"\xa5" * 64)
    msg = _refused(path, r"write-ahead log .* is damaged: frame \d+ of \d+ ends a transaction")
    damaged = wal_scan(wal)
    assert damaged.valid == 80 and 0 < damaged.committed <= 80
    assert f"Of its {scan.frames} frames, SQLite would apply the first {damaged.committed}" in msg
    assert "nothing was changed" in msg
    # the salvage the message gives: keep copies, cut the log after its intact part
    cut = int(re.search(r"truncate -s (\d+) ", msg).group(1))
    assert cut == 32 + damaged.committed * frame
    assert f"cp {wal} {wal}.bak" in msg
    os.truncate(wal, cut)
    kept = _answers(path)
    assert 0 < len(kept) < 120 and kept == list(range(1, len(kept) + 1))


def test_a_wal_cut_in_half_is_refused(crashed, tmp_path):
    path = _copy(crashed, tmp_path)
    wal = Path(f"{path}-wal")
    size = wal.stat().st_size
    frame = 24 + wal_scan(wal).page_size
    half = size // 2
    if (half - 32) % frame == 0:
        half += 100  # never exactly at a frame's end: see the next test
    os.truncate(wal, half)
    _refused(path, r"is damaged: it ends \d+ bytes into frame \d+ .*cut short")


def test_a_wal_cut_at_a_frame_boundary_keeps_its_intact_commits(crashed, tmp_path):
    # Indistinguishable from a log whose later transactions never happened: SQLite applies
    # the commits before the cut, and so do we (nothing refused, nothing more lost).
    path = _copy(crashed, tmp_path)
    wal = Path(f"{path}-wal")
    frame = 24 + wal_scan(wal).page_size
    os.truncate(wal, 32 + 121 * frame)
    assert 0 < len(_answers(path)) < 120


def test_a_garbage_tail_on_the_wal_is_refused(crashed, tmp_path):
    path = _copy(crashed, tmp_path)
    wal = Path(f"{path}-wal")
    good = wal.read_bytes()
    scan = wal_scan(wal)
    rng = np.random.default_rng(3)
    wal.write_bytes(good + rng.bytes(1000))  # not a whole frame
    _refused(path, r"is damaged: it ends 1000 bytes into frame")
    # a whole frame of garbage that carries the log's salts and a commit mark
    fake = bytearray(rng.bytes(24 + scan.page_size))
    fake[0:4] = (7).to_bytes(4, "big")
    fake[4:8] = (99).to_bytes(4, "big")
    fake[8:16] = good[16:24]
    wal.write_bytes(good + bytes(fake))
    _refused(path, rf"is damaged: frame {scan.frames + 1} of {scan.frames + 1} ends a trans")
    # Whole frames of garbage with other salts cannot be told from the frames an earlier
    # generation of the log leaves behind (see the next test); SQLite ignores them, so
    # nothing committed is lost, and the store opens.
    fake[8:16] = rng.bytes(8)
    wal.write_bytes(good + bytes(fake))
    assert _answers(path) == list(range(1, 121))


def test_stale_frames_left_by_a_restarted_log_still_open(tmp_path):
    path = tmp_path / "run.sqlite"
    wal = _crashed(path, n=60, more=5)
    scan = wal_scan(wal)
    # the restarted log wrote over its first frames; the older ones after them stay
    assert scan.valid == scan.committed < scan.frames and not scan.damage
    assert _answers(path) == list(range(1, 66))


def test_a_bad_wal_header_keeps_its_message(crashed, tmp_path):
    path = _copy(crashed, tmp_path)
    wal = Path(f"{path}-wal")
    wal.write_bytes(wal.read_bytes()[:20])
    _refused(path, r"write-ahead log .* \(20 bytes\) is not valid \(its header is cut short")


# ---- 7. read-only stores open read-only; a full disk is named ------------------------------


def test_a_store_in_a_read_only_folder_opens_read_only(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "run.sqlite"
    with _store(path) as s:
        s.answer(1, "same")
        s.answer(2, "different")
    listed = sorted(folder.iterdir())
    before = _digests(path)
    with _read_only(folder):
        with pytest.raises(StoreReadOnly, match="is read-only .*folder .* cannot be written") as e:
            AnnotationStore.open(path)
        assert "corrupt" not in str(e.value) and "--status" in str(e.value)
        assert isinstance(e.value, ValueError)
        with AnnotationStore.open(path, readonly=True) as s:
            assert s.readonly
            assert [a["answer"] for a in s.answers()] == ["same", "different"]
            assert s.progress()["answered"] == 2 and len(s.constraints()) == 2
            with pytest.raises(StoreReadOnly, match=f"{re.escape(str(path))}.* read-only"):
                s.answer(3, "same")
            with pytest.raises(StoreReadOnly, match="opened read-only"):
                s.lock()
    assert sorted(folder.iterdir()) == listed and _digests(path) == before


def test_a_read_only_folder_with_the_latest_answers_in_the_wal(crashed, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = _copy(crashed, folder)
    with _read_only(folder):  # the -shm the crashed server left lets SQLite read the log
        with AnnotationStore.open(path, readonly=True) as s:
            assert len(s.answers()) == 120
    Path(f"{path}-shm").unlink()
    before = _digests(*_files(path))
    with _read_only(folder):  # without it, the answers in the log could not be read
        with pytest.raises(ValueError, match="holds .* committed frames .* copy the store"):
            AnnotationStore.open(path, readonly=True)
    assert _digests(*_files(path)) == before


def test_a_read_only_or_immutable_file_is_refused_for_writing_up_front(tmp_path):
    path = tmp_path / "run.sqlite"
    _store(path).close()
    with _read_only(path):
        with pytest.raises(StoreReadOnly, match="file cannot be written"):
            AnnotationStore.open(path)
        with AnnotationStore.open(path, readonly=True) as s:
            assert s.progress()["pairs"] == 3
    # a store that turns read-only under a server's start: refused before serving
    with AnnotationStore.open(path) as s:
        with _read_only(path):
            with pytest.raises(StoreReadOnly, match="cannot be written .*none was started"):
                s.lock()


def test_a_read_only_mount_or_folder_is_named_as_such(tmp_path, monkeypatch):
    # simulated, so that it runs anywhere (a read-only mount needs privileges, and root
    # ignores permissions): the checks see what such a mount or folder would show
    from aas_core.annotate import _disk

    path = tmp_path / "run.sqlite"
    _store(path).close()
    folder = str(tmp_path.resolve())
    with monkeypatch.context() as m:
        m.setattr(_disk, "_access", lambda p, mode: os.path.realpath(p) != folder)
        with pytest.raises(StoreReadOnly, match="its folder .* cannot be written"):
            AnnotationStore.open(path)
    real = os.statvfs

    class ReadOnlyMount:
        def __init__(self, st):
            self.f_flag = st.f_flag | os.ST_RDONLY

    with monkeypatch.context() as m:
        m.setattr(_disk.os, "statvfs", lambda p: ReadOnlyMount(real(p)))
        with pytest.raises(StoreReadOnly, match="on a read-only file system"):
            AnnotationStore.open(path)
        with AnnotationStore.open(path, readonly=True) as s:
            assert s.progress()["pairs"] == 3


def test_readonly_must_be_true_or_false(tmp_path):
    path = tmp_path / "run.sqlite"
    _store(path).close()
    with pytest.raises(TypeError, match="'readonly' must be True or False"):
        AnnotationStore.open(path, readonly="yes")


def test_an_older_store_is_not_upgraded_when_opened_read_only(tmp_path):
    path = tmp_path / "run.sqlite"
    _store(path).close()
    with sqlite3.connect(path) as c:
        c.execute("UPDATE schema_version SET version = 2")
    c.close()
    before = _digests(path)
    with pytest.raises(ValueError, match="schema version 2, which is upgraded .* for writing"):
        AnnotationStore.open(path, readonly=True)
    assert _digests(path) == before


def test_a_full_disk_is_named_and_nothing_of_that_answer_is_stored(tmp_path):
    path = tmp_path / "run.sqlite"
    n = 400
    s = _store(path, n_images=n, pairs=[(k, k + 1) for k in range(n - 1)])
    pages = s._conn.execute("PRAGMA page_count").fetchone()[0]
    s._conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full from here on
    given = []
    with pytest.raises(StoreFull) as e:
        for pid in range(1, n):
            s.answer(pid, "same", annotator="a" * 150)
            given.append(pid)
    msg = str(e.value)
    assert isinstance(e.value, OSError) and "corrupt" not in msg
    assert f"the disk holding {str(path)!r} is full" in msg
    assert "nothing of this change was stored" in msg
    failed = len(given) + 1
    assert [a["pair_id"] for a in s.answers()] == given  # every earlier answer is kept
    s._conn.execute(f"PRAGMA max_page_count = {pages + 1000}")  # space again
    s.answer(failed, "same")  # the store goes on, and the refused answer can be given
    s.close()
    assert _answers(path) == [*given, failed]


def test_a_write_that_sqlite_refuses_as_read_only_is_named_read_only(tmp_path):
    path = tmp_path / "run.sqlite"
    s = _store(path)
    rw = s._conn  # as if the file had turned read-only under the connection
    s._conn = sqlite3.connect(
        path.resolve().as_uri() + "?mode=ro",
        uri=True,
        check_same_thread=False,
        isolation_level=None,
    )
    with pytest.raises(StoreReadOnly, match="cannot be written .*nothing of this change"):
        s.answer(1, "same")
    s._conn.close()
    s._conn = rw
    s.close()
    assert _answers(path) == []


# ---- 9. the commands read a read-only store ------------------------------------------------


@pytest.fixture
def run_dir(tmp_path):
    """A catalogue run (aas catalogue --no-serve) with some answers."""
    X, y = aas_core.datasets.make_reid_blobs(60, d=16, seed=2)
    photos = tmp_path / "photos"
    photos.mkdir()
    paths = [f"{ident}_{k}.png" for k, ident in enumerate(y.tolist())]
    for k, p in enumerate(paths):
        (photos / p).write_bytes(b"\x89PNG photo %d" % k)
    np.save(tmp_path / "X.npy", X)
    with open(tmp_path / "X.rows.csv", "w", newline="") as f:
        csv.writer(f).writerows([["index", "path"], *[[k, p] for k, p in enumerate(paths)]])
    run = tmp_path / "run"
    argv = ["catalogue", photos, "--out", run, "--embeddings", tmp_path / "X.npy"]
    assert main([*map(str, argv), "--no-serve", "--k1", "8"]) == 0
    with AnnotationStore.open(run / "run.sqlite") as s:
        s.add_pairs([[i, i + 1] for i in range(0, 20, 2)], sampler="t", cycle=0)
        for p in s.pairs():
            s.answer(p["pair_id"], "same" if y[p["i"]] == y[p["j"]] else "different")
    return photos, run


def test_catalogue_status_export_and_refine_read_a_read_only_run(run_dir, tmp_path, capsys):
    photos, run = run_dir
    capsys.readouterr()
    listed = sorted(run.iterdir())
    before = _digests(*listed)
    with _read_only(run):
        assert main(["catalogue", str(photos), "--out", str(run), "--status", "--k1", "8"]) == 0
        assert "10 answers" in capsys.readouterr().out
        exp = tmp_path / "exp"
        argv = ["catalogue", str(photos), "--out", str(run), "--export", str(exp), "--k1", "8"]
        assert main(argv) == 0
        assert (exp / "catalogue.csv").is_file()
        out = tmp_path / "refined.csv"
        store = str(run / "run.sqlite")
        assert main(["refine", "--store", store, "--out", str(out), "--k1", "8"]) == 0
        assert out.is_file()
        # what writes says so in one line: read-only, not corrupt
        capsys.readouterr()
        argv = ["annotate", "--store", store, "--images", str(photos), "--no-serve"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "read-only" in err and "corrupt" not in err
    assert sorted(run.iterdir()) == listed and _digests(*listed) == before


def test_training_reads_a_read_only_catalogue_run(run_dir):
    # aas train --store RUN/run.sqlite only reads the catalogue's photos and answers
    import importlib.util

    from aas_core.cli.train import _catalogue_store

    photos, run = run_dir
    listed = sorted(run.iterdir())
    before = _digests(*listed)
    with _read_only(run):
        _catalogue_store(run / "run.sqlite")  # refuses nothing: the photos are all there
        if importlib.util.find_spec("torch") is not None:  # the training side needs PyTorch
            from aas_core.train._data import _store_photos

            assert len(_store_photos(run / "run.sqlite").paths) == 60
    assert sorted(run.iterdir()) == listed and _digests(*listed) == before
