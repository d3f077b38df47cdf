"""The whole catalogue job, as a person meets it, with a simulated person over HTTP.

``aas catalogue PHOTOS --out RUN`` runs as a user would start it (a separate
process). A simulated person answers what the page asks (by the true
identities; "new individual" never, "can't tell" never) and every
``--every`` answers the benchmark reads the catalogue back over the API and
compares it with the truth:

- pairwise F1 of the whole catalogue (an unsorted photo is an identity of one);
- the precision of the verified photos (pairs of photos that answers join
  within an identity: 1.0 with a correct person);
- the status: photos wrongly grouped and merges still missing, each with its
  95% range, against the truth (wrongly grouped = photos of identities of two
  or more that are not the animal of their identity's reference photo; missing
  merges = identities minus the animals that are the majority of one), whether
  it said "unlikely to change" (``settled``) and whether it warned that the
  embedding does not separate the animals;
- with ``--learn N``: each retraining's held-out AUCs, whether it was kept, its
  seconds (the person waits for a retraining to finish, as one answering every
  few seconds would not notice it).

Modes:

    python benchmarks/bench_catalogue.py --data DIR [--embeddings X.npy] [--learn 200]
        DIR/manifest.csv (path,identity[,split]) and DIR/<path> images (the lion and
        dog-face development sets); the photos are embedded once (efficientnet-lite0)
        unless --embeddings gives them (from 'aas embed --images DIR/images')
    python benchmarks/bench_catalogue.py --blobs 2000 [--suite bursts]
        make_reid_blobs features (or a GENERATOR_SUITE member's) with placeholder photo
        files: the generator
    python benchmarks/bench_catalogue.py --n 1000
        generated photos (make_reid_images): time from photos to the first question
    python benchmarks/bench_catalogue.py --smoke
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from _common import emit, header


def _call(url, body=None):
    req = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers={} if body is None else {"Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(req, timeout=1800) as r:
        return r.status, (json.loads(r.read()) if r.status == 200 else None)


def _f1(export: Path) -> float:
    from aas_core.metrics.clustering import pairwise_f1

    rows = list(csv.DictReader((export / "catalogue.csv").read_text().splitlines()))
    truth = np.unique([r["image_path"].split("/")[0] for r in rows], return_inverse=True)[1]
    found = np.unique([r["identity"] for r in rows], return_inverse=True)[1]
    return round(float(pairwise_f1(truth, found)), 4)


def _aas(*args, log=None):
    cmd = [sys.executable, "-m", "aas_core.cli", "catalogue", *map(str, args)]
    if log is None:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return None
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _serve(args_list, log_path):
    """Starts ``aas catalogue ...`` serving on a free port; (process, url, seconds)."""
    t0 = time.perf_counter()
    log = open(log_path, "w")
    proc = _aas(*args_list, "--port", 0, log=log)
    while True:
        m = re.search(r"on (http://\S+)/ ", log_path.read_text())
        if m:
            return proc, m.group(1), time.perf_counter() - t0
        if proc.poll() is not None:
            raise SystemExit(f"bench_catalogue: the server failed:\n{log_path.read_text()}")
        time.sleep(0.05)


# ---- the person and the checkpoints ----------------------------------------------------


def _truth_of(cat, index_of, y):
    """(labels of every photo, checkpoint figures) from GET /api/catalogue?images=all."""
    n = len(y)
    labels = np.arange(n, dtype=np.int64) + 10**9  # photos of no identity listed: alone
    ref = {}
    verified_pairs = verified_true = 0
    for ident in cat["identities"]:
        members = [index_of(im) for im in ident["images"]]
        labels[members] = ident["number"]
        ref[ident["number"]] = ident["reference"]
        v = [index_of(im) for im in ident["images"] if im["verified"]]
        for a in range(len(v)):
            for b in range(a + 1, len(v)):
                verified_pairs += 1
                verified_true += y[v[a]] == y[v[b]]
    wrong = 0
    for ident in cat["identities"]:
        r = ident["reference"]
        wrong += sum(y[index_of(im)] != y[r] for im in ident["images"])
    majority = {}
    for lab in np.unique(labels):
        members = np.flatnonzero(labels == lab)
        majority.setdefault(int(np.bincount(y[members]).argmax()), 0)
        majority[int(np.bincount(y[members]).argmax())] += 1
    n_ids = len(np.unique(labels))
    return labels, {
        "identities": n_ids,
        "true_wrongly_grouped": int(wrong),
        "true_missing_merges": int(n_ids - len(majority)),
        "verified_pairs": int(verified_pairs),
        "verified_precision": None
        if not verified_pairs
        else round(verified_true / verified_pairs, 4),
    }


def _checkpoint(url, y, answers, started):
    from aas_core.metrics.clustering import pairwise_f1

    _, cat = _call(f"{url}/api/catalogue?images=10000")
    labels, out = _truth_of(cat, lambda im: im["index"], y)
    st = cat["status"]
    w, m = st["wrongly_grouped"], st["missing_merges"]

    def covers(est, truth):
        if est["estimate"] is None:
            return None
        return bool(est["low"] <= truth <= est["high"])

    out.update(
        answers=answers,
        seconds=round(time.perf_counter() - started, 1),
        f1=round(float(pairwise_f1(y, labels)), 4),
        wrongly_grouped=[w["estimate"], w["low"], w["high"]],
        missing_merges=[m["estimate"], m["low"], m["high"]],
        wrongly_grouped_covered=covers(w, out["true_wrongly_grouped"]),
        missing_merges_covered=covers(m, out["true_missing_merges"]),
        settled=st["settled"],
        warning=bool(st["warning"]),
        counts={k: st["counts"][k] for k in ("verified", "partly verified", "proposed", "single")},
    )
    progress = cat["progress"]
    if "learning" in progress:
        out["learning"] = progress["learning"]["attempts"]
    return out


def _answer_all(url, y, total, every, learn):
    """The simulated person; returns the checkpoints and the answer timings."""
    started = time.perf_counter()
    checkpoints = [_checkpoint(url, y, 0, started)]
    answered, answer_s, next_s = 0, [], []
    status, pair = _call(f"{url}/api/next")
    while answered < total and status == 200:
        same = y[pair["a"]["index"]] == y[pair["b"]["index"]]
        t = time.perf_counter()
        _, got = _call(
            f"{url}/api/answer",
            {"pair_id": pair["pair_id"], "answer": "same" if same else "different"},
        )
        answer_s.append(time.perf_counter() - t)
        answered += 1
        if learn:  # a person answering every few seconds never waits for a retraining
            progress = got["progress"]
            while progress.get("learning", {}).get("running"):
                time.sleep(0.5)
                progress = _call(f"{url}/api/progress")[1]
        if answered % every == 0:
            checkpoints.append(_checkpoint(url, y, answered, started))
            emit({"bench": "catalogue", "part": "checkpoint", **checkpoints[-1]})
        t = time.perf_counter()
        status, pair = _call(f"{url}/api/next")
        next_s.append(time.perf_counter() - t)
    return checkpoints, answer_s, next_s


def _summary(checkpoints):
    later = checkpoints[1:]
    cov_w = [c["wrongly_grouped_covered"] for c in later]
    cov_m = [c["missing_merges_covered"] for c in later]

    def share(v):
        known = [x for x in v if x is not None]
        return None if not known else round(sum(known) / len(known), 3)

    f1 = [c["f1"] for c in checkpoints]
    precisions = [c["verified_precision"] for c in later if c["verified_precision"] is not None]
    return {
        "f1": f1,
        "f1_never_below_start": bool(min(f1) >= f1[0] - 1e-9),
        "verified_precision_min": None if not precisions else min(precisions),
        "wrongly_grouped_coverage": share(cov_w),
        "missing_merges_coverage": share(cov_m),
        "unknown_checkpoints": sum(x is None for x in cov_w + cov_m),
        "settled_while_f1_below_0.9": sum(c["settled"] and c["f1"] < 0.9 for c in later),
        "warned_at": next((c["answers"] for c in later if c["warning"]), None),
    }


def _manifest(data: Path):
    rows = list(csv.DictReader((data / "manifest.csv").read_text().splitlines()))
    if not rows or "path" not in rows[0] or "identity" not in rows[0]:
        raise SystemExit(f"bench_catalogue: {data}/manifest.csv needs path,identity columns")
    return rows


def run_data(args):
    """--data DIR or --blobs N: the simulated person over HTTP, with checkpoints."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.blobs:
            import aas_core as aas

            if args.suite:  # a GENERATOR_SUITE member of that many points
                X, y = aas.datasets.make_suite_member(args.suite, n=args.blobs, seed=args.seed)[:2]
            else:
                X, y = aas.datasets.make_reid_blobs(args.blobs, d=args.d, seed=args.seed)
            photos = tmp / "photos"
            paths = [f"cam{k % 4}/{k:05d}.jpg" for k in range(len(X))]
            for k, p in enumerate(paths):
                (photos / p).parent.mkdir(parents=True, exist_ok=True)
                (photos / p).write_bytes(b"placeholder %d" % k)
            emb = tmp / "X.npy"
            np.save(emb, X)
            with open(tmp / "X.rows.csv", "w", newline="") as f:
                csv.writer(f).writerows([["index", "path"], *enumerate(paths)])
            name = f"make_reid_blobs({args.blobs}, d={args.d}, seed={args.seed})"
            if args.suite:
                name = f"make_suite_member({args.suite!r}, n={args.blobs}, seed={args.seed})"
        else:
            rows = _manifest(args.data)
            # the photo folder: the common parent of the manifest's paths
            first = {Path(r["path"]).parts[0] for r in rows}
            photos = args.data / first.pop() if len(first) == 1 else args.data
            rel = {
                Path(r["path"]).relative_to(photos.relative_to(args.data)).as_posix(): r["identity"]
                for r in rows
            }
            emb = args.embeddings
            if emb is None:
                emb = tmp / "X.npy"
                t = time.perf_counter()
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "aas_core.cli",
                        "embed",
                        "--images",
                        str(photos),
                        "--out",
                        str(emb),
                    ],
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
                emit({"bench": "catalogue", "part": "embed", "seconds": time.perf_counter() - t})
            listed = [
                r["path"]
                for r in csv.DictReader(Path(str(emb)[: -len(".npy")] + ".rows.csv").open())
            ]
            y = np.unique([rel[p] for p in listed], return_inverse=True)[1]
            name = str(args.data)
        run = tmp / "run" if args.keep is None else args.keep
        extra = ["--budget", args.budget]
        if args.learn:
            extra += ["--learn", args.learn]
        if args.calibrate:
            extra += ["--calibrate", args.calibrate]
        if args.cache and (args.cache / "features.npz").is_file():
            run.mkdir()
            shutil.copy(args.cache / "features.npz", run / "features.npz")
        proc, url, t_listen = _serve(
            [photos, "--out", run, "--embeddings", emb, *extra], tmp / "server.log"
        )
        try:
            checkpoints, answer_s, next_s = _answer_all(
                url, y, args.answers, args.every, bool(args.learn)
            )
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        if args.cache and (run / "features.npz").is_file():
            args.cache.mkdir(parents=True, exist_ok=True)
            shutil.copy(run / "features.npz", args.cache / "features.npz")
        out = header("catalogue", len(y), 0, 30, os.cpu_count() or 1)
        out.update(
            {
                "part": "summary",
                "data": name,
                "photos": int(len(y)),
                "animals": int(len(np.unique(y))),
                "learn": args.learn,
                "calibrate": args.calibrate,
                "budget": args.budget,
                "listening_s": round(t_listen, 1),
                "answers": len(answer_s),
                "answer_ms_p50_p99": [
                    round(1000 * float(np.percentile(answer_s, q)), 1) for q in (50, 99)
                ]
                if answer_s
                else None,
                "next_pair_ms_p50_p99": [
                    round(1000 * float(np.percentile(next_s, q)), 1) for q in (50, 99)
                ]
                if next_s
                else None,
                **_summary(checkpoints),
                "retrainings": checkpoints[-1].get("learning"),
            }
        )
        emit(out)


def run_generated(args):
    """--n: time from generated photos to the first question, then answers over HTTP."""
    import aas_core as aas

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        aas.datasets.make_reid_images(tmp / "data", max(1, args.n // 5), 5, size=(128, 128), seed=0)
        photos, run = tmp / "data" / "images", tmp / "run"
        t0 = time.perf_counter()
        proc, url, t_listening = _serve([photos, "--out", run, "--budget", 50], tmp / "server.log")
        try:
            status, pair = _call(f"{url}/api/next")
            t_first = time.perf_counter() - t0
            answer_s, next_s, same = [], [], 0
            for _ in range(args.answers):
                if status != 200:
                    break
                a, b = pair["a"]["path"].split("/")[0], pair["b"]["path"].split("/")[0]
                same += a == b
                t = time.perf_counter()
                _call(
                    f"{url}/api/answer",
                    {"pair_id": pair["pair_id"], "answer": "same" if a == b else "different"},
                )
                answer_s.append(time.perf_counter() - t)
                t = time.perf_counter()
                status, pair = _call(f"{url}/api/next")
                next_s.append(time.perf_counter() - t)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        embed = re.search(r"cpu, ([0-9.]+) s", (tmp / "server.log").read_text())
        _aas(photos, "--out", run, "--export", tmp / "after")
        _aas(
            photos,
            "--out",
            tmp / "run0",
            "--embeddings",
            run / "embeddings.npy",
            "--export",
            tmp / "before",
        )
        out = header("catalogue", args.n, 1280, 30, os.cpu_count() or 1)
        out.update(
            {
                "photos_to_first_question_s": round(t_first, 2),
                "listening_s": round(t_listening, 2),
                "embed_s": float(embed.group(1)) if embed else None,
                "answers": len(answer_s),
                "same_answers": same,
                "answer_ms_p50_p99": [
                    round(1000 * float(np.percentile(answer_s, q)), 1) for q in (50, 99)
                ]
                if answer_s
                else None,
                "next_pair_ms_p50_p99_max": [
                    round(1000 * float(np.percentile(next_s, q)), 1) for q in (50, 99, 100)
                ]
                if next_s
                else None,
                "pairwise_f1_before_after": [_f1(tmp / "before"), _f1(tmp / "after")],
            }
        )
        emit(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="a folder with manifest.csv")
    ap.add_argument("--embeddings", type=Path, default=None, help="with --data: its X.npy")
    ap.add_argument("--blobs", type=int, default=0, help="make_reid_blobs(N) instead of photos")
    ap.add_argument("--d", type=int, default=256, help="with --blobs: dimensions")
    ap.add_argument(
        "--suite", default=None, help="with --blobs N: this GENERATOR_SUITE member instead"
    )
    ap.add_argument("--seed", type=int, default=0, help="with --blobs: the generator's seed")
    ap.add_argument("--learn", type=int, default=0, help="aas catalogue --learn N (0: off)")
    ap.add_argument("--calibrate", type=int, default=0, help="aas catalogue --calibrate C (0: off)")
    ap.add_argument("--cache", type=Path, default=None, help="keep the feature cache here")
    ap.add_argument("--every", type=int, default=100, help="answers between checkpoints")
    ap.add_argument("--keep", type=Path, default=None, help="the run folder to keep (new)")
    ap.add_argument("--budget", type=int, default=50, help="pairs per proposal round")
    ap.add_argument("--n", type=int, default=1000, help="generated photos (5 per individual)")
    ap.add_argument("--answers", type=int, default=None)
    ap.add_argument("--smoke", action="store_true", help="60 photos, 20 answers")
    args = ap.parse_args()
    if args.smoke:
        args.n, args.answers = 60, 20
    if args.data is not None or args.blobs:
        args.answers = 1000 if args.answers is None else args.answers
        return run_data(args)
    args.answers = 100 if args.answers is None else args.answers
    return run_generated(args)


if __name__ == "__main__":
    main()
