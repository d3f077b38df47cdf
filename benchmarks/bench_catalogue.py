"""The whole catalogue job on generated photos: time from photos to the first question.

``aas catalogue PHOTOS --out RUN`` runs as a user would start it (a separate process):
embed with the default backbone (efficientnet-lite0, CPU), cluster, create the store,
serve; the clock stops when GET /api/next first returns a pair. Then a simulated person
(ground truth from the folder names) answers ``--answers`` pairs over HTTP, timing each
answer and the next pair (new pairs are proposed in the background), and the catalogue's
pairwise F1 before and after is read back from ``--export``.

    python benchmarks/bench_catalogue.py --n 1000
    python benchmarks/bench_catalogue.py --smoke
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
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
    with urllib.request.urlopen(req, timeout=600) as r:
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="photos (5 per individual)")
    ap.add_argument("--answers", type=int, default=100)
    ap.add_argument("--smoke", action="store_true", help="60 photos, 20 answers")
    args = ap.parse_args()
    if args.smoke:
        args.n, args.answers = 60, 20
    import aas_core as aas

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        aas.datasets.make_reid_images(tmp / "data", max(1, args.n // 5), 5, size=(128, 128), seed=0)
        photos, run = tmp / "data" / "images", tmp / "run"
        log_path = tmp / "server.log"
        with open(log_path, "w") as log:
            t0 = time.perf_counter()
            proc = _aas(photos, "--out", run, "--port", "0", "--budget", 50, log=log)
            try:
                url = None
                while url is None:
                    m = re.search(r"on (http://\S+)/ ", log_path.read_text())
                    if m:
                        url = m.group(1)
                    elif proc.poll() is not None:
                        raise SystemExit(f"bench_catalogue: failed: {log_path.read_text()}")
                    else:
                        time.sleep(0.05)
                t_listening = time.perf_counter() - t0
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
        embed = re.search(r"cpu, ([0-9.]+) s", log_path.read_text())
        _aas(photos, "--out", run, "--export", tmp / "after")
        n_answers = len(answer_s)
        # the same job without the answers: a fresh run on the same embeddings
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
                "answers": n_answers,
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


if __name__ == "__main__":
    main()
