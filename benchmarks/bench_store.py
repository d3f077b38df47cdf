"""Answer latency of ``aas annotate`` as the store fills up (issue 14).

A store with ``--pairs`` queued pairs over ``--images`` images (identities of
about 5 images, half the pairs inside an identity, so "same" answers build
must-link closures) is served by a real ``aas annotate`` process (waitress,
4 threads). ``--clients`` threads answer every pair through the HTTP API
(``POST /api/answer``, keep-alive connections), each its own share of the
queue, "same" or "different" as the identities say. Each request's latency
is recorded with the order in which it finished; one JSON line gives the
median and p99 per block of ``--block`` answers, the ratio of the last
block's p99 to the first's (target <= 1.5) and the count of answers
acknowledged and stored.

    python benchmarks/bench_store.py                       # 50,000 answers, 4 clients
    python benchmarks/bench_store.py --smoke               # 2,000 answers

``--part edits`` times the catalogue's edits instead (issue 23): a store of
``--images`` photos whose embedding puts nearly all of them in one identity
(a tight blob: an embedding that does not separate the animals); 10, 100 and
1,000 photos are split out of it, merged back, and the merge undone. For
each: the seconds of the edit itself and of the catalogue rebuilt after it
(what a server does before its next answer), the rows written (every table)
and how much the store file grows (checkpointed). ``--baseline`` adds the
edit as stored before (a split as k x (n - k) "different" answers), where it
takes under a few minutes.

    python benchmarks/bench_store.py --part edits           # 20,000 photos
    python benchmarks/bench_store.py --part edits --smoke   # 2,000 photos
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from _common import emit, header


def make_store(folder: Path, n_images: int, n_pairs: int, seed: int = 0):
    from aas_core.annotate import AnnotationStore

    rng = np.random.default_rng(seed)
    truth = rng.integers(0, max(1, n_images // 5), n_images)
    order = np.argsort(truth, kind="stable")
    inside = []
    for a, b in zip(order[:-1], order[1:]):
        if truth[a] == truth[b]:
            inside.append((min(a, b), max(a, b)))
    inside = np.array(inside[: n_pairs // 2], np.int64).reshape(-1, 2)
    pairs = {tuple(p) for p in inside.tolist()}
    while len(pairs) < n_pairs:
        i, j = sorted(rng.integers(0, n_images, 2).tolist())
        if i != j:
            pairs.add((i, j))
    pairs = np.array(sorted(pairs, key=lambda p: rng.random()), np.int64)
    store_path = folder / "bench.sqlite"
    images = folder / "images"
    images.mkdir()
    store = AnnotationStore.create(store_path, [f"img{k:06d}.jpg" for k in range(n_images)])
    store.add_pairs(pairs, sampler="bench", cycle=0)
    ids = {(int(p["i"]), int(p["j"])): p["pair_id"] for p in store.pairs()}
    store.close()
    jobs = [(ids[(int(i), int(j))], bool(truth[i] == truth[j])) for i, j in pairs]
    return store_path, images, jobs


def start_server(store_path: Path, images: Path):
    env = dict(os.environ)  # the same aas_core as this script (installed, or run.sh's tree)
    log = store_path.with_name("server.log")
    out = open(log, "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aas_core.cli",
            "annotate",
            "--store",
            str(store_path),
            "--images",
            str(images),
            "--port",
            "0",
            "--annotator",
            "bench",
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        m = re.search(r"on http://127\.0\.0\.1:(\d+)/ ", log.read_text())
        if m:
            return proc, int(m.group(1)), out
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"bench_store: the server did not start: {log.read_text()}")


def run_clients(port: int, jobs: list, clients: int):
    done = []  # (finish order, latency seconds)
    lock = threading.Lock()
    errors = []

    def client(share):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for pair_id, same in share:
            body = json.dumps({"pair_id": pair_id, "answer": "same" if same else "different"})
            t0 = time.perf_counter()
            conn.request("POST", "/api/answer", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            dt = time.perf_counter() - t0
            if resp.status != 200:
                errors.append(resp.status)
            with lock:
                done.append(dt)
        conn.close()

    threads = [threading.Thread(target=client, args=(jobs[k::clients],)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return np.array(done), time.perf_counter() - t0, errors


def _rows(path) -> int:
    import sqlite3

    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return sum(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables)


def _size(path) -> int:
    """The store's size with its write-ahead log folded in."""
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return os.path.getsize(path)


def bench_edits(n_images: int, sizes, baseline: bool):
    from aas_core.annotate import AnnotationStore
    from aas_core.catalogue import build_catalogue
    from aas_core.loop import cluster_features

    rng = np.random.default_rng(0)
    d = 32
    # one identity of nearly every photo, and one of each size merged into it
    group = np.zeros(n_images, np.int64)
    for g, k in enumerate(sizes, 1):
        group[-sum(sizes[g - 1 :]) :][:k] = g
    X = (rng.normal(size=(n_images, d)) * 0.05 + np.eye(d)[group]).astype(np.float32)
    clusters = cluster_features(X, k1=20)
    results = []
    folder = Path(tempfile.mkdtemp(prefix="bench_edits_"))
    try:
        template = folder / "template.sqlite"
        with AnnotationStore.create(template, [f"img{k:06d}.jpg" for k in range(n_images)]) as s:
            build_catalogue(s, clusters)  # numbers and anchors recorded, as a server would
        for g, k in enumerate(sizes, 1):
            path = folder / f"k{k}.sqlite"
            shutil.copy(template, path)
            row = {"photos": k}
            with AnnotationStore.open(path) as store:
                cat = build_catalogue(store, clusters)
                big = cat.identity(cat.numbers[0])
                row["identity"] = len(big.images)
                out = big.images[:: max(1, len(big.images) // k)][:k]

                def step(name, edit, *args, row=row, path=path, store=store):
                    rows, size = _rows(path), _size(path)
                    t0 = time.perf_counter()
                    edit(*args)
                    t1 = time.perf_counter()
                    after = build_catalogue(store, clusters)
                    t2 = time.perf_counter()
                    row[name] = {
                        "edit_s": round(t1 - t0, 3),
                        "rebuild_s": round(t2 - t1, 3),
                        "rows": _rows(path) - rows,
                        "growth_bytes": _size(path) - size,
                    }
                    return after

                after = step("split", cat.split, big.number, out)
                stayed = np.setdiff1d(big.images, out)
                row["split_apart"] = bool(len(np.unique(after.numbers[out])) == 1) and bool(
                    not np.isin(after.numbers[stayed], after.numbers[out[0]]).any()
                )
                back = step("undo_split", store.undo)
                other = back.identity(back.numbers[np.flatnonzero(group == g)[0]])
                row["merged_identity"] = len(other.images)
                merged = step("merge", back.merge, other.number, big.number)
                row["merged_whole"] = bool(
                    len(merged.identity(big.number).images) == len(big.images) + len(other.images)
                )
                step("undo_merge", store.undo)
                row["progress"] = {
                    key: store.progress()[key] for key in ("answered", "edits", "undone")
                }
            if baseline and k * (len(big.images) - k) <= 2_000_000:
                stay = np.setdiff1d(big.images, out)
                pairs = np.stack(np.meshgrid(out, stay, indexing="ij"), -1).reshape(-1, 2)
                path2 = folder / f"base{k}.sqlite"
                shutil.copy(template, path2)
                with AnnotationStore.open(path2) as store:
                    rows, size = _rows(path2), _size(path2)
                    t0 = time.perf_counter()
                    store.apply_operation("split", pairs, ["different"] * len(pairs))
                    row["split_before"] = {
                        "edit_s": round(time.perf_counter() - t0, 3),
                        "rows": _rows(path2) - rows,
                        "growth_bytes": _size(path2) - size,
                    }
            results.append(row)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    out = header("store-edits", n_images, d, 0, 1)
    out.pop("k")
    out.update(images=n_images, edits=results)
    emit(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=("answers", "edits"), default="answers")
    p.add_argument("--baseline", action="store_true", help="with --part edits")
    p.add_argument("--pairs", type=int, default=50_000)
    p.add_argument("--images", type=int, default=20_000)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--block", type=int, default=10_000)
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args()
    if args.smoke:
        args.pairs, args.images, args.block = 2_000, 2_000, 500
    if args.part == "edits":
        sizes = (10, 100) if args.smoke else (10, 100, 1_000)
        return bench_edits(args.images, sizes, args.baseline)
    folder = Path(tempfile.mkdtemp(prefix="bench_store_"))
    proc = None
    try:
        store_path, images, jobs = make_store(folder, args.images, args.pairs)
        proc, port, log = start_server(store_path, images)
        lat, wall, errors = run_clients(port, jobs, args.clients)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        log.close()
        from aas_core.annotate import AnnotationStore

        with AnnotationStore.open(store_path) as store:
            prog = store.progress()
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        shutil.rmtree(folder, ignore_errors=True)
    blocks = []
    for start in range(0, len(lat), args.block):
        b = lat[start : start + args.block] * 1000
        blocks.append(
            {
                "answers": [start, start + len(b)],
                "median_ms": round(float(np.median(b)), 2),
                "p99_ms": round(float(np.percentile(b, 99)), 2),
            }
        )
    out = header("store", args.pairs, 0, 0, args.clients)
    for key in ("d", "k"):
        out.pop(key)
    out.update(
        images=args.images,
        clients=args.clients,
        answers_per_second=round(len(lat) / wall, 1),
        blocks=blocks,
        p99_last_over_first=round(blocks[-1]["p99_ms"] / blocks[0]["p99_ms"], 2),
        acknowledged=int(len(lat) - len(errors)),
        errors=len(errors),
        stored=prog["answered"],
        conflicts=prog["conflicts"],
    )
    emit(out)


if __name__ == "__main__":
    main()
