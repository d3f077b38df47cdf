"""Retrieval metrics (mAP, mINP, CMC) at n queries x n gallery items.

Input: make_reid_blobs(2n, d) split in two halves by row parity (queries,
gallery; identities shared), with two cameras assigned by row so that the
same-identity-same-camera removal runs. Ours: ``retrieval.evaluate`` (one
pass for all three metrics) and the three separate calls ``mean_ap`` +
``cmc`` + ``mean_inp`` (three passes). Reference: the protocol as fast-reid's
numpy ``eval_market1501`` runs it (the full n x n distance matrix, one
argsort of it, then a Python loop over queries), written here from its
description. Quality: our mAP, mINP and CMC against the reference (scores are
continuous, so the tie rule plays no part), and our per-query AP against
``sklearn.metrics.average_precision_score`` for 200 queries.

    python benchmarks/bench_metrics.py                 # n = 20000, d = 256
    python benchmarks/bench_metrics.py --n 5000 --no-ref
"""

from __future__ import annotations

import argparse

import numpy as np

from _common import Timer, emit, header, load_features, run_worker, worker_args

SCRIPT = "bench_metrics.py"
KS = (1, 3, 5, 10)


def _split(n, d):
    X, y = load_features(2 * n, d)
    cams = np.arange(2 * n) % 4 // 2  # 0 0 1 1 0 0 ...: each half sees both cameras
    return X[0::2], X[1::2], y[0::2], y[1::2], cams[0::2], cams[1::2]


def _reference(Q, G, q, g, qc, gc):
    """fast-reid-style evaluation: dense distances, full argsort, loop over queries."""
    dist = 2 - 2 * (Q @ G.T)  # squared Euclidean on unit rows
    order = np.argsort(dist, axis=1)
    matches = (g[order] == q[:, None]).astype(np.int32)
    aps, inps, cmcs = [], [], []
    for i in range(len(q)):
        keep = ~((g[order[i]] == q[i]) & (gc[order[i]] == qc[i]))
        hits = matches[i][keep]
        if not hits.any():
            continue
        cum = hits.cumsum()
        pos = np.flatnonzero(hits)
        aps.append(float(np.mean(cum[pos] / (pos + 1))))
        inps.append(cum[pos[-1]] / (pos[-1] + 1))
        cmcs.append(pos[0] + 1)
    cmcs = np.asarray(cmcs)
    return {
        "mean_ap": float(np.mean(aps)),
        "mean_inp": float(np.mean(inps)),
        "cmc": {k: float(np.mean(cmcs <= k)) for k in KS},
    }


def worker() -> None:
    a = worker_args()
    from aas_core.metrics import retrieval

    Q, G, q, g, qc, gc = _split(a.n, a.d)
    kw = dict(query_cameras=qc, gallery_cameras=gc)
    if a.worker == "ours":
        retrieval.evaluate(Q[:500], G, q[:500], g, query_cameras=qc[:500], gallery_cameras=gc)
        with Timer() as t:
            r = retrieval.evaluate(Q, G, q, g, ks=KS, **kw)
        out = {"mean_ap": r.mean_ap, "mean_inp": r.mean_inp, "cmc": r.cmc}
        # per-query AP against sklearn on 200 queries (outside the timing)
        from sklearn.metrics import average_precision_score

        Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
        Gn = G / np.linalg.norm(G, axis=1, keepdims=True)
        worst = 0.0
        for i in np.flatnonzero(r.n_matches > 0)[:200]:
            keep = ~((g == q[i]) & (gc == qc[i]))
            s = Gn[keep] @ Qn[i]
            ref = average_precision_score(g[keep] == q[i], s)
            worst = max(worst, abs(ref - r.ap[i]))
        out["max_abs_ap_diff_vs_sklearn_200q"] = worst
        out["queries_without_match"] = r.n_without_match
    elif a.worker == "ours_separate":
        with Timer() as t:
            out = {
                "mean_ap": retrieval.mean_ap(Q, G, q, g, **kw),
                "cmc": retrieval.cmc(Q, G, q, g, ks=KS, **kw),
                "mean_inp": retrieval.mean_inp(Q, G, q, g, **kw),
            }
    else:
        Qn = (Q / np.linalg.norm(Q, axis=1, keepdims=True)).astype(np.float32)
        Gn = (G / np.linalg.norm(G, axis=1, keepdims=True)).astype(np.float32)
        with Timer() as t:
            out = _reference(Qn, Gn, q, g, qc, gc)
    emit(t.report(**{k: v for k, v in out.items()}))


def _close(a, b):
    return bool(
        abs(a["mean_ap"] - b["mean_ap"]) < 1e-6
        and abs(a["mean_inp"] - b["mean_inp"]) < 1e-6
        and all(abs(a["cmc"][str(k)] - b["cmc"][str(k)]) < 1e-9 for k in KS)
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, nargs="+", default=[20000], help="queries = gallery items")
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--smoke", action="store_true", help="tiny sizes: check that it runs")
    p.add_argument("--no-ref", action="store_true", help="skip the reference implementation")
    args = p.parse_args()
    if args.smoke:
        args.n, args.d = [1500], 64
    for n in args.n:
        row = header("metrics", n, args.d, 0, args.threads)
        common = dict(n=n, d=args.d, k=0, threads=args.threads)
        row["ours"] = run_worker(SCRIPT, "ours", **common)
        row["ours_separate"] = run_worker(SCRIPT, "ours_separate", **common)
        if not args.no_ref:
            row["reference"] = run_worker(SCRIPT, "reference", **common)
            row["same_as_reference"] = _close(row["ours"], row["reference"])
        emit(row)


if __name__ == "__main__":
    import sys

    worker() if "--worker" in sys.argv else main()
