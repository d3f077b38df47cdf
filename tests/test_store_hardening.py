"""The annotation store where things go wrong: a damaged write-ahead log refused with its
counts (issue 23, point 3)."""

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import aas_core
from aas_core.annotate import AnnotationStore
from aas_core.annotate.store import wal_scan

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


def _store(path, n_images=8, pairs=((0, 1), (2, 3), (4, 5))):
    s = AnnotationStore.create(path, [f"img{k}.jpg" for k in range(n_images)])
    s.add_pairs(list(pairs), sampler="t", cycle=0)
    return s


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


def _refused(path, match):
    """Opening refuses, with ``match``, and changes no byte of the files."""
    before = _digests(*_files(path))
    with pytest.raises(ValueError, match=match) as e:
        AnnotationStore.open(path)
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
