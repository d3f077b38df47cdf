"""NP3 constrained refinement at scale (target: 100k points, 10k answers, < 1 s).

Input: make_reid_blobs(n, d) features; labels of an imperfect clustering of
the true identities (seeded): 10% of the identities merged in pairs with a
look-alike (same group), 10% split in two, 10% of the points outliers (-1);
m answers from the ground truth, half on pairs inside a predicted cluster
(they find the wrong merges), half on pairs of look-alikes (same group) in
different predicted clusters (they find the splits). There is no reference
implementation (the paper's code is not public); the quality columns check
that every answer holds and that the refinement helps.

    python benchmarks/bench_np3.py                   # n = 100000, m = 10000, d = 2048
    python benchmarks/bench_np3.py --n 30000 --m 3000
"""

from __future__ import annotations

import argparse

import numpy as np

from _common import CACHE, Timer, emit, header, load_features, run_worker, worker_args

SCRIPT = "bench_np3.py"
SEED = 7


def _imperfect_labels(y, rng):
    """Labels with identities merged in look-alike pairs, split, and outliers."""
    n_ids = int(y.max()) + 1
    target = np.arange(n_ids)
    # merge identity 2k+1 into 2k (same look-alike group of 8) for 5% of k
    pairs = rng.permutation(n_ids // 2)[: round(0.05 * n_ids)]
    target[2 * pairs + 1] = 2 * pairs
    labels = target[y]
    # split 10% of the (unmerged) identities in two halves at random
    free = np.setdiff1d(np.arange(n_ids), np.concatenate([2 * pairs, 2 * pairs + 1]))
    split = rng.choice(free, size=round(0.1 * n_ids), replace=False)
    is_split = np.zeros(n_ids, bool)
    is_split[split] = True
    half = is_split[y] & (rng.random(len(y)) < 0.5)
    labels = np.where(half, n_ids + y, labels)
    out = np.full(len(y), -1, np.int64)
    keep = rng.random(len(y)) >= 0.1
    out[keep] = np.unique(labels[keep], return_inverse=True)[1]
    return out


def make_input(n: int, d: int, m: int):
    path = CACHE / f"np3_n{n}_d{d}_m{m}_s{SEED}.npz"
    if not path.exists():
        _, y = load_features(n, d)
        rng = np.random.default_rng(SEED)
        labels = _imperfect_labels(y, rng)
        pairs = _pairs(labels, y, m, rng)
        np.savez(path, labels=labels, pairs=pairs, same=y[pairs[:, 0]] == y[pairs[:, 1]])
    return path


def _pairs(labels, y, m, rng):
    """m distinct pairs: half inside predicted clusters, half between look-alikes."""
    n = len(labels)
    inside = labels >= 0
    order = np.argsort(labels, kind="stable")
    start = np.searchsorted(labels[order], labels)  # first member of each point's cluster
    size = np.bincount(labels[inside])
    groups = y // 8
    g_order = np.argsort(groups, kind="stable")
    g_start = np.searchsorted(groups[g_order], groups)
    g_size = np.bincount(groups)
    out, seen = [], set()
    while len(out) < m:
        k = 4 * m
        i = rng.integers(0, n, k)
        within = np.arange(k) % 2 == 0
        j = np.empty(k, np.int64)
        ok = ~within | (inside[i] & (size[np.maximum(labels[i], 0)] > 1))
        cl_size = np.where(inside[i], size[np.maximum(labels[i], 0)], 1)
        j[within] = order[start[i[within]] + rng.integers(0, cl_size[within])]
        j[~within] = g_order[g_start[i[~within]] + rng.integers(0, g_size[groups[i[~within]]])]
        ok &= i != j
        ok &= within | (labels[i] != labels[j]) | (labels[i] < 0)
        for a, b in zip(i[ok].tolist(), j[ok].tolist()):
            key = (min(a, b), max(a, b))
            if key not in seen:
                seen.add(key)
                out.append(key)
                if len(out) == m:
                    break
    return np.array(out, np.int64)


def worker() -> None:
    a = worker_args({"--input": {"required": True}})
    import aas_core as aas
    from aas_core import _core
    from aas_core.metrics.clustering import pairwise_f1

    X, y = load_features(a.n, a.d)
    z = np.load(a.input)
    labels, c = z["labels"], aas.PairConstraints()
    c.add(z["pairs"], z["same"])
    aas.np3(labels, c, X, n_threads=a.threads)  # warm-up
    with Timer() as t:
        out = aas.np3(labels, c, X, n_threads=a.threads)
    with Timer() as core:  # the C++ call alone, on validated arrays
        _core.np3(labels, X, c.must_link, c.cannot_link, a.threads)
    ml, cl = c.must_link, c.cannot_link
    emit(
        t.report(
            core_seconds=round(core.seconds, 3),
            must_links=len(ml),
            cannot_links=len(cl),
            all_answers_hold=bool(
                np.all(out[ml[:, 0]] == out[ml[:, 1]]) and np.all(out[cl[:, 0]] != out[cl[:, 1]])
            ),
            clusters_before_after=[
                int(len(np.unique(labels[labels >= 0]))),
                int(len(np.unique(out[out >= 0]))),
            ],
            true_identities=int(len(np.unique(y))),
            pairwise_f1_before_after=[
                round(pairwise_f1(y, labels), 4),
                round(pairwise_f1(y, out), 4),
            ],
        )
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, nargs="+", default=[100000])
    p.add_argument("--m", type=int, default=None, help="answers (default n / 10)")
    p.add_argument("--d", type=int, default=2048)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--smoke", action="store_true", help="tiny sizes: check that it runs")
    args = p.parse_args()
    if args.smoke:
        args.n, args.d = [1500], 512
    for n in args.n:
        m = args.m or n // 10
        row = header("np3", n, args.d, 0, args.threads)
        row["answers"] = m
        row["ours"] = run_worker(
            SCRIPT, "ours", n=n, d=args.d, k=0, threads=args.threads, input=make_input(n, args.d, m)
        )
        emit(row)


if __name__ == "__main__":
    import sys

    worker() if "--worker" in sys.argv else main()
